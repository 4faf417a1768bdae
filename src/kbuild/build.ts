// Builds single kernel objects in a private view of a prepared tree, so the tree itself is
// never written: an overlay mount (the tree as the read-only lower layer) when we can mount,
// else a full copy. Patches are applied with GNU patch inside that view. Everything is
// removed again on success, failure or abort.
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { UserError } from "../cli/errors.js";
import type { KernelTree } from "./tree.js";

/** Flags that give every function and data object its own section, for diffing and extraction. */
export const SECTION_FLAGS = "-ffunction-sections -fdata-sections";

/** The replacement for asm/jump_label.h in the diffed builds: a static branch reads its key. */
export const JUMP_LABEL_OVERRIDE = `/* SPDX-License-Identifier: GPL-2.0 */
/* ksplice: in replacement code a static branch reads its key instead of being a patched jump
 * site, so the code needs no __jump_table entries and follows the key when it changes. */
#ifndef _ASM_X86_JUMP_LABEL_H
#define _ASM_X86_JUMP_LABEL_H
#define HAVE_JUMP_LABEL_BATCH
#include <asm/asm.h>
#include <asm/nops.h>
#ifndef __ASSEMBLY__
#include <linux/stringify.h>
#include <linux/types.h>
#define __ksplice_key_enabled(key) (*(volatile int *)&(key)->enabled.counter > 0)
#define arch_static_branch(key, branch) (__ksplice_key_enabled(key) ^ (branch))
#define arch_static_branch_jump(key, branch) (__ksplice_key_enabled(key) ^ (branch))
extern int arch_jump_entry_size(struct jump_entry *entry);
#endif
#endif
`;

/** BuildView is a writable private view of a kernel tree. */
export class BuildView {
  private constructor(
    readonly tree: KernelTree,
    readonly base: string,
    readonly dir: string,
    private readonly mounted: boolean,
  ) {}

  /** open makes the view: an overlay when possible, else a copy (slower). */
  static open(tree: KernelTree, log: (s: string) => void): BuildView {
    const base = mkdtempSync(join(tmpdir(), "ksplice-build-"));
    const merged = join(base, "tree");
    for (const d of ["upper", "work", "tree"]) mkdirSync(join(base, d));
    const m = spawnSync(
      "mount",
      [
        "-t",
        "overlay",
        "overlay",
        "-o",
        `lowerdir=${tree.dir},upperdir=${base}/upper,workdir=${base}/work`,
        merged,
      ],
      { encoding: "utf8" },
    );
    if (m.status === 0) return new BuildView(tree, base, merged, true);
    log(`overlay mount failed (${(m.stderr || "").trim() || "not root?"}); copying the tree instead`);
    const cp = spawnSync("cp", ["-a", `${tree.dir}/.`, merged], { encoding: "utf8" });
    if (cp.status !== 0) {
      rmSync(base, { recursive: true, force: true });
      throw new Error(`copying ${tree.dir} to ${merged} failed: ${cp.stderr}`);
    }
    return new BuildView(tree, base, merged, false);
  }

  /** applyPatch applies a patch file with `patch -p1`, checking with --dry-run first. */
  applyPatch(file: string, name: string): void {
    const args = [
      "-p1",
      "--batch",
      "--forward",
      "--no-backup-if-mismatch",
      "-r",
      "-",
      "-d",
      this.dir,
      "-i",
      file,
    ];
    const dry = spawnSync("patch", ["--dry-run", ...args], { encoding: "utf8" });
    if (dry.status !== 0)
      throw new UserError(
        `patch ${name} does not apply to ${this.tree.dir}:\n${(dry.stdout + dry.stderr).trim()}`,
        { code: "patch_failed" },
      );
    const real = spawnSync("patch", args, { encoding: "utf8" });
    if (real.status !== 0)
      throw new UserError(`patch ${name} failed to apply:\n${(real.stdout + real.stderr).trim()}`, {
        code: "patch_failed",
      });
  }

  /** writeFile creates or replaces a file of the view (relative path), e.g. a header patches include. */
  writeFile(rel: string, text: string): void {
    mkdirSync(dirname(join(this.dir, rel)), { recursive: true });
    writeFileSync(join(this.dir, rel), text);
  }

  /** overrideJumpLabels installs JUMP_LABEL_OVERRIDE in the view (for the diffed builds only). */
  overrideJumpLabels(): void {
    this.writeFile("arch/x86/include/asm/jump_label.h", JUMP_LABEL_OVERRIDE);
  }

  /** make builds the given objects (relative paths) with extra KCFLAGS. */
  async make(objects: string[], kcflags: string, signal: AbortSignal, jobs = 2): Promise<void> {
    const args = [
      "-C",
      this.dir,
      `-j${jobs}`,
      ...this.tree.makeArgs,
      ...(kcflags ? [`KCFLAGS=${kcflags}`] : []),
      ...objects,
    ];
    const out = await run("make", args, signal);
    if (out.code !== 0) {
      const tail = out.output.split("\n").slice(-40).join("\n");
      throw new UserError(`building ${objects.join(" ")} failed (make exit ${out.code}):\n${tail}`, {
        code: "build_failed",
      });
    }
  }

  /** copyOut copies a built file from the view to dest. */
  copyOut(rel: string, dest: string): void {
    mkdirSync(dirname(dest), { recursive: true });
    copyFileSync(join(this.dir, rel), dest);
  }

  /** exists tells whether a file exists in the view. */
  exists(rel: string): boolean {
    return existsSync(join(this.dir, rel));
  }

  /** close unmounts and removes the view. */
  close(): void {
    if (this.mounted) {
      const u = spawnSync("umount", [this.dir]);
      if (u.status !== 0) spawnSync("umount", ["-l", this.dir]);
    }
    rmSync(this.base, { recursive: true, force: true });
  }
}

/** run executes a command, collecting its output; aborting kills it. */
function run(cmd: string, args: string[], signal: AbortSignal): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new UserError("interrupted", { code: "interrupted", exitCode: 130 }));
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
    let output = "";
    child.stdout.on("data", (d) => {
      output += d;
    });
    child.stderr.on("data", (d) => {
      output += d;
    });
    const onAbort = () => {
      try {
        if (child.pid) process.kill(-child.pid, "SIGTERM");
      } catch {}
    };
    signal.addEventListener("abort", onAbort, { once: true });
    child.on("error", reject);
    child.on("close", (code) => {
      signal.removeEventListener("abort", onAbort);
      if (signal.aborted) reject(new UserError("interrupted", { code: "interrupted", exitCode: 130 }));
      else resolve({ code: code ?? 1, output });
    });
  });
}
