// Real fixes, live: upstream stable fixes that Debian ships between the lab kernel's source
// (6.1.176-1) and the newest linux-source-6.1, each the diff of one file (src/lab/corpus.ts),
// made into updates by `ksplice create` and applied, viewed and undone in Debian's running
// kernel (QEMU), with a clean kernel log. Each covers a class of fix the engine once got wrong:
//   - fs/fcntl.c: F_SET_RW_HINT on an immutable file is EPERM (checked by behaviour);
//   - kernel/time/time.c: a system call (SYSCALL_DEFINE body inlined into its entry);
//   - net/core/skmsg.c, io_uring/sqpoll.c: functions with lock prefixes (.smp_locks sites);
//   - kernel/sched/cpufreq_schedutil.c: a .c file #included by kernel/sched/build_utility.c;
//   - security/selinux/ss/conditional.c: a member of a composite object in a subdirectory
//     (selinux-y += ss/conditional.o);
//   - net/ipv6/inet6_hashtables.c: listed as obj-$(subst m,y,$(CONFIG_IPV6));
//   - drivers/video/fbdev/core/modedb.c: a const table changes (copied, its reader replaced);
// and one patch of ours for the class no one-file fix can show: a new global function of one
// object (fs/proc/cmdline.c) called from another (fs/proc/meminfo.c), seen in /proc/meminfo.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { PINNED_CORPUS, prepareCorpus } from "../../src/lab/corpus.js";
import { prepareLab, withLab } from "../../src/lab/index.js";
import { tempDir } from "../helpers/compile.js";
import { ok } from "../helpers/guest.js";
import { updateMaker } from "../helpers/updates.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
const TIMEOUT = 40 * 60_000;

interface Case {
  id: string;
  /** A file of the corpus (its one-file patch), or a patch of ours. */
  file?: string;
  patch?: string;
  /** Functions the update must replace (a subset of its targets). */
  replaces: string[];
  /** A command whose output shows the fix: before, after apply, after undo. */
  probe?: { cmd: string; before: RegExp; after: RegExp };
}

test("real fixes from Debian's stable delta apply, take effect and undo in the running kernel", {
  timeout: TIMEOUT,
}, async () => {
  const lab = await prepareLab();
  const corpus = await prepareCorpus(lab, { prefer: PINNED_CORPUS });
  const out = tempDir();
  const make = updateMaker(lab, out, join(tempDir(), "core"));
  const probeBin = join(out, "rw-hint-immutable");
  execFileSync("gcc-12", [
    "-O2",
    "-static",
    "-o",
    probeBin,
    join(REPO, "test/kernel/fixtures/rw-hint-immutable.c"),
  ]);

  const cases: Case[] = [
    {
      id: "rffcntl",
      file: "fs/fcntl.c",
      replaces: ["do_fcntl"],
      probe: {
        cmd: `mkdir -p /tmp/rw && mount -t tmpfs none /tmp/rw 2>/dev/null; ${probeBin} /tmp/rw/f`,
        before: /^ok$/,
        after: /^EPERM$/,
      },
    },
    { id: "rftime", file: "kernel/time/time.c", replaces: [] },
    { id: "rfskmsg", file: "net/core/skmsg.c", replaces: ["sk_msg_alloc"] },
    { id: "rfsqpoll", file: "io_uring/sqpoll.c", replaces: ["io_sq_thread"] },
    { id: "rfsched", file: "kernel/sched/cpufreq_schedutil.c", replaces: [] },
    { id: "rfselinux", file: "security/selinux/ss/conditional.c", replaces: [] },
    { id: "rfinet6", file: "net/ipv6/inet6_hashtables.c", replaces: [] },
    // A const table changed: its new copy goes into the update, and its reader is replaced.
    { id: "rfmodedb", file: "drivers/video/fbdev/core/modedb.c", replaces: ["fb_find_mode"] },
    {
      id: "rfcross",
      patch: join(REPO, "test/update/fixtures/meminfo-cmdline-cross.patch"),
      replaces: ["meminfo_proc_show"],
      probe: { cmd: "grep -c '^CmdlineLength: ' /proc/meminfo || true", before: /^0$/, after: /^1$/ },
    },
  ];
  const pkgs: string[] = [];
  for (const c of cases) {
    const patch = c.patch ?? corpus.fixes.find((f) => f.file === c.file)?.patch;
    assert.ok(patch, `the corpus ${corpus.from} -> ${corpus.to} has no fix of ${c.file}`);
    pkgs.push(await make(c.id, patch));
  }

  await withLab(
    async (vm) => {
      await ok(vm, "dmesg -c >/dev/null");
      for (const [i, c] of cases.entries()) {
        const what = c.file ?? c.patch;
        const probe = async () => (c.probe ? (await ok(vm, c.probe.cmd)).trim() : "");
        if (c.probe) assert.match(await probe(), c.probe.before, `${what}: before apply`);
        assert.match(await ok(vm, `ksplice apply ${pkgs[i]}`), new RegExp(`^Update ${c.id} applied`));
        const view = JSON.parse(await ok(vm, "ksplice view --json"));
        const mine = view.updates.find((u: { id: string }) => u.id === c.id);
        assert.ok(mine, `${what}: ksplice view lists ${c.id}`);
        for (const f of c.replaces)
          assert.ok(mine.functions.includes(f), `${what}: replaces ${f} (${mine.functions})`);
        assert.ok(mine.functions.length > 0);
        if (c.probe) assert.match(await probe(), c.probe.after, `${what}: after apply`);
        assert.match(await ok(vm, `ksplice undo ${c.id}`), new RegExp(`^Update ${c.id} reversed`));
        assert.deepEqual(JSON.parse(await ok(vm, "ksplice view --json")).updates, []);
        if (c.probe) assert.match(await probe(), c.probe.before, `${what}: after undo`);
        const log = await ok(vm, "dmesg -c");
        assert.doesNotMatch(
          log,
          /WARNING|Oops|BUG:|Call Trace|general protection/,
          `${what}: kernel log\n${log}`,
        );
        assert.match(log, new RegExp(`ksplice: Update ${c.id} applied successfully`));
        assert.match(log, new RegExp(`ksplice: Update ${c.id} reversed successfully`));
      }
      assert.equal((await ok(vm, "lsmod | grep -c '^ksplice_' || true")).trim(), "0");
    },
    { withPaths: [out] },
  );
});
