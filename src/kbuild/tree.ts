// Folder src/kbuild: the kernel source tree and its build: the prepared tree (here), patch
// parsing, the object map (which objects a change touches), builds in overlay views, module
// builds against headers. Imports only src/errors, src/files and src/proc: not the package,
// the running kernel or the lab.
//
// A prepared kernel source tree: checks that it is configured and prepared (as `ksplice lab
// prepare` leaves it), reads its config and release, and checks the compiler is the one the
// kernel was built with (CONFIG_CC_VERSION_TEXT). Nothing here writes to the tree but
// writeTreeInfo, which whoever prepares a tree calls to say where its kernel's headers and
// vmlinux are (TREE_INFO), so create needs no knowledge of how the tree was laid out.
import { existsSync, readFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { UserError } from "../errors.js";
import { writeFileAtomic } from "../files.js";
import { runToolSync } from "../proc.js";

/** KernelConfig maps CONFIG_ names to their values ("y", "m", a string or number). */
export type KernelConfig = Map<string, string>;

/** parseConfig reads a .config file's assignments (unset options are absent). */
export function parseConfig(text: string): KernelConfig {
  const cfg: KernelConfig = new Map();
  for (const line of text.split("\n")) {
    const m = /^(CONFIG_\w+)=(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2];
    if (v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1).replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    cfg.set(m[1], v);
  }
  return cfg;
}

/** KernelTree is a configured and prepared kernel source tree. */
export interface KernelTree {
  dir: string;
  config: KernelConfig;
  release: string;
  /** The compiler command named by CONFIG_CC_VERSION_TEXT (e.g. gcc-12). */
  cc: string;
  /** Arguments every make invocation in this tree needs. */
  makeArgs: string[];
  /** The kernel's headers for external modules and its vmlinux, when the tree says (TREE_INFO). */
  headersDir?: string;
  vmlinux?: string;
}

/** TREE_INFO is the file in a prepared tree naming its kernel's headers and vmlinux. */
export const TREE_INFO = ".ksplice-tree.json";

/** TreeInfo is TREE_INFO's content: paths absolute or relative to the tree. */
export interface TreeInfo {
  headersDir?: string;
  vmlinux?: string;
}

/** writeTreeInfo records where a prepared tree's headers and vmlinux are (unchanged files are not rewritten). */
export function writeTreeInfo(dir: string, info: TreeInfo): void {
  const path = join(dir, TREE_INFO);
  const text = `${JSON.stringify(info, null, 2)}\n`;
  if (existsSync(path) && readFileSync(path, "utf8") === text) return;
  writeFileAtomic(path, text);
}

function readTreeInfo(dir: string): TreeInfo {
  const path = join(dir, TREE_INFO);
  if (!existsSync(path)) return {};
  let info: unknown;
  try {
    info = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    info = (e as Error).message;
  }
  if (typeof info !== "object" || info === null)
    throw new UserError(`${path} is not a JSON object naming headersDir and vmlinux: fix or remove it`, {
      code: "bad_tree",
    });
  const abs = (key: keyof TreeInfo) => {
    const p = (info as TreeInfo)[key];
    if (typeof p !== "string") return undefined;
    const full = isAbsolute(p) ? p : resolve(dir, p);
    if (!existsSync(full))
      throw new UserError(
        `${path} names ${full} as the kernel's ${key === "vmlinux" ? "vmlinux" : "headers"}, but it is missing: run 'ksplice lab prepare' again (or fix ${TREE_INFO})`,
        { code: "bad_tree" },
      );
    return full;
  };
  return { headersDir: abs("headersDir"), vmlinux: abs("vmlinux") };
}

/** openTree validates a prepared tree; every problem is a UserError with code bad_tree or wrong_compiler. */
export function openTree(dir: string): KernelTree {
  const need = (rel: string, what: string) => {
    if (!existsSync(join(dir, rel)))
      throw new UserError(
        `${dir} is not a prepared kernel tree: ${rel} is missing (${what}). Run 'ksplice lab prepare' or 'make olddefconfig prepare' there first.`,
        { code: "bad_tree" },
      );
  };
  need("Makefile", "not a kernel source tree");
  need(".config", "the tree is not configured");
  need("include/generated/autoconf.h", "'make prepare' has not run");
  need("include/generated/utsrelease.h", "'make prepare' has not run");
  need("scripts/basic/fixdep", "'make prepare' has not run");
  const config = parseConfig(readFileSync(join(dir, ".config"), "utf8"));
  // Object builds use the tree's objtool as it is (kbuild/build.ts PREBUILT_TOOLS).
  if (config.get("CONFIG_OBJTOOL") === "y") need("tools/objtool/objtool", "'make prepare' has not run");
  // UTS_RELEASE is what compiled code embeds; prepare may have run with KERNELRELEASE=.
  const uts = /#define UTS_RELEASE "([^"]+)"/.exec(
    readFileSync(join(dir, "include/generated/utsrelease.h"), "utf8"),
  );
  if (!uts)
    throw new UserError(
      `${dir}/include/generated/utsrelease.h has no UTS_RELEASE: run 'make prepare' again`,
      { code: "bad_tree" },
    );
  const release = uts[1];
  const ccText = config.get("CONFIG_CC_VERSION_TEXT");
  if (!ccText)
    throw new UserError(
      `${dir}/.config has no CONFIG_CC_VERSION_TEXT: cannot tell which compiler built this kernel`,
      { code: "bad_tree" },
    );
  const cc = ccText.split(" ")[0];
  const version = runToolSync(cc, ["--version"]);
  if (version.code !== 0)
    throw new UserError(
      `the kernel was built with '${ccText}', but '${cc}' is not installed here (apt-get install ${cc})`,
      { code: "wrong_compiler" },
    );
  const actual = version.stdout.split("\n")[0].trim();
  if (actual !== ccText)
    throw new UserError(
      `compiler mismatch: the kernel was built with '${ccText}', but '${cc} --version' says '${actual}'. Code built with another compiler will not match the running kernel.`,
      { code: "wrong_compiler" },
    );
  const info = readTreeInfo(dir);
  // A tree the kernel was built in has its vmlinux at the top.
  const vmlinux = info.vmlinux ?? (existsSync(join(dir, "vmlinux")) ? join(dir, "vmlinux") : undefined);
  return {
    dir,
    config,
    release,
    cc,
    makeArgs: [`CC=${cc}`, `KERNELRELEASE=${release}`],
    ...(info.headersDir ? { headersDir: info.headersDir } : {}),
    ...(vmlinux ? { vmlinux } : {}),
  };
}
