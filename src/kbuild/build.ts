// Builds single kernel objects in a private view of a prepared tree, so the tree itself is
// never written: an overlay mount (the tree as the read-only lower layer) when we can mount,
// else a full copy. Patches are applied with GNU patch inside that view. Everything is
// removed again on success, failure or abort.
//
// kbuild builds an object once (`make`); kbuild records the exact command it ran in the
// object's .cmd file, and later builds of the same object with extra flags run that command
// directly (`compile`), in this view or in a second view seeded with this one's outputs, so two
// builds can run at once and neither pays kbuild's start-up again.
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { UserError } from "../errors.js";
import { runTool, runToolSync } from "../proc.js";
import type { KernelTree } from "./tree.js";

/**
 * Flags of the builds that are diffed and extracted: every function and data object in its own
 * section. Debug information is left out there (a third of the compile time); -g does not
 * change the code gcc generates, and the pre build run-pre matches keeps the kernel's flags.
 */
export const SECTION_FLAGS = "-ffunction-sections -fdata-sections -g0";

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

/** Host tools `make prepare` built in the tree, which object builds in a view use as they are. */
export const PREBUILT_TOOLS = ["tools/objtool", "tools/bpf/resolve_btfids"];

/** BuildView is a writable private view of a kernel tree. */
export class BuildView {
  private constructor(
    readonly tree: KernelTree,
    readonly base: string,
    readonly dir: string,
    private readonly mounted: boolean,
  ) {}

