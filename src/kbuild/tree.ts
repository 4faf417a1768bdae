// A prepared kernel source tree: checks that it is configured and prepared (as `ksplice lab
// prepare` leaves it), reads its config and release, and checks the compiler is the one the
// kernel was built with (CONFIG_CC_VERSION_TEXT). Nothing here writes to the tree.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../cli/errors.js";

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
  let actual: string;
  try {
    actual = execFileSync(cc, ["--version"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
      .split("\n")[0]
      .trim();
  } catch {
    throw new UserError(
      `the kernel was built with '${ccText}', but '${cc}' is not installed here (apt-get install ${cc})`,
      { code: "wrong_compiler" },
    );
  }
  if (actual !== ccText)
    throw new UserError(
      `compiler mismatch: the kernel was built with '${ccText}', but '${cc} --version' says '${actual}'. Code built with another compiler will not match the running kernel.`,
      { code: "wrong_compiler" },
    );
  return { dir, config, release, cc, makeArgs: [`CC=${cc}`, `KERNELRELEASE=${release}`] };
}
