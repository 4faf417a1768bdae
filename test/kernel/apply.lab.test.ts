// Live updates of Debian's real kernel (QEMU): packages made by `ksplice create` from patches of
// our own are applied, viewed and undone with the `ksplice` command inside one running guest,
// and each behaviour is checked from user space before, after apply and after undo:
//   - /proc/version gains a line printed by a new helper function (examples/);
//   - uname(2) reports "+ks" (a system call);
//   - /proc/meminfo says KiB (a static helper inlined into its caller);
//   - /proc/cmdline gets prefixes from two updates stacked on one function reached through a
//     function pointer, undone in the right order (the wrong order is refused);
//   - /proc/sys/fs/pipe-max-size is raised by an apply hook and restored by a reverse hook
//     (a data change, with no function replaced), and the post_apply hook logs.
// Re-applying an applied update is refused; the kernel log has no warning, oops or trace.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { prepareLab, withLab } from "../../src/lab/index.js";
import { tempDir } from "../helpers/compile.js";
import { ok, sh } from "../helpers/guest.js";
import { updateMaker } from "../helpers/updates.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url));
const FIX = join(REPO, "test", "update", "fixtures");
const TIMEOUT = 30 * 60_000;

test("apply, view and undo live updates of the running Debian kernel", { timeout: TIMEOUT }, async () => {
  const lab = await prepareLab();
  const out = tempDir();
  const coreDir = join(tempDir(), "core");
  const make = updateMaker(lab, out, coreDir);
  const version = await make("version1", join(REPO, "examples", "proc-version-banner.patch"));
  const uname = await make("uname001", join(FIX, "uname-syscall.patch"));
  const meminfo = await make("meminfo1", join(FIX, "meminfo-inlined-helper.patch"));
  const a = await make("cmdlinea", join(FIX, "cmdline-a.patch"));
  const b = await make("cmdlineb", join(FIX, "cmdline-b.patch"), [join(FIX, "cmdline-a.patch")]);
  const hooks = await make("pipehook", join(FIX, "pipe-max-size-hooks.patch"));

  await withLab(
    async (vm) => {
      assert.equal(await ok(vm, "ksplice view"), "No updates applied.\n");
      const release = (await ok(vm, "uname -r")).trim();
      const cmdline = (await ok(vm, "cat /proc/cmdline")).trim();
      const memTotal = () => ok(vm, "grep MemTotal /proc/meminfo");
      assert.match(await memTotal(), / kB\n$/);
      assert.doesNotMatch(await ok(vm, "cat /proc/version"), /patched live/);

      // A new helper function and a /proc file.
      const applied = await ok(vm, `ksplice apply ${version}`);
      assert.match(applied, /^Update version1 applied: proc: say in \/proc\/version/);
      assert.match(applied, /version_proc_show \(fs\/proc\/version\.o\) at 0xffffffff[0-9a-f]+/);
      assert.match(
        await ok(vm, "cat /proc/version"),
        /^Linux version 6\.1\.0-50-cloud-amd64 .*\nksplice: this kernel was patched live\n$/,
      );
      const view = JSON.parse(await ok(vm, "ksplice view --json"));
      assert.deepEqual(
        view.updates.map((u: { id: string; functions: string[] }) => [u.id, u.functions]),
        [["version1", ["version_proc_show"]]],
      );
      assert.ok(view.updates[0].pauseNs > 0);
      const again = await sh(vm, `ksplice apply --raw-errors ${version}`);
      assert.equal(again.code, 1);
      assert.equal(again.err.split("\n")[0], "already_applied");
      assert.match(await ok(vm, "ksplice undo version1"), /^Update version1 reversed/);
      assert.doesNotMatch(await ok(vm, "cat /proc/version"), /patched live/);

      // A system call, and a static helper inlined into its caller, applied together.
      await ok(vm, `ksplice apply ${uname}`);
      await ok(vm, `ksplice-apply ${meminfo}`);
      assert.equal((await ok(vm, "uname -r")).trim(), `${release}+ks`);
      assert.match(await memTotal(), / KiB\n$/);
      assert.match(
        await ok(vm, "ksplice view"),
        /uname001: uname: append \+ks[^\n]*\n {2}applied [^\n]*__do_sys_newuname\nmeminfo1: /,
      );
      await ok(vm, "ksplice undo meminfo1");
      assert.match(await memTotal(), / kB\n$/);
      assert.equal((await ok(vm, "uname -r")).trim(), `${release}+ks`);
      await ok(vm, "ksplice-undo uname001");
      assert.equal((await ok(vm, "uname -r")).trim(), release);

      // Two updates stacked on one function reached through a pointer (seq_file's show).
      await ok(vm, `ksplice apply ${a}`);
      assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), `A ${cmdline}`);
      assert.match(
        await ok(vm, `ksplice apply ${b}`),
        /cmdline_proc_show \(fs\/proc\/cmdline\.o\) at 0x[0-9a-f]+, via ksplice_cmdlinea/,
      );
      assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), `B A ${cmdline}`);
      const wrong = await sh(vm, "ksplice undo --raw-errors cmdlinea");
      assert.equal(wrong.code, 1);
      assert.equal(wrong.err.split("\n")[0], "module_busy");
      assert.match(wrong.err, /cmdlineb stack on it; undo them first/);
      assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), `B A ${cmdline}`);
      await ok(vm, "ksplice undo cmdlineb");
      assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), `A ${cmdline}`);
      await ok(vm, "ksplice undo cmdlinea");
      assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), cmdline);

      // Hooks: a data change made at apply time and reverted at undo time.
      const maxSize = () => ok(vm, "cat /proc/sys/fs/pipe-max-size");
      assert.equal(await maxSize(), "1048576\n");
      await ok(vm, `ksplice apply ${hooks}`);
      assert.equal(await maxSize(), "2097152\n");
      assert.match(await ok(vm, "dmesg"), /pipe: pipe-max-size is now 2097152/);
      await ok(vm, "ksplice undo pipehook");
      assert.equal(await maxSize(), "1048576\n");

      assert.equal(await ok(vm, "ksplice view"), "No updates applied.\n");
      assert.deepEqual((await ok(vm, "cut -d' ' -f1 /proc/modules")).trim().split("\n"), ["ksplice"]);
      const log = await ok(vm, "dmesg");
      const lines = log
        .split("\n")
        .filter((l) => /ksplice: Update/.test(l))
        .map((l) => l.replace(/^\[[^\]]*\]\s*/, ""));
      assert.deepEqual(lines, [
        "ksplice: Update version1 applied successfully",
        "ksplice: Update version1 reversed successfully",
        "ksplice: Update uname001 applied successfully",
        "ksplice: Update meminfo1 applied successfully",
        "ksplice: Update meminfo1 reversed successfully",
        "ksplice: Update uname001 reversed successfully",
        "ksplice: Update cmdlinea applied successfully",
        "ksplice: Update cmdlineb applied successfully",
        "ksplice: Update cmdlinea reverse aborted: module_busy",
        "ksplice: Update cmdlineb reversed successfully",
        "ksplice: Update cmdlinea reversed successfully",
        "ksplice: Update pipehook applied successfully",
        "ksplice: Update pipehook reversed successfully",
      ]);
      assert.doesNotMatch(log, /WARNING|Oops|Call Trace|BUG:/);
    },
    { paths: lab, withPaths: [out], smp: 2 },
  );
});