  /**
   * open makes the view: an overlay when possible, else a copy (slower). A view made `from`
   * another starts with everything that one wrote (generated headers, objects, .cmd files).
   */
  static open(tree: KernelTree, log: (s: string) => void, from?: BuildView): BuildView {
    const base = mkdtempSync(join(tmpdir(), "ksplice-build-"));
    const merged = join(base, "tree");
    for (const d of ["upper", "work", "tree"]) mkdirSync(join(base, d));
    if (from?.mounted) {
      const cp = runToolSync("cp", ["-a", `${from.base}/upper/.`, `${base}/upper`]);
      if (cp.code !== 0) {
        rmSync(base, { recursive: true, force: true });
        throw new Error(`copying the build view ${from.base}/upper failed: ${cp.stderr}`);
      }
    }
    const m = runToolSync("mount", [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${tree.dir},upperdir=${base}/upper,workdir=${base}/work`,
      merged,
    ]);
    if (m.code === 0) return new BuildView(tree, base, merged, true);
    log(`overlay mount failed (${(m.stderr || "").trim() || "not root?"}); copying the tree instead`);
    const cp = runToolSync("cp", ["-a", `${from && !from.mounted ? from.dir : tree.dir}/.`, merged]);
    if (cp.code !== 0) {
      rmSync(base, { recursive: true, force: true });
      throw new Error(`copying ${tree.dir} to ${merged} failed: ${cp.stderr}`);
    }
    return new BuildView(tree, base, merged, false);
  }

  private patchArgs(file: string): string[] {
    return ["-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-r", "-", "-d", this.dir, "-i", file];
  }

  /** checkPatch refuses a patch that `patch -p1 --dry-run` cannot apply to the view. */
  checkPatch(file: string, name: string): void {
    const dry = runToolSync("patch", ["--dry-run", ...this.patchArgs(file)]);
    if (dry.code !== 0)
      throw new UserError(
        `patch ${name} does not apply to ${this.tree.dir}:\n${(dry.stdout + dry.stderr).trim()}`,
        { code: "patch_failed" },
      );
  }

  /** applyPatch applies a patch file with `patch -p1`, checking with --dry-run first. */
  applyPatch(file: string, name: string): void {
    this.checkPatch(file, name);
    const real = runToolSync("patch", this.patchArgs(file));
    if (real.code !== 0)
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
  async make(objects: string[], kcflags: string, signal: AbortSignal): Promise<void> {
    const args = [
      "-C",
      this.dir,
      // One job: kbuild reaches some directories twice (arch/x86/pci/ through arch/x86/Kbuild and
      // the root's ARCH_DRIVERS), and with -j2 two makes then build the same object at once.
      "-j1",
      // The host tools of the prepared tree are up to date, but their dependency files record the
      // tree's own absolute path, so in the view make would rebuild them (~3 s) before each object.
      ...PREBUILT_TOOLS.flatMap((t) => ["-o", t]),
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

  /**
   * recordedCommand returns the shell command kbuild last ran to build `object` in this view
   * (compiler, then objtool), from the object's .cmd file, in the form `sh -c` runs.
   */
  recordedCommand(object: string): string {
    const cmdFile = join(this.dir, dirname(object), `.${basename(object)}.cmd`);
    let text: string;
    try {
      text = readFileSync(cmdFile, "utf8");
    } catch {
      throw new Error(`kbuild left no command file ${cmdFile} for ${object}`);
    }
    const line = text
      .split("\n")
      .find((l) => l.startsWith(`cmd_${object} := `) || l.startsWith(`savedcmd_${object} := `));
    if (!line) throw new Error(`${cmdFile} records no command for ${object}`);
    // kbuild's make-cmd escaping: $ as $$ and # as $(pound).
    return line
      .slice(line.indexOf(" := ") + 4)
      .replaceAll("$(pound)", "#")
      .replaceAll("$$", "$");
  }

  /**
   * compile rebuilds objects with the command kbuild recorded for them (in this view or the view
   * this one was made from), with `flags` added to the compiler's; up to `jobs` at once.
   */
  async compile(objects: string[], flags: string, signal: AbortSignal, jobs = 2): Promise<void> {
    const cmds = objects.map((o) => {
      const cmd = this.recordedCommand(o);
      const at = cmd.indexOf(` -c -o ${o} `);
      if (at < 0)
        throw new Error(`the recorded command for ${o} does not compile it with -c -o: ${cmd.slice(0, 200)}`);
      return { o, cmd: `${cmd.slice(0, at)} ${flags}${cmd.slice(at)}` };
    });
    let next = 0;
    const failures: string[] = [];
    const worker = async () => {
      for (let i = next++; i < cmds.length; i = next++) {
        // -e: the command is "compiler ; objtool", and objtool must not run on a stale object.
        rmSync(join(this.dir, cmds[i].o), { force: true });
        const out = await run("sh", ["-ec", cmds[i].cmd], signal, this.dir);
        if (out.code !== 0) failures.push(`${cmds[i].o}:\n${out.output.split("\n").slice(-40).join("\n")}`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(jobs, cmds.length) }, worker));
    if (failures.length)
      throw new UserError(`building ${objects.join(" ")} failed:\n${failures.join("\n")}`, {
        code: "build_failed",
      });
  }

  /**
   * preprocess returns the preprocessed source of `object` (no line markers, __LINE__ as 0), from
   * the command kbuild recorded for it: what the compiler sees once comments and disabled #if
   * blocks are gone.
   */
  async preprocess(object: string, signal: AbortSignal): Promise<string> {
    const compiler = this.recordedCommand(object).split(" ; ")[0];
    const at = compiler.indexOf(` -c -o ${object} `);
    if (at < 0) throw new Error(`the recorded command for ${object} does not compile it with -c -o`);
    // __LINE__ as 0: lines that only moved (a longer comment above a WARN_ON) are no difference.
    // (-Wno-error: redefining __LINE__ warns, and CONFIG_WERROR trees make warnings errors.)
    const cmd = `${compiler.slice(0, at)} -E -P -D__LINE__=0 -Wno-error -o - ${compiler.slice(at + ` -c -o ${object} `.length)}`;
    const out = await run("sh", ["-ec", cmd.replace(/-Wp,-MMD,\S+/, "")], signal, this.dir, true);
    if (out.code !== 0) throw new Error(`preprocessing ${object} failed: ${out.output.slice(-2000)}`);
    return out.output;
  }

  /**
   * compileProbe compiles `object`'s source followed by `extra` (C), with the compiler command
   * kbuild recorded for the object, into dest: what the compiler makes of the same translation
   * unit with more definitions at its end (layout probes).
   */
  async compileProbe(object: string, extra: string, dest: string, signal: AbortSignal): Promise<void> {
    const compiler = this.recordedCommand(object).split(" ; ")[0];
    const marker = ` -c -o ${object} `;
    const at = compiler.indexOf(marker);
    if (at < 0) throw new Error(`the recorded command for ${object} does not compile it with -c -o`);
    const source = compiler.slice(at + marker.length).trim();
    const probe = `${dest}.c`;
    writeFileSync(probe, `#include "${join(this.dir, source)}"\n${extra}\n`);
    const cmd = `${compiler.slice(0, at)} -Wno-error -c -o ${dest} ${probe}`.replace(/-Wp,-MMD,\S+/, "");
    const out = await run("sh", ["-ec", cmd], signal, this.dir);
    if (out.code !== 0)
      throw new Error(`compiling a layout probe of ${object} failed: ${out.output.slice(-2000)}`);
  }

  /** read returns a text file of the view. */
  read(rel: string): string {
    return readFileSync(join(this.dir, rel), "utf8");
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
      const u = runToolSync("umount", [this.dir]);
      if (u.code !== 0) runToolSync("umount", ["-l", this.dir]);
    }
    rmSync(this.base, { recursive: true, force: true });
  }
}

/** run executes a command, collecting its output (stderr too, unless stdoutOnly); aborting kills it. */
async function run(
  cmd: string,
  args: string[],
  signal: AbortSignal,
  cwd?: string,
  stdoutOnly = false,
): Promise<{ code: number; output: string }> {
  let output = "";
  const r = await runTool(cmd, args, {
    signal,
    group: true,
    cwd,
    onOutput: stdoutOnly
      ? undefined
      : (d) => {
          output += d;
        },
  });
  return { code: r.code, output: stdoutOnly ? r.stdout : output };
}
