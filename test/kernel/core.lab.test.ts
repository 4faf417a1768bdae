// The core module in Debian's real kernel (QEMU): builds kmod/ and the hand-written update
// module in fixtures/ksplice_testupd, then in one guest: apply/undo of a cmdline_proc_show
// replacement (relocations, hooks, one log line per state change), a changed EXPECTED
// (unexpected_code), a task asleep in pipe_read (code_busy naming it, then success once it is
// gone), 2,000 sleeping threads of which only the few that ran are unwound inside
// stop_machine (stack_checks), and non-root writers refused.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { buildCore, buildModule } from "../../src/kbuild/module.js";
import { Core, type CoreError } from "../../src/kernel/core.js";
import { guestKallsyms, guestPatch, labCoreHost } from "../../src/lab/host.js";
import { type LabVM, prepareLab, withLab } from "../../src/lab/index.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
const FIXTURE = join(REPO, "test", "kernel", "fixtures", "ksplice_testupd");
const MOD = "ksplice_testupd";
const TIMEOUT = 900_000;

/** kspliceLog returns the core's own kernel log lines (the loader's taint notices left out). */
async function kspliceLog(vm: LabVM): Promise<string[]> {
  const out = (await vm.exec("dmesg")).stdout;
  return out
    .split("\n")
    .map((l) => l.replace(/^\[[^\]]*\]\s*/, ""))
    .filter((l) => l.startsWith("ksplice: ") && !/taints kernel|verification failed/.test(l));
}

async function badKernelLog(vm: LabVM): Promise<string[]> {
  return (await vm.exec("dmesg")).stdout.split("\n").filter((l) => /WARNING|Oops|Call Trace|BUG:/.test(l));
}

