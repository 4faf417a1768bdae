// Shadow data in Debian's running kernel (QEMU), in one boot:
//   - the core's shadow API through a test module (fixtures/ksplice_shadowtest): alloc, get,
//     free and free_all, constructors and destructors, 10,000 objects, one thread per CPU at
//     once, interrupts off; the core's accounting (/sys/kernel/ksplice/shadows, ksplice view)
//     and nothing left once the module frees its own;
//   - an update whose replacement code attaches a shadow to tasks (a per-task count of
//     /proc/PID/status reads), applied, read, undone: its reverse hook frees every shadow;
//   - the "new field" pattern on a real structure: Debian's stable fix of cls_route, whose
//     upstream version gives struct route4_bucket a filters_ref and struct route4_filter a dying
//     flag, made live with shadows instead (fixtures/cls-route-shadows.patch), exercised with
//     the host's tc on filters made before the update: the bucket keeps its remaining filter,
//     goes (with its shadow) with its last, a new bucket gets one; undo frees them all;
//   - hooks for a change of data: Debian's fix of net/ipv4/sysctl_net_ipv4.c, which changes
//     entries of a table registered at boot, made live with apply/reverse hooks
//     (examples/tcp-sysctl-bounds-hooks.patch): the bounds hold while it is applied, not after.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { buildCore, buildModule } from "../../src/kbuild/module.js";
import { hostProgram, prepareLab, withLab } from "../../src/lab/index.js";
import { tempDir } from "../helpers/compile.js";
import { ok, sh } from "../helpers/guest.js";
import { updateMaker } from "../helpers/updates.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
const fixture = (name: string) => join(REPO, "test/kernel/fixtures", name);
const BUCKET_REF = "726f757465340001";

