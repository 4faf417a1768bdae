// Updates to loadable modules, in Debian's running kernel (QEMU), with Debian's own overlay
// module from the image package: refused while the module is not loaded (and named when it is
// not even installed), applied to the loaded module and seen in /proc/mounts, the patched
// module held loaded (rmmod refused) until undo, one update touching the kernel image and a
// module together, and a module whose running code differs from the pre code refused with
// no_match, nothing changed; and two real fixes to overlay from Debian's stable delta
// (fs/overlayfs/file.c, copy_up.c), applied, viewed and undone.
import assert from "node:assert/strict";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import * as tar from "tar";
import { PINNED_CORPUS, prepareCorpus } from "../../src/lab/corpus.js";
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

test("updates to a loadable module: loaded, held loaded, with vmlinux, and refused when its code differs", {
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
      // Not loaded: refused, naming the module and what to do; installed-nowhere: named as missing.
      const notLoaded = await sh(vm, `ksplice apply --raw-errors ${ovl}`);
      assert.equal(notLoaded.code, 1);
      assert.match(
        notLoaded.err,
        /^module_not_loaded\n.*module overlay, which is not loaded: load it \(modprobe overlay\)/,
      );
      const gone = await sh(vm, `ksplice apply --raw-errors ${unpacked}`);
      assert.match(gone.err, /^module_missing\n.*no_such_module, which is neither loaded nor installed/);
      assert.equal((await ok(vm, "ksplice view")).trim(), "No updates applied.");

      // Loaded: the fix shows in /proc/mounts, the module is held loaded, undo restores it.
      await ok(vm, "modprobe overlay");
      await ok(vm, MOUNT);
      assert.equal((await ok(vm, MARKS)).trim(), "");
      await ok(vm, `ksplice apply ${ovl}`);
      assert.equal((await ok(vm, MARKS)).trim(), ",ksplice");
      assert.match(await ok(vm, "ksplice view"), /ovl_show_options \[overlay\]/);
      await ok(vm, UMOUNT);
      const held = await sh(vm, "rmmod overlay");
      assert.notEqual(held.code, 0, "rmmod of a patched module must fail");
      // busybox rmmod asks with O_NONBLOCK: a module in use is EWOULDBLOCK ("temporarily unavailable").
      assert.match(held.err + held.out, /in use|busy|temporarily unavailable/i);
      await ok(vm, MOUNT);
      assert.equal((await ok(vm, MARKS)).trim(), ",ksplice");
      await ok(vm, "ksplice undo modovl");
      assert.equal((await ok(vm, MARKS)).trim(), "");

      // The kernel image and a module in one update.
      const cmdline = (await ok(vm, "cat /proc/cmdline")).trim();
      await ok(vm, `ksplice apply ${both}`);
      assert.equal((await ok(vm, MARKS)).trim(), ",ksplice");
      assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), `A ${cmdline}`);
      await ok(vm, "ksplice undo modboth");
      assert.equal((await ok(vm, MARKS)).trim(), "");
      assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), cmdline);

      // Built on a patch the running module does not have: its code differs, nothing changes.
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
      const log = await ok(vm, "dmesg");
      assert.doesNotMatch(log, /WARNING|Oops|BUG:|Call Trace/);
    },
    { paths: lab, withPaths: [out], modules: ["overlay"] },
  );
});
