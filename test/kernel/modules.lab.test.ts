// Updates to loadable modules, in Debian's running kernel (QEMU), with Debian's own overlay
// module from the image package, checked by behaviour (a mark in /proc/mounts):
//   - loaded later: applied while overlay is not loaded (pending), patched as it loads; held
//     loaded while patched, removed by force (its part pending again) and patched at the next
//     load; after undo a fresh load runs the original code;
//   - loaded later with code that differs from the pre code: the module loads unpatched, the
//     part is failed in view and in the kernel log, its code unchanged;
//   - two stacked updates, and the kernel image with a module, loaded later;
//   - loaded now: patched at once; a module whose code differs refused with no_match;
//   - not installed: module_missing; two real overlay fixes of Debian's stable delta.
import assert from "node:assert/strict";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import * as tar from "tar";
import { PINNED_CORPUS, prepareCorpus } from "../../src/lab/corpus.js";
import { guestKallsyms, guestKernelBytes } from "../../src/lab/host.js";
import { prepareLab, withLab } from "../../src/lab/index.js";
import { tempDir } from "../helpers/compile.js";
import { ok, sh } from "../helpers/guest.js";
import { updateMaker } from "../helpers/updates.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
const fixture = (name: string) => join(REPO, "test/kernel/fixtures", name);
const OVL = fixture("overlay-show-options.patch");
const OVL2 = fixture("overlay-show-options-2.patch");
const CMDLINE = join(REPO, "test/update/fixtures/cmdline-a.patch");

const MOUNT =
  "mkdir -p /mnt/ovt && mount -t tmpfs t /mnt/ovt && mkdir -p /mnt/ovt/l /mnt/ovt/u /mnt/ovt/w /mnt/ovt/m && " +
  "mount -t overlay overlay -o lowerdir=/mnt/ovt/l,upperdir=/mnt/ovt/u,workdir=/mnt/ovt/w /mnt/ovt/m";
const UMOUNT = "umount /mnt/ovt/m && umount /mnt/ovt";
const MARKS = "grep -o ',ksplice[0-9]*' /proc/mounts | sort | tr '\\n' ' '; echo";