test("shadow data and hooks: the core's API, a shadow per task, cls_route's new fields as shadows, a boot-time table changed by hooks", {
  timeout: 40 * 60_000,
}, async () => {
  const lab = await prepareLab();
  const out = tempDir();
  const coreDir = join(out, "core");
  const coreKo = await buildCore(lab.headersDir, coreDir);
  const testKo = await buildModule(fixture("ksplice_shadowtest"), "ksplice_shadowtest", lab.headersDir, out, {
    files: [join(REPO, "kmod", "ksplice-patch.h")],
    symvers: [join(coreKo, "..", "Module.symvers")],
  });
  const make = updateMaker(lab, out, coreDir);
  const reads = await make("shadowst", fixture("status-reads-shadow.patch"));
  const route = await make("clsroute", join(REPO, "examples", "cls-route-shadows.patch"));
  const bounds = await make("tcpbounds", join(REPO, "examples", "tcp-sysctl-bounds-hooks.patch"));
  const tc = hostProgram("/usr/sbin/tc", join(out, "bin"));

  await withLab(
    async (vm) => {
      const shadows = async () => (await ok(vm, "cat /sys/kernel/ksplice/shadows")).trim();
      const filters = async () =>
        (await ok(vm, `${tc.path} filter show dev lo`)).match(/to \d+( from \d+)?/g)?.join("; ") ?? "";
      await ok(vm, `insmod ${coreKo} && dmesg -c >/dev/null`);

      // The API, from a module of its own.
      await ok(vm, `insmod ${testKo} keep=100`);
      const log = await ok(vm, "dmesg -c");
      for (const c of ["basic", "ctor_dtor", "many", "concurrent \\(2 CPUs", "keep 100"])
        assert.match(log, new RegExp(`shadowtest: ok ${c}`), log);
      assert.match(log, /shadowtest: done, 0 failure\(s\)/);
      assert.equal(await shadows(), "5eed 100 800");
      assert.match(
        await ok(vm, "ksplice view"),
        /^No updates applied\.\nShadows 0x5eed: 100 \(800 bytes\)\n$/,
      );
      assert.deepEqual(JSON.parse(await ok(vm, "ksplice view --json")).shadows, [
        { id: "0x5eed", count: 100, bytes: 800 },
      ]);
      await ok(vm, "rmmod ksplice_shadowtest");
      assert.equal(await shadows(), "");

      // A shadow per task, made by replacement code, freed by the update's reverse hook.
      await ok(vm, "sleep 600 >/dev/null 2>&1 & echo $! > /tmp/sleeper");
      const status = "grep KspliceReads /proc/$(cat /tmp/sleeper)/status";
      await ok(vm, `ksplice apply ${reads}`);
      for (const n of [1, 2, 3]) assert.equal((await ok(vm, status)).trim(), `KspliceReads:\t${n}`);
      assert.match(await shadows(), /^6b73706c7301 [1-9]\d* \d+$/);
      await ok(vm, "ksplice undo shadowst");
      assert.equal(await shadows(), "");
      assert.equal((await sh(vm, status)).code, 1, "the line goes with the update");
      await ok(vm, "kill $(cat /tmp/sleeper)");

      // New fields of a real structure, as shadows: Debian's cls_route fix.
      await ok(vm, "modprobe sch_prio && modprobe cls_route");
      await ok(vm, `${tc.path} qdisc add dev lo root handle 1: prio`);
      const add = (spec: string, classid: string) =>
        ok(vm, `${tc.path} filter add dev lo parent 1: protocol ip prio 1 route ${spec} classid ${classid}`);
      const del = (handle: string) =>
        ok(vm, `${tc.path} filter del dev lo parent 1: protocol ip prio 1 handle ${handle} route`);
      // Two filters in one bucket (to realm 10), made before the update: the old layout.
      await add("to 10", "1:1");
      await add("to 10 from 3", "1:2");
      await ok(vm, `ksplice apply ${route}`);
      assert.equal(await shadows(), "");
      // The first delete counts the older bucket's filters into its shadow: one is left.
      await del("0xffff000a");
      await ok(vm, "sleep 1"); // the deleted filter (and its dying flag) go after a grace period
      assert.equal(await shadows(), `${BUCKET_REF} 1 4`);
      assert.equal(await filters(), "to 10 from 3");
      // Its last filter takes the bucket, and the bucket's shadow, with it.
      await del("0x0003000a");
      await ok(vm, "sleep 1");
      assert.equal(await shadows(), "");
      assert.equal(await filters(), "");
      // A bucket made by the new code has its count from the start.
      await add("to 20", "1:1");
      assert.equal(await shadows(), `${BUCKET_REF} 1 4`);
      await ok(vm, "ksplice undo clsroute");
      assert.equal(await shadows(), "");
      assert.equal(await filters(), "to 20");
      await ok(vm, `${tc.path} qdisc del dev lo root`);

      // Hooks that change a table registered at boot, and change it back.
      const set = async (name: string, value: string) =>
        (await sh(vm, `echo '${value}' > /proc/sys/net/ipv4/${name}`)).code === 0;
      assert.equal(await set("tcp_reordering", "0"), true, "no lower bound before the update");
      await ok(vm, `echo 3 > /proc/sys/net/ipv4/tcp_reordering && ksplice apply ${bounds}`);
      assert.equal(await set("tcp_reordering", "0"), false);
      assert.equal(await set("tcp_reordering", "301"), false, "bounded by tcp_max_reordering (300)");
      assert.equal(await set("tcp_reordering", "10"), true);
      assert.equal(await set("tcp_rmem", "100 131072 6291456"), false);
      assert.equal(await set("tcp_rmem", "4096 131072 6291456"), true);
      await ok(vm, "ksplice undo tcpbounds");
      assert.equal(await set("tcp_reordering", "0"), true, "the old bounds are back");
      await ok(vm, "echo 3 > /proc/sys/net/ipv4/tcp_reordering");

      assert.doesNotMatch(await ok(vm, "dmesg"), /WARNING|Oops|BUG:|Call Trace|refcount_t/);
    },
    { paths: lab, withPaths: [out, ...tc.with], modules: ["sch_prio", "cls_route"] },
  );
});
