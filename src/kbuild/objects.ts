// Which built-in objects a patch affects. A changed .c file maps to its object through the
// Kbuild/Makefile that owns its directory, evaluated against the tree's .config (make.ts):
// obj-y, obj-m, composite objects such as `proc-y += cmdline.o`; its directory must itself be
// built, up to the root Kbuild. A .c file that other .c files #include maps to their objects. A changed header maps to the built-in objects whose sources
// depend on it: exactly, from the .cmd dependency files of a built tree, else from the
// #include lines of the sources (direct, or through a header of the same directory).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, posix } from "node:path";
import { UserError } from "../errors.js";
import { kernelModuleName } from "../modname.js";
import { runToolSync } from "../proc.js";
import { type Lookup, MakeEval } from "./make.js";
import type { KernelConfig } from "./tree.js";

/** BuildState says how a source or directory is built: into vmlinux, as a module, or not. */
export type BuildState = "y" | "m" | "n";

/** evalMakefile collects the variables a kbuild Makefile sets, under the tree's configuration. */
export function evalMakefile(text: string, config: KernelConfig, dir = ""): Map<string, string[]> {
  const ev = new MakeEval(kbuildLookup(config, dir)).evaluate(text);
  return new Map([...ev.vars].map(([k, v]) => [k, v.split(/\s+/).filter(Boolean)]));
}

/** kbuildLookup answers what kbuild and the configuration define for a Makefile of `dir`. */
function kbuildLookup(config: KernelConfig, dir: string, extra: Record<string, string> = {}): Lookup {
  const fixed: Record<string, string> = {
    SRCARCH: "x86",
    ARCH: "x86",
    SUBARCH: "x86",
    BITS: "64",
    srctree: ".",
    objtree: ".",
    src: dir || ".",
    obj: dir || ".",
    CC: "gcc",
    ...extra,
  };
  return (name) => (name.startsWith("CONFIG_") ? (config.get(name) ?? "") : fixed[name]);
}

const combine = (outer: BuildState, inner: BuildState): BuildState =>
  outer === "n" || inner === "n" ? "n" : outer === "m" || inner === "m" ? "m" : "y";

/** An object of a kbuild directory and how it is built. */
export interface SourceObject {
  object: string;
  state: BuildState;
}

/**
 * ObjectMap answers build-state questions about one tree. A directory is built when an
 * ancestor's Makefile lists it (obj-y += sub/, or the root's arch directories); an object when
 * the Makefile that owns its directory lists it, directly or as a member of a composite object
 * (`proc-y += cmdline.o`, `selinux-y += ss/services.o` from a parent directory). A .c file that
 * is no object of its own is built through the .c files that #include it.
 */
export class ObjectMap {
  private cache = new Map<string, MakeEval | null>();
  private includeIndex = new Map<string, Map<string, string[]>>();
  private ruleIndex?: Map<string, Array<{ dir: string; object: string }>>;
  constructor(
    readonly root: string,
    readonly config: KernelConfig,
  ) {}

  /** makefile evaluates the Kbuild or Makefile of a directory; null when it has none. */
  private makefile(dir: string): MakeEval | null {
    let v = this.cache.get(dir);
    if (v === undefined) {
      const kbuild = join(this.root, dir, "Kbuild");
      const mk = join(this.root, dir, "Makefile");
      const file = existsSync(kbuild) ? kbuild : existsSync(mk) ? mk : undefined;
      v = file
        ? new MakeEval(kbuildLookup(this.config, dir, dir === "" ? this.archLists() : {})).evaluate(
            readFileSync(file, "utf8"),
          )
        : null;
      this.cache.set(dir, v);
    }
    return v;
  }