test("updates to a loadable module: loaded now or later, held loaded, with vmlinux, failed or refused when its code differs", {
  timeout: 40 * 60_000,
}, async () => {
  const lab = await prepareLab();
  const out = tempDir();
  const make = updateMaker(lab, out, join(tempDir(), "core"));
  const ovl = await make("modovl", [OVL]);
  const both = await make("modboth", [OVL, CMDLINE]);
  const differs = await make("moddiff", [OVL2], [OVL]);
  const corpus = await prepareCorpus(lab, { prefer: PINNED_CORPUS });
  const real = await Promise.all(
    [
      ["modrffile", "fs/overlayfs/file.c", "ovl_copyfile"],
      ["modrfcopy", "fs/overlayfs/copy_up.c", "ovl_copy_up_one"],
    ].map(async ([id, file, fn]) => {
      const fix = corpus.fixes.find((f) => f.file === file);
      assert.ok(fix, `the corpus has no fix of ${file}`);
      return { id, fn, pkg: await make(id, [fix.patch]) };
    }),
  );
  // The same update, as if for a module no one has: its (unpacked) manifest names another module.
  const unpacked = join(out, "unpacked");
  await tar.extract({ file: ovl, cwd: out });
  cpSync(join(out, "ksplice-modovl"), unpacked, { recursive: true });
  const mpath = join(unpacked, "manifest.json");
  const m = JSON.parse(readFileSync(mpath, "utf8"));
  m.id = "modmissing";
  m.objects[0].module = "no_such_module";
  writeFileSync(mpath, JSON.stringify(m));

  await withLab(
    async (vm) => {
      const view = async () => JSON.parse(await ok(vm, "ksplice view --json"));
      const states = async () =>
        (await view()).updates.flatMap(
          (u: { id: string; targets: { name: string; module: string; state: string }[] }) =>
            u.targets.map((t) => `${u.id} ${t.name} ${t.module} ${t.state}`),
        );
      // The 5 bytes where a jump would go (after the ftrace site) of the loaded overlay's ovl_show_options.
      const site = async () => {
        const ks = await guestKallsyms(vm);
        const addr = ks.one("ovl_show_options", "overlay");
        return Buffer.from(await guestKernelBytes(vm, REPO, addr + 5n, 5)).toString("hex");
      };
      const log = async () => (await ok(vm, "dmesg -c")).replace(/^\[[^\]]*\] /gm, "");

      // Not installed: named as missing, nothing applied.
      const gone = await sh(vm, `ksplice apply --raw-errors ${unpacked}`);
      assert.match(gone.err, /^module_missing\n.*no_such_module, which is neither loaded nor installed/);
      assert.equal((await ok(vm, "ksplice view")).trim(), "No updates applied.");
      await ok(vm, "modprobe overlay");
      const clean = await site();
      await ok(vm, "rmmod overlay");
      await log();

      // Loaded later: pending at apply, patched as overlay loads, before anything uses it.
      const applied = await ok(vm, `ksplice apply ${ovl}`);
      assert.match(
        applied,
        /ovl_show_options \(fs\/overlayfs\/super\.o, module overlay\) pending: patched when overlay loads/,
      );
      assert.match(
        await ok(vm, "ksplice view"),
        /ovl_show_options \[overlay: pending\][\s\S]*overlay: pending, patched when it loads/,
      );
      assert.deepEqual(await states(), ["modovl ovl_show_options overlay pending"]);
      await ok(vm, "modprobe overlay");
      assert.match(await log(), /Update modovl: module overlay loaded, 1 function\(s\) patched/);
      assert.deepEqual(await states(), ["modovl ovl_show_options overlay live"]);
      await ok(vm, MOUNT);
      assert.equal((await ok(vm, MARKS)).trim(), ",ksplice");
      assert.match(await ok(vm, "ksplice view"), /ovl_show_options \[overlay\]/);
      // Patched, it stays loaded; removed by force, its part waits for the next load.
      await ok(vm, UMOUNT);
      const held = await sh(vm, "rmmod overlay");
      assert.notEqual(held.code, 0, "rmmod of a patched module must fail");
      // busybox rmmod asks with O_NONBLOCK: a module in use is EWOULDBLOCK ("temporarily unavailable").
      assert.match(held.err + held.out, /in use|busy|temporarily unavailable/i);
      await ok(vm, "rmmod -f overlay");
      assert.match(
        await log(),
        /Update modovl: module overlay was removed while patched; its part is pending until it loads again/,
      );
      assert.deepEqual(await states(), ["modovl ovl_show_options overlay pending"]);
      await ok(vm, `modprobe overlay && ${MOUNT}`);
      assert.equal((await ok(vm, MARKS)).trim(), ",ksplice");
      await ok(vm, "ksplice undo modovl");
      assert.equal((await ok(vm, MARKS)).trim(), "");
      // After undo, a fresh load runs the original code.
      await ok(vm, `${UMOUNT} && rmmod overlay && modprobe overlay && ${MOUNT}`);
      assert.equal((await ok(vm, MARKS)).trim(), "");
      assert.equal(await site(), clean);
      await ok(vm, `${UMOUNT} && rmmod overlay`);

      // Loaded later, its code differs from the pre code: it loads unpatched, the part failed.
      await ok(vm, `ksplice apply ${differs}`);
      await log();
      await ok(vm, "modprobe overlay");
      assert.match(
        await log(),
        /Update moddiff: module overlay loaded unpatched: run-pre: ovl_show_options \(fs\/overlayfs\/super\.o\) does not match/,
      );
      assert.deepEqual(await states(), ["moddiff ovl_show_options overlay failed"]);
      assert.match(
        await ok(vm, "ksplice view"),
        /overlay: failed, runs unpatched: run-pre: ovl_show_options/,
      );
      assert.equal(await site(), clean);
      await ok(vm, MOUNT);
      assert.equal((await ok(vm, MARKS)).trim(), "");
      await ok(vm, `${UMOUNT} && rmmod overlay`); // nothing patched: not held
      await ok(vm, "ksplice undo moddiff");

      // Two stacked updates, loaded later: patched in the order applied, the second on the first.
      await ok(vm, `ksplice apply ${ovl} && ksplice apply ${differs}`);
      await ok(vm, `modprobe overlay && ${MOUNT}`);
      assert.equal((await ok(vm, MARKS)).trim(), ",ksplice2");
      assert.deepEqual(await states(), [
        "modovl ovl_show_options overlay live",
        "moddiff ovl_show_options overlay live",
      ]);
      await ok(vm, "ksplice undo moddiff");
      assert.equal((await ok(vm, MARKS)).trim(), ",ksplice");
      await ok(vm, "ksplice undo modovl");
      assert.equal((await ok(vm, MARKS)).trim(), "");
      await ok(vm, `${UMOUNT} && rmmod overlay`);

      // The kernel image and a module in one update, the module loaded later.
      const cmdline = (await ok(vm, "cat /proc/cmdline")).trim();
      await ok(vm, `ksplice apply ${both}`);
      assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), `A ${cmdline}`);
      assert.deepEqual(await states(), [
        "modboth cmdline_proc_show vmlinux live",
        "modboth ovl_show_options overlay pending",
      ]);
      await ok(vm, `modprobe overlay && ${MOUNT}`);
      assert.equal((await ok(vm, MARKS)).trim(), ",ksplice");
      await ok(vm, "ksplice undo modboth");
      assert.equal((await ok(vm, MARKS)).trim(), "");
      assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), cmdline);

      // Loaded now: patched at once, held loaded until undo.
      await ok(vm, `ksplice apply ${ovl}`);
      assert.equal((await ok(vm, MARKS)).trim(), ",ksplice");
      await ok(vm, "ksplice undo modovl");
      assert.equal((await ok(vm, MARKS)).trim(), "");

      // Loaded now, built on a patch the running module does not have: refused, nothing changed.
      const before = await ok(vm, "ksplice view");
      const diff = await sh(vm, `ksplice apply --raw-errors ${differs}`);
      assert.equal(diff.code, 1);
      assert.match(
        diff.err,
        /^no_match\n.*ovl_show_options \(fs\/overlayfs\/super\.o\) does not match the running kernel/,
      );
      assert.equal(await ok(vm, "ksplice view"), before);
      assert.equal((await ok(vm, MARKS)).trim(), "");

      // Real fixes of the module, from Debian's stable delta.
      for (const r of real) {
        await ok(vm, `ksplice apply ${r.pkg}`);
        assert.match(await ok(vm, `ksplice view ${r.id}`), new RegExp(`${r.fn} \\[overlay\\]`));
        await ok(vm, `ksplice undo ${r.id}`);
      }

      // Unpatched again, the module unloads.
      await ok(vm, UMOUNT);
      await ok(vm, "rmmod overlay");
      const all = await ok(vm, "dmesg");
      assert.doesNotMatch(all, /WARNING|Oops|BUG:|Call Trace/);
    },
    { paths: lab, withPaths: [out], modules: ["overlay"] },
  );
});
