// Which built-in objects a patch affects. A changed .c file maps to its object through the
// Kbuild/Makefile of its directory, evaluated against the tree's .config (obj-y, obj-m,
// composite objects such as `proc-y += cmdline.o`), and its directory must itself be built
// in, up to the root Kbuild. A changed header maps to the built-in objects whose sources
// depend on it: exactly, from the .cmd dependency files of a built tree, else from the
// #include lines of the sources (direct, or through a header of the same directory).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, posix } from "node:path";
import type { KernelConfig } from "./tree.js";

/** BuildState says how a source or directory is built: into vmlinux, as a module, or not. */
export type BuildState = "y" | "m" | "n";

type Vars = Map<string, string[]>;

/** evalMakefile collects the `name += words` assignments of a kbuild Makefile. */
export function evalMakefile(text: string, config: KernelConfig): Vars {
  const vars: Vars = new Map();
  const joined = text.replace(/\\\n/g, " ");
  for (const raw of joined.split("\n")) {
    const line = raw.replace(/#.*$/, "");
    const m = /^\s*([\w.$()/-]+)\s*(\+=|:=|\?=|=)\s*(.*)$/.exec(line);
    if (!m) continue;
    // Immediate expansion is enough for the lists kbuild Makefiles build (obj-y += $(mmu-y)).
    const expand = (s: string) =>
      s
        .replace(/\$\((CONFIG_\w+)\)/g, (_, c: string) => config.get(c) ?? "")
        .replace(/\$\((SRCARCH|ARCH)\)/g, "x86")
        .replace(/\$\(BITS\)/g, "64")
        .replace(/\$\(([\w-]+)\)/g, (all, v: string) => (vars.has(v) ? vars.get(v)!.join(" ") : all));
    const name = expand(m[1]);
    const words = expand(m[3]).split(/\s+/).filter(Boolean);
    if (m[2] === ":=" || m[2] === "=") vars.set(name, [...words]);
    else vars.set(name, [...(vars.get(name) ?? []), ...words]);
  }
  return vars;
}

/** ObjectMap answers build-state questions about one tree, caching parsed Makefiles. */
export class ObjectMap {
  private cache = new Map<string, Vars>();
  constructor(
    readonly root: string,
    readonly config: KernelConfig,
  ) {}

  private vars(dir: string): Vars {
    let v = this.cache.get(dir);
    if (!v) {
      const kbuild = join(this.root, dir, "Kbuild");
      const mk = join(this.root, dir, "Makefile");
      const file = existsSync(kbuild) ? kbuild : existsSync(mk) ? mk : undefined;
      v = file ? evalMakefile(readFileSync(file, "utf8"), this.config) : new Map();
      this.cache.set(dir, v);
    }
    return v;
  }

  /** dirState tells whether a directory (relative, no trailing slash) is descended into for vmlinux. */
  dirState(dir: string): BuildState {
    if (dir === "" || dir === ".") return "y";
    if (dir === "lib" || dir === "arch/x86/lib") return "y";
    const parent = posix.dirname(dir) === "." ? "" : posix.dirname(dir);
    const pv = this.vars(parent);
    const entry = `${basename(dir)}/`;
    const has = (k: string) => (pv.get(k) ?? []).includes(entry) || (pv.get(k) ?? []).includes(`${dir}/`);
    // The root Kbuild names arch/x86/ as a path, not as a child of arch/.
    const rootHas = (k: string) => (this.vars("").get(k) ?? []).includes(`${dir}/`);
    const state: BuildState =
      has("obj-y") || rootHas("obj-y") || has("core-y") || has("libs-y") ? "y" : has("obj-m") ? "m" : "n";
    if (state === "n" && parent.startsWith("arch/x86") === false && dir.startsWith("arch/x86/")) {
      // arch/x86/Makefile adds some directories through variables (core-y, libs-y).
      const arch = this.vars("arch/x86");
      if ((arch.get("core-y") ?? []).includes(`${dir}/`) || (arch.get("libs-y") ?? []).includes(`${dir}/`))
        return "y";
    }
    if (state === "n") return "n";
    if (rootHas("obj-y")) return "y";
    const up = this.dirState(parent);
    return up === "n" ? "n" : up === "m" || state === "m" ? "m" : "y";
  }

  /** objectState tells how `dir/name.o` is built, following composite objects. */
  objectState(dir: string, obj: string, depth = 0): BuildState {
    if (depth > 4) return "n";
    const v = this.vars(dir);
    const inList = (k: string) => (v.get(k) ?? []).includes(obj);
    let state: BuildState = "n";
    if (inList("obj-y") || inList("lib-y")) state = "y";
    else if (inList("obj-m")) state = "m";
    else {
      for (const [k, list] of v) {
        const m = /^(.+)-(y|objs)$/.exec(k);
        if (!m || !list.includes(obj) || m[1] === "obj" || m[1] === "lib") continue;
        const s = this.objectState(dir, `${m[1]}.o`, depth + 1);
        if (s === "y") {
          state = "y";
          break;
        }
        if (s === "m") state = "m";
      }
    }
    if (state === "n") return "n";
    const d = this.dirState(dir);
    if (d === "n") return "n";
    return d === "m" ? "m" : state;
  }

  /** sourceState tells how a .c file (relative path) is built. */
  sourceState(path: string): BuildState {
    const dir = dirname(path) === "." ? "" : dirname(path);
    return this.objectState(dir, basename(path).replace(/\.c$/, ".o"));
  }
}

/** objectFor maps `dir/file.c` to `dir/file.o`. */
export function objectFor(source: string): string {
  return source.replace(/\.c$/, ".o");
}

/** dependentsFromCmdFiles finds objects whose .cmd dependency lists name the header (built trees). */
export function dependentsFromCmdFiles(root: string, header: string): string[] | undefined {
  const out: string[] = [];
  let sawCmd = false;
  const walk = (dir: string) => {
    for (const name of readdirSync(join(root, dir))) {
      const rel = dir ? `${dir}/${name}` : name;
      if (name === ".git" || name === "Documentation" || name === "tools" || name === "scripts") continue;
      const st = statSync(join(root, rel));
      if (st.isDirectory()) walk(rel);
      else if (name.startsWith(".") && name.endsWith(".o.cmd")) {
        sawCmd = true;
        const text = readFileSync(join(root, rel), "utf8");
        if (
          text.includes(`${header} \\`) ||
          text.includes(`$(wildcard ${header})`) ||
          text.includes(`/${header} \\`)
        )
          out.push(`${dir ? `${dir}/` : ""}${name.slice(1, -4)}`);
      }
    }
  };
  walk("");
  return sawCmd && out.length > 0 ? out.sort() : undefined;
}

/** sourcesIncluding finds .c files that include a header directly or through a same-directory header. */
export function sourcesIncluding(root: string, header: string): string[] {
  const hdir = dirname(header);
  const hname = basename(header);
  // How the header is spelled in #include lines: <linux/x.h> for include/linux/x.h, "x.h" nearby.
  const spellings = new Set<string>([hname]);
  if (header.startsWith("include/")) spellings.add(header.slice("include/".length));
  const archInc = /^arch\/x86\/include\/(.+)$/.exec(header);
  if (archInc) spellings.add(archInc[1]);
  const includes = (text: string, names: Set<string>) => {
    for (const m of text.matchAll(/^\s*#\s*include\s*[<"]([^>"]+)[>"]/gm))
      if (names.has(m[1]) || names.has(basename(m[1]))) return true;
    return false;
  };
  // Headers of the same directory that include it widen the search by one level.
  const viaLocal = new Set<string>();
  if (!header.startsWith("include/")) {
    for (const n of readdirSync(join(root, hdir))) {
      if (
        n.endsWith(".h") &&
        n !== hname &&
        includes(readFileSync(join(root, hdir, n), "utf8"), new Set([hname]))
      )
        viaLocal.add(n);
    }
  }
  const names = new Set([...spellings, ...viaLocal]);
  const out: string[] = [];
  const searchDirs = header.startsWith("include/") || archInc ? [""] : [hdir];
  const walk = (dir: string) => {
    for (const name of readdirSync(join(root, dir))) {
      const rel = dir ? `${dir}/${name}` : name;
      if (["Documentation", "tools", "scripts", "samples", ".git", "usr", "debian"].includes(rel)) continue;
      if (rel.startsWith("arch/") && !rel.startsWith("arch/x86") && rel.split("/").length === 2) continue;
      const st = statSync(join(root, rel));
      if (st.isDirectory()) walk(rel);
      else if (name.endsWith(".c") && includes(readFileSync(join(root, rel), "utf8"), names)) out.push(rel);
    }
  };
  for (const d of searchDirs) walk(d);
  return out.sort();
}