  /** archLists evaluates arch/x86/Makefile for the directories the root Kbuild takes from it. */
  private archLists(): Record<string, string> {
    const arch = new MakeEval(
      kbuildLookup(this.config, "", { "core-y": "", "drivers-y": "", "libs-y": "lib/" }),
    );
    const file = join(this.root, "arch/x86/Makefile");
    if (existsSync(file)) arch.evaluate(readFileSync(file, "utf8"));
    const dirs = (k: string) =>
      arch
        .list(k)
        .filter((w) => w.endsWith("/"))
        .join(" ");
    return { ARCH_CORE: dirs("core-y"), ARCH_LIB: dirs("libs-y"), ARCH_DRIVERS: dirs("drivers-y") };
  }

  private lists(dir: string, key: string): string[] {
    return this.makefile(dir)?.list(key) ?? [];
  }

  /** dirState tells whether a directory (relative, no trailing slash) is built, and how. */
  dirState(dir: string): BuildState {
    if (dir === "" || dir === ".") return "y";
    // The nearest ancestor whose Makefile names the directory decides, under its own state.
    for (let up = parentOf(dir); ; up = parentOf(up)) {
      const rel = `${up ? dir.slice(up.length + 1) : dir}/`;
      const state: BuildState = this.lists(up, "obj-y").includes(rel)
        ? "y"
        : this.lists(up, "obj-m").includes(rel)
          ? "m"
          : "n";
      if (state !== "n") return combine(this.dirState(up), state);
      if (up === "") return "n";
    }
  }

  /** objectState tells how `dir/obj` (an object path relative to dir) is built. */
  objectState(dir: string, obj: string, depth = 0): BuildState {
    if (depth > 6) return "n";
    // Objects belong to the Makefile of their directory, or of the nearest ancestor with one.
    let owner = dir;
    let rel = obj;
    while (owner !== "" && this.makefile(owner) === null) {
      rel = `${basename(owner)}/${rel}`;
      owner = parentOf(owner);
    }
    const dirState = this.dirState(owner);
    if (dirState === "n") return "n";
    const has = (k: string) => this.lists(owner, k).includes(rel);
    let state: BuildState = "n";
    if (has("obj-y") || has("lib-y")) state = "y";
    else if (has("obj-m")) state = "m";
    else {
      for (const [k] of this.makefile(owner)?.vars ?? []) {
        const m = /^(.+)-(y|objs|m)$/.exec(k);
        if (!m || m[1] === "obj" || m[1] === "lib" || !has(k)) continue;
        const s = this.objectState(owner, `${m[1]}.o`, depth + 1);
        // Members listed as name-m belong to a module only.
        const member: BuildState = m[2] === "m" && s === "y" ? "n" : s;
        if (member === "y") {
          state = "y";
          break;
        }
        if (member === "m") state = "m";
      }
    }
    return combine(dirState, state);
  }

  /**
   * moduleOf names the loadable module an object built as =m ends up in: the object itself
   * (`obj-m += foo.o` makes foo.ko) or the composite that lists it (`overlay-objs := super.o`
   * makes overlay.ko). The name is the kernel's (dashes as underscores); undefined when no
   * module takes the object.
   */
  moduleOf(object: string, depth = 0): string | undefined {
    if (depth > 6) return undefined;
    let owner = parentOf(object);
    let rel = basename(object);
    while (owner !== "" && this.makefile(owner) === null) {
      rel = `${basename(owner)}/${rel}`;
      owner = parentOf(owner);
    }
    const has = (k: string) => this.lists(owner, k).includes(rel);
    if (has("obj-m")) return kernelModuleName(rel);
    for (const [k] of this.makefile(owner)?.vars ?? []) {
      const m = /^(.+)-(y|objs|m)$/.exec(k);
      if (!m || m[1] === "obj" || m[1] === "lib" || !has(k)) continue;
      const composite = `${owner ? `${owner}/` : ""}${m[1]}.o`;
      if (this.objectState(owner, `${m[1]}.o`) !== "m") continue;
      const mod = this.moduleOf(composite, depth + 1);
      if (mod) return mod;
    }
    return undefined;
  }