test("core module: apply, undo, unexpected code, busy task, non-root", { timeout: TIMEOUT }, async () => {
  const paths = await prepareLab();
  const out = join(tmpdir(), "ksplice-kernel-test");
  mkdirSync(out, { recursive: true });
  const coreKo = await buildCore(paths.headersDir, out);
  const updKo = await buildModule(FIXTURE, MOD, paths.headersDir, out);
  const sleepers = join(out, "sleepers");
  execFileSync("gcc-12", [
    "-O2",
    "-static",
    "-pthread",
    "-o",
    sleepers,
    join(REPO, "bench", "fixtures", "sleepers.c"),
  ]);
  await withLab(
    async (vm) => {
      const core = new Core({ host: labCoreHost(vm) });
      assert.equal(await core.ensureLoaded(coreKo, { retries: 3, retry_interval_ms: 200 }), true);
      assert.equal(await core.ensureLoaded(coreKo), false);
      const ins = await vm.exec(["insmod", updKo]);
      assert.equal(ins.code, 0, ins.stderr);
      const ks = await guestKallsyms(vm);
      const original = (await vm.readFile("/proc/cmdline")).toString();

      // --- apply and undo of cmdline_proc_show ---
      const p = await guestPatch(vm, REPO, ks, "cmdline_proc_show", "ksplice_new_cmdline_show", MOD);
      assert.equal(p.site, p.fstart + 5n, "cmdline_proc_show starts with the ftrace nop");
      await core.newUpdate("t1", MOD);
      await core.reloc("t1", [
        {
          dest: ks.one("ksplice_cmdline_ptr", MOD),
          type: "R_X86_64_64",
          symbol: ks.one("saved_command_line"),
          addend: 0n,
        },
        {
          dest: ks.one("ksplice_pcrel_field", MOD),
          type: "R_X86_64_PC32",
          symbol: ks.one("saved_command_line"),
          addend: 0n,
        },
      ]);
      await core.patch("t1", [p]);
      await core.hook("t1", "pre_apply", ks.one("ksplice_pre_apply", MOD));
      await core.hook("t1", "post_apply", ks.one("ksplice_post_apply", MOD));
      await core.describe("t1", "cmdline test update");
      assert.deepEqual(await core.list(), ["t1"]);
      // A relocation outside the update module is refused, and nothing is written.
      await assert.rejects(
        core.reloc("t1", [{ dest: ks.one("_text"), type: "R_X86_64_64", symbol: 0n, addend: 0n }]),
        (e: CoreError) => e.code === "bad_command" && /outside module/.test(e.message),
      );
      // FSTART must be a symbol start: one byte in is refused.
      await assert.rejects(
        core.patch("t1", [{ ...p, fstart: p.fstart + 1n, site: p.fstart + 6n }]),
        /not the start of a symbol/,
      );

      const st = await core.apply("t1");
      assert.equal(st.stage, "applied");
      assert.equal(st.tries, 1);
      assert.ok(st.pauseNs > 0);
      assert.deepEqual(st.patches, [
        { name: "cmdline_proc_show", site: p.site, newAddr: p.newAddr, part: "vmlinux", live: true },
      ]);
      assert.deepEqual(st.parts, [{ module: "vmlinux", state: "live", names: [] }]);
      assert.equal(st.description, "cmdline test update");
      assert.equal((await vm.readFile("/proc/cmdline")).toString(), `ksplice-patched ${original}`);
      assert.equal((await vm.readFile(`/sys/module/${MOD}/parameters/hook_calls`)).toString().trim(), "101");
      // The PC32 relocation points at saved_command_line.
      const pcrel = BigInt.asUintN(
        64,
        BigInt((await vm.readFile(`/sys/module/${MOD}/parameters/pcrel_target`)).toString().trim()),
      );
      assert.equal(pcrel, ks.one("saved_command_line"));
      assert.notEqual(
        Number((await vm.readFile("/proc/sys/kernel/tainted")).toString()) & (1 << 15),
        0,
        "TAINT_LIVEPATCH",
      );
      // Applied: the core cannot be unloaded and the update cannot be deleted.
      assert.notEqual((await vm.exec("rmmod ksplice")).code, 0);
      await assert.rejects(core.remove("t1"), /applied; reverse it first/);
      // A second update patching the same site is refused: already_patched.
      await core.newUpdate("t9", MOD);
      await assert.rejects(core.patch("t9", [p]), (e: CoreError) => e.code === "already_patched");

      const back = await core.reverse("t1");
      assert.equal(back.stage, "reversed");
      assert.equal((await vm.readFile("/proc/cmdline")).toString(), original);
      assert.deepEqual(await kspliceLog(vm), [
        "ksplice: Update t1 applied successfully",
        "ksplice: Update t1 reversed successfully",
      ]);

      // --- the code at SITE is not what user space said: nothing is written ---
      await core.newUpdate("t2", MOD);
      await core.patch("t2", [{ ...p, expected: Uint8Array.from([0x90, 0x90, 0x90, 0x90, 0x90]) }]);
      await assert.rejects(core.apply("t2"), (e: CoreError) => e.code === "unexpected_code");
      assert.equal((await vm.readFile("/proc/cmdline")).toString(), original);
      await core.remove("t2");

      // --- a task asleep in pipe_read ---
      await vm.exec("setsid sh -c 'sleep 600 | cat' </dev/null >/dev/null 2>&1 &");
      let catPid = "";
      for (let i = 0; i < 50 && !catPid; i++) catPid = (await vm.exec("pidof cat")).stdout.trim();
      assert.match(catPid, /^\d+$/);
      for (
        let i = 0;
        i < 50 && !(await vm.exec(`cat /proc/${catPid}/stack`)).stdout.includes("pipe_read");
        i++
      );
      const pp = await guestPatch(vm, REPO, ks, "pipe_read", "ksplice_new_pipe_read", MOD);
      await core.newUpdate("t3", MOD);
      await core.patch("t3", [pp]);
      await assert.rejects(core.apply("t3"), (e: CoreError) => {
        assert.equal(e.code, "code_busy");
        assert.ok(
          e.conflicts.some((c) => new RegExp(`^cat ${catPid} pipe_read\\+0x[0-9a-f]+/0x[0-9a-f]+$`).test(c)),
          `conflicts: ${e.conflicts.join(" | ")}`,
        );
        return true;
      });
      const busy = await core.status("t3");
      assert.equal(busy.stage, "preparing");
      assert.equal(busy.tries, 3);
      await vm.exec(`kill ${catPid}; pkill sleep 2>/dev/null; kill $(pidof sleep) 2>/dev/null; true`);
      for (let i = 0; i < 50 && (await vm.exec("pidof cat")).code === 0; i++);
      // The replacement pipe_read is not a working pipe_read: apply and undo in one guest command,
      // with no pipe read in between (the agent reads the shell's output only after it exits).
      const both = await vm.exec(
        "echo applied > /sys/kernel/ksplice/t3/stage && echo reversed > /sys/kernel/ksplice/t3/stage",
      );
      assert.equal(both.code, 0, both.stderr);
      const done = await core.status("t3");
      assert.equal(done.stage, "reversed");
      assert.equal(done.abortCause, "none");
      assert.deepEqual((await kspliceLog(vm)).slice(-4), [
        "ksplice: Update t2 apply aborted: unexpected_code",
        "ksplice: Update t3 apply aborted: code_busy",
        "ksplice: Update t3 applied successfully",
        "ksplice: Update t3 reversed successfully",
      ]);

      // --- many sleeping tasks: the pause unwinds only those that ran since the walk ---
      const threads = 2000;
      await vm.exec(`${sleepers} ${threads} >/tmp/sleepers.out 2>&1 </dev/null &`);
      for (
        let i = 0;
        i < 300 && !(await vm.readFile("/tmp/sleepers.out").catch(() => "")).includes("ready");
        i++
      )
        await vm.exec("sleep 0.1");
      const tasks = Number((await vm.readFile("/proc/loadavg")).toString().split(" ")[3].split("/")[1]);
      assert.ok(tasks > threads, `tasks: ${tasks}`);
      await core.newUpdate("t4", MOD);
      await core.patch("t4", [p]);
      assert.equal((await core.apply("t4")).stage, "applied");
      const unwound = Number((await vm.readFile("/sys/kernel/ksplice/t4/stack_checks")).toString());
      assert.ok(unwound > 0 && unwound < 100, `${unwound} of ${tasks} tasks unwound inside stop_machine`);
      assert.equal((await vm.readFile("/proc/cmdline")).toString(), `ksplice-patched ${original}`);
      assert.equal((await core.reverse("t4")).stage, "reversed");
      assert.equal((await vm.readFile("/proc/cmdline")).toString(), original);
      await vm.exec("pkill sleepers; true");

      // --- non-root writers are refused by the file modes ---
      const js = `process.setgid(65534); process.setuid(65534);
const fs = require("fs");
for (const f of ["/sys/kernel/ksplice/control", "/sys/kernel/ksplice/t1/stage"]) {
  try { fs.writeFileSync(f, f.endsWith("control") ? "delete t1\\n" : "applied"); console.log("WROTE " + f); }
  catch (e) { console.log(e.code + " " + f); }
}`;
      const nr = await vm.exec(["node", "-e", js]);
      assert.equal(
        nr.stdout.trim(),
        "EACCES /sys/kernel/ksplice/control\nEACCES /sys/kernel/ksplice/t1/stage",
      );

      await core.remove("t1");
      await core.remove("t3");
      await core.remove("t4");
      await core.remove("t9");
      assert.deepEqual(await core.list(), []);
      assert.equal((await vm.exec(`rmmod ${MOD}`)).code, 0);
      assert.equal((await vm.exec("rmmod ksplice")).code, 0);
      assert.deepEqual(await badKernelLog(vm), []);
    },
    { paths, withPaths: [out] },
  );
});