  /** sourceState tells how a .c file (relative path) is built, as an object of its own. */
  sourceState(path: string): BuildState {
    return this.objectState(parentOf(path), basename(path).replace(/\.c$/, ".o"));
  }

  /**
   * objectsOf lists the objects a changed .c file is compiled into: its own object, or, when it
   * is none, the objects of the .c files that #include it (kernel/sched/build_utility.c
   * includes cpufreq_schedutil.c), each with its build state.
   */
  objectsOf(path: string, seen = new Set<string>()): SourceObject[] {
    const own = this.sourceState(path);
    if (own !== "n") return [{ object: objectFor(path), state: own }];
    if (seen.has(path)) return [];
    seen.add(path);
    const out = new Map<string, BuildState>();
    for (const { dir, object } of this.ruleTargets(path)) {
      const st = this.objectState(dir, object);
      if (st !== "n") out.set(`${dir ? `${dir}/` : ""}${object}`, st);
    }
    for (const includer of this.includers(path))
      for (const o of this.objectsOf(includer, seen)) {
        const had = out.get(o.object);
        out.set(o.object, had === "y" || o.state === "y" ? "y" : o.state);
      }
    return [...out]
      .map(([object, state]) => ({ object, state }))
      .sort((a, b) => a.object.localeCompare(b.object));
  }

  /**
   * ruleTargets lists objects that a Makefile builds from `path` by a rule of its own
   * (`$(obj)/relo_core.o: $(srctree)/tools/lib/bpf/relo_core.c` in kernel/bpf/Makefile).
   */
  private ruleTargets(path: string): Array<{ dir: string; object: string }> {
    if (!this.ruleIndex) {
      this.ruleIndex = new Map();
      const lines = grepTree(
        this.root,
        ["Makefile", "Kbuild"],
        "^\\$\\(obj\\)/[^:]+\\.o\\s*:[^=]*\\.c\\b",
        ".",
      );
      for (const line of lines) {
        const m = /^\.\/(.+?)\/(?:Makefile|Kbuild):\d+:\$\(obj\)\/(\S+\.o)\s*:(.*)$/.exec(line);
        if (!m) continue;
        const [, dir, object, prereqs] = m;
        for (const p of prereqs.split(/\s+/).filter((w) => w.endsWith(".c"))) {
          const src = p.replace(/^\$\(srctree\)\//, "").replace(/^\$\(obj\)\//, `${dir}/`);
          const list = this.ruleIndex.get(posix.normalize(src)) ?? [];
          list.push({ dir, object });
          this.ruleIndex.set(posix.normalize(src), list);
        }
      }
    }
    return this.ruleIndex.get(path) ?? [];
  }

  /** includers lists the .c files of the tree that #include the .c file `path`. */
  private includers(path: string): string[] {
    // In the kernel a .c file is included from its own directory or an ancestor's
    // (kernel/sched/build_utility.c, arch/x86/mm/init_64.c), or, for scripts/dtc/libfdt, from
    // lib/; elsewhere only into boot code and the vDSO, which are not vmlinux. Those directories
    // are read one by one: a whole-tree grep takes half a minute on a cold page cache.
    const dirs: string[] = [];
    for (let d = parentOf(path); ; d = parentOf(d)) {
      dirs.push(d);
      if (d === "") break;
    }
    if (/^(scripts|tools)\//.test(path)) dirs.push("lib");
    return dirs.flatMap((d) => this.scanIncludes(d).get(path) ?? []);
  }

  /** scanIncludes indexes the `#include "x.c"` lines of the .c files of one directory. */
  private scanIncludes(dir: string): Map<string, string[]> {
    let index = this.includeIndex.get(dir);
    if (index) return index;
    index = new Map();
    this.includeIndex.set(dir, index);
    let names: string[];
    try {
      names = readdirSync(join(this.root, dir)).filter((n) => n.endsWith(".c"));
    } catch {
      return index;
    }
    for (const name of names) {
      const rel = dir ? `${dir}/${name}` : name;
      const text = readFileSync(join(this.root, rel), "latin1");
      if (!text.includes(".c")) continue;
      for (const m of text.matchAll(/^\s*#\s*include\s*["<]([^">]+\.c)[">]/gm)) {
        const target = posix.normalize(posix.join(dir, m[1]));
        const list = index.get(target) ?? [];
        list.push(rel);
        index.set(target, list);
      }
    }
    return index;
  }
}

/** grepTree returns the `path:line:text` lines of files named like `include` under `scope` matching an ERE. */
function grepTree(root: string, include: string[], pattern: string, scope: string): string[] {
  const skip = ["Documentation", "tools", "samples", "scripts", ".git", "debian"];
  const r = runToolSync(
    "grep",
    [
      "-rnE",
      ...include.map((i) => `--include=${i}`),
      ...skip.map((d) => `--exclude-dir=${d}`),
      pattern,
      scope,
    ],
    { cwd: root },
  );
  return r.stdout.split("\n");
}

function parentOf(dir: string): string {
  const d = posix.dirname(dir);
  return d === "." ? "" : d;
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

/** PickedObject is an object to build: part of vmlinux, or of the loadable module named. */
export interface PickedObject {
  object: string;
  module?: string;
}

/** pickObjects maps changed files to the objects to compile (built in or in modules), refusing what cannot be patched. */
export function pickObjects(root: string, config: KernelConfig, files: string[]): PickedObject[] {
  const map = new ObjectMap(root, config);
  const objects = new Map<string, string | undefined>();
  const add = (object: string, state: BuildState) => {
    if (state === "y") return void objects.set(object, undefined);
    const module = map.moduleOf(object);
    if (!module)
      throw new UserError(
        `${object} is built as a loadable module (=m in .config), but ksplice cannot tell which module from the Makefiles`,
        { code: "module_patch" },
      );
    objects.set(object, module);
  };
  const ignored: string[] = [];
  for (const f of files) {
    if (f.endsWith(".c")) {
      const objs = map.objectsOf(f).filter((o) => o.state !== "n");
      for (const o of objs) add(o.object, o.state);
      if (objs.length === 0) ignored.push(f);
    } else if (f.endsWith(".h")) {
      const deps =
        dependentsFromCmdFiles(root, f) ??
        sourcesIncluding(root, f)
          .filter((c) => map.sourceState(c) === "y")
          .map(objectFor);
      // A header's dependents are built-in objects (modules including it are not patched yet).
      for (const d of deps) if (!objects.has(d)) objects.set(d, undefined);
      if (deps.length === 0) ignored.push(f);
    } else if (/\.(S|s)$/.test(f)) {
      const st = map.sourceState(f.replace(/\.[Ss]$/, ".c"));
      if (
        map.objectState(dirname(f) === "." ? "" : dirname(f), basename(f).replace(/\.[Ss]$/, ".o")) !== "n" ||
        st !== "n"
      )
        throw new UserError(`${f} is an assembly file: changes to assembly code are not supported`, {
          code: "unsupported_change",
        });
      ignored.push(f);
    } else if (/(^|\/)(Makefile|Kbuild|Kconfig[^/]*)$/.test(f)) {
      throw new UserError(`${f} changes the build configuration: not supported in a live update`, {
        code: "unsupported_change",
      });
    } else ignored.push(f);
  }
  if (objects.size === 0)
    throw new UserError(
      `the patch changes nothing that is compiled into this kernel (${ignored.join(", ")})`,
      { code: "not_compiled" },
    );
  if (objects.size > 64)
    throw new UserError(
      `the patch affects ${objects.size} objects (a widely included header?): too many for one update`,
      { code: "unsupported_change" },
    );
  return [...objects]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([object, module]) => (module ? { object, module } : { object }));
}
