// Safety in Debian's real kernel (QEMU): every refusal leaves the running kernel exactly as it
// was. In one guest: a task asleep in the function being replaced (and, for undo, in the
// replacement) makes apply/undo fail with code_busy naming it (in the output and in the
// update's conflicts file), then succeed once it has left; a failing check hook rolls back;
// updates for another kernel, built from other source, or damaged in any of six ways are refused
// before anything is loaded; a module that fails to load is rolled back; 200 apply/undo cycles
// under load on every vCPU; non-root users are refused; two applies are serialised by the lock.
// For each refusal the bytes of the targeted functions (read through /proc/kcore) are compared
// before and after, and no ksplice_ module may stay loaded. The table of faults is printed at
// the end (`npm run bench:safety` runs just this file).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { guestKallsyms, guestKernelBytes } from "../../src/lab/host.js";
import { prepareLab, withLab } from "../../src/lab/index.js";
import type { Manifest } from "../../src/package/manifest.js";
import { openPackage } from "../../src/package/package.js";
import { tempDir as hostTempDir } from "../helpers/compile.js";
import { tarball } from "../helpers/tar.js";
import { updateMaker } from "../helpers/updates.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
const FIX = join(REPO, "test", "update", "fixtures");
const TIMEOUT = 40 * 60_000;
const TARGETS = ["version_proc_show", "pipe_read", "cmdline_proc_show"];

// Every file the guest needs lives under one directory given to it with withPaths.
const SHARED = hostTempDir("ksplice-safety-");
let serial = 0;
const tempDir = () => join(SHARED, `d${serial++}`);

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** variant copies an unpacked package and lets `edit` change it; returns the directory. */
function variant(src: string, name: string, edit: (dir: string, m: Manifest) => void): string {
  // Under the directory shared with the guest (tempDir is in it, see below).
  const dir = join(tempDir(), name);
  cpSync(src, dir, { recursive: true });
  const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as Manifest;
  edit(dir, m);
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(m, null, 2));
  return dir;
}

interface Row {
  fault: string;
  tries: number;
  outcome: string;
  unchanged: boolean | "n/a";
}

test("refusals and faults leave the running kernel unchanged", { timeout: TIMEOUT }, async (t) => {
  const lab = await prepareLab();
  const out = SHARED;
  const coreDir = join(tempDir(), "core");
  const make = updateMaker(lab, out, coreDir);
  const version = await make("version1", join(REPO, "examples", "proc-version-banner.patch"));
  const pipe = await make("pipe0001", join(FIX, "pipe-read-count.patch"));
  // Built as if cmdline-a were live: its pre code is not the running code.
  const mismatch = await make("mism0001", join(FIX, "cmdline-b.patch"), [join(FIX, "cmdline-a.patch")]);
  const refusing = await make("hookfail", join(FIX, "version-hook-refuses.patch"));

  // Damaged packages, made from the good one.
  const good = await openPackage(version);
  const bad: Array<{ fault: string; path: string; code: string; re: RegExp }> = [];
  const tgz = readFileSync(version);
  const truncated = join(out, "truncated.tar.gz");
  writeFileSync(truncated, tgz.subarray(0, Math.floor(tgz.length / 2)));
  bad.push({ fault: "truncated tarball", path: truncated, code: "bad_package", re: /truncated/ });
  const dotdot = join(out, "traversal.tar.gz");
  writeFileSync(
    dotdot,
    tarball([
      ["ksplice-evil/manifest.json", readFileSync(join(good.dir, "manifest.json"))],
      ["ksplice-evil/../../etc/evil", Buffer.from("x")],
    ]),
  );
  bad.push({ fault: "path traversal entry", path: dotdot, code: "bad_package", re: /path traversal/ });
  bad.push({
    fault: "tampered manifest (module checksum)",
    path: variant(good.dir, "ksplice-version1", (_d, m) => {
      m.files[0].sha256 = "0".repeat(64);
    }),
    code: "bad_package",
    re: /does not match its checksum/,
  });
  bad.push({
    fault: "module does not match its checksum",
    path: variant(good.dir, "ksplice-version1", (d) => {
      const ko = join(d, "ksplice_version1.ko");
      const b = readFileSync(ko);
      b[b.length - 100] ^= 0xff;
      writeFileSync(ko, b);
    }),
    code: "bad_package",
    re: /ksplice_version1\.ko does not match its checksum/,
  });
  bad.push({
    fault: "missing file",
    path: variant(good.dir, "ksplice-version1", (d) => {
      rmSync(join(d, "pre", "fs", "proc", "version.o"));
    }),
    code: "bad_package",
    re: /pre\/fs\/proc\/version\.o is listed in the manifest but missing from the package/,
  });
  bad.push({
    fault: "unknown format version",
    path: variant(good.dir, "ksplice-version1", (_d, m) => {
      m.formatVersion = 99;
    }),
    code: "bad_package",
    re: /format version 99 is not supported/,
  });
  bad.push({
    fault: "wrong kernel release",
    path: variant(good.dir, "ksplice-version1", (_d, m) => {
      m.kernel.release = "6.1.0-49-cloud-amd64";
    }),
    code: "wrong_kernel",
    re: /is for kernel 6\.1\.0-49-cloud-amd64, but this kernel is 6\.1\.0-50-cloud-amd64/,
  });
  bad.push({
    fault: "wrong kernel build",
    path: variant(good.dir, "ksplice-version1", (_d, m) => {
      m.kernel.buildId = "f".repeat(40);
    }),
    code: "wrong_kernel",
    re: /is for build f{40}/,
  });
  bad.push({
    fault: "pre code differs (mismatch)",
    path: mismatch,
    code: "no_match",
    re: /cmdline_proc_show \(fs\/proc\/cmdline\.o\) does not match the running kernel/,
  });
  bad.push({
    fault: "update module fails to load",
    path: variant(good.dir, "ksplice-version1", (d, m) => {
      const junk = readFileSync(join(d, "pre", "fs", "proc", "version.o")); // an ELF, not a module
      writeFileSync(join(d, "ksplice_version1.ko"), junk);
      m.files.find((f) => f.path === "ksplice_version1.ko")!.sha256 = sha256(junk);
      m.files.find((f) => f.path === "ksplice_version1.ko")!.size = junk.length;
    }),
    code: "load_failed",
    re: /loading the update module ksplice_version1 .* failed/,
  });
  bad.push({
    fault: "a check_apply hook fails",
    path: refusing,
    code: "call_failed",
    re: /applying update hookfail aborted: call_failed: a pre or check hook of the update returned an error/,
  });
  good.close();

  // The load: a static reader of /proc/version in a tight loop, counting texts neither old nor new.
  const reader = join(out, "version-reader");
  execFileSync("gcc-12", [
    "-O2",
    "-static",
    "-o",
    reader,
    join(REPO, "test/kernel/fixtures/version-reader.c"),
  ]);
  const rows: Row[] = [];
  await withLab(
    async (vm) => {
      const sh = async (cmd: string, timeoutMs = 300_000) => {
        const r = await vm.exec(["sh", "-c", cmd], { timeoutMs });
        return { code: r.code, out: r.stdout, err: r.stderr };
      };
      const ok = async (cmd: string) => {
        const r = await sh(cmd);
        assert.equal(r.code, 0, `${cmd}\n${r.out}${r.err}`);
        return r.out;
      };
      const ks = await guestKallsyms(vm);
      const text = async () => {
        const parts: string[] = [];
        for (const name of TARGETS) {
          const addr = ks.one(name);
          parts.push(
            Buffer.from(await guestKernelBytes(vm, REPO, addr, Number(ks.sizeOf(addr)))).toString("hex"),
          );
        }
        return parts.join(":");
      };
      const modules = async () =>
        (await ok("cut -d' ' -f1 /proc/modules")).split("\n").filter((l) => l.startsWith("ksplice_"));
      const pristine = await text();

      console.error("safety: 1. Busy code");
      // 1. Busy code: a reader asleep in pipe_read.
      const sleeper = async () => {
        await sh("setsid sh -c 'sleep 600 | cat' </dev/null >/dev/null 2>&1 &");
        let pid = "";
        for (let i = 0; i < 100 && !pid; i++) pid = (await sh("pidof cat")).out.trim();
        for (let i = 0; i < 100 && !(await sh(`cat /proc/${pid}/stack`)).out.includes("pipe_read"); i++);
        return pid;
      };
      const wake = async (pid: string) => {
        await sh(`kill ${pid}; kill $(pidof sleep) 2>/dev/null; true`);
        for (let i = 0; i < 100 && (await sh("pidof cat")).code === 0; i++);
      };
      let pid = await sleeper();
      const busy = await sh(`ksplice apply --raw-errors ${pipe}`);
      assert.equal(busy.code, 1, busy.out);
      assert.equal(busy.err.split("\n")[0], "code_busy");
      assert.match(
        busy.err,
        new RegExp(
          `aborted after 5 attempts: code_busy: the code is in use by cat \\(pid ${pid}\\) in pipe_read\\+0x[0-9a-f]+/0x[0-9a-f]+`,
        ),
      );
      assert.equal(await text(), pristine);
      assert.deepEqual(await modules(), []);
      rows.push({
        fault: "task asleep in the replaced function (apply)",
        tries: 1,
        outcome: "code_busy, names cat",
        unchanged: true,
      });
      await wake(pid);
      await ok(`ksplice apply ${pipe}`);
      assert.equal((await sh("echo hi | cat")).out, "hi\n");
      rows.push({ fault: "same apply once the task left", tries: 1, outcome: "applied", unchanged: "n/a" });
      pid = await sleeper();
      // The core's own interface names it too, in the update's conflicts file.
      const stage = await sh("echo reversed > /sys/kernel/ksplice/pipe0001/stage");
      assert.notEqual(stage.code, 0);
      assert.match(
        await ok("cat /sys/kernel/ksplice/pipe0001/conflicts"),
        new RegExp(`^cat ${pid} pipe_read\\+0x[0-9a-f]+/0x[0-9a-f]+ \\[ksplice_pipe0001\\]$`, "m"),
      );
      assert.equal((await ok("cat /sys/kernel/ksplice/pipe0001/abort_cause")).trim(), "code_busy");
      const busyUndo = await sh("ksplice undo --raw-errors pipe0001");
      assert.equal(busyUndo.err.split("\n")[0], "code_busy", busyUndo.err);
      assert.match(
        busyUndo.err,
        new RegExp(`cat \\(pid ${pid}\\) in pipe_read\\+0x[0-9a-f]+/0x[0-9a-f]+ \\[ksplice_pipe0001\\]`),
      );
      assert.match(await ok("ksplice view"), /pipe0001/);
      rows.push({
        fault: "task asleep in the replacement (undo)",
        tries: 1,
        outcome: "code_busy, names cat",
        unchanged: true,
      });
      await wake(pid);
      await ok("ksplice undo pipe0001");
      assert.equal(await text(), pristine);
      rows.push({ fault: "same undo once the task left", tries: 1, outcome: "reversed", unchanged: true });

      console.error("safety: 2-5, 7. Refusals");
      // 2-5, 7. Refusals: nothing loaded, nothing written.
      for (const b of bad) {
        const r = await sh(`ksplice apply --raw-errors ${b.path}`);
        assert.equal(r.code, 1, `${b.fault}: ${r.out}${r.err}`);
        assert.equal(r.err.split("\n")[0], b.code, `${b.fault}: ${r.err}`);
        assert.match(r.err, b.re, b.fault);
        const same = (await text()) === pristine;
        assert.ok(same, `${b.fault}: kernel text changed`);
        assert.deepEqual(await modules(), [], `${b.fault}: a module stayed loaded`);
        // An update is a directory of the core's; its own files (control, version...) are not.
        assert.deepEqual(
          (await ok("find /sys/kernel/ksplice -mindepth 1 -maxdepth 1 -type d")).split("\n").filter(Boolean),
          [],
          b.fault,
        );
        rows.push({ fault: b.fault, tries: 1, outcome: b.code, unchanged: same });
      }

      console.error("safety: 8. Permissions.");
      // 8. Permissions.
      await ok(`chmod -R a+rX ${out} /tmp`);
      const asNobody = (cmd: string) =>
        sh(
          `node -e 'process.setgid(65534); process.setuid(65534); const r = require("child_process").spawnSync("sh", ["-c", process.argv[1]], {stdio: "inherit"}); process.exit(r.status)' '${cmd}'`,
        );
      const na = await asNobody(`ksplice apply --raw-errors ${version}`);
      assert.equal(na.code, 1);
      assert.match(na.err, /^permission_denied\nksplice: ksplice apply needs root/);
      await ok(`ksplice apply ${version}`);
      const nu = await asNobody("ksplice undo version1");
      assert.match(nu.err, /ksplice undo needs root/);
      const ns = await asNobody("echo reversed > /sys/kernel/ksplice/version1/stage");
      assert.notEqual(ns.code, 0);
      assert.match(ns.err, /Permission denied/);
      assert.match(await ok("ksplice view"), /version1/);
      rows.push({
        fault: "non-root apply, undo, stage write",
        tries: 3,
        outcome: "refused",
        unchanged: true,
      });

      console.error("safety: 6. Load:");
      // 6. Load: readers on every vCPU while 200 apply/undo cycles run.
      await ok("echo 10 > /sys/module/ksplice/parameters/retry_interval_ms");
      await ok("ksplice undo version1 >/dev/null; cat /proc/version > /tmp/old.txt");
      await ok(`ksplice apply ${version} >/dev/null; cat /proc/version > /tmp/new.txt`);
      assert.notEqual(await ok("cat /tmp/old.txt"), await ok("cat /tmp/new.txt"));
      // Two readers per vCPU, each calling version_proc_show as fast as it can.
      await ok(
        `rm -f /tmp/stop /tmp/reader.*; for i in 1 2 3 4; do setsid ${reader} /tmp/old.txt /tmp/new.txt /tmp/stop /tmp/reader.$i </dev/null >/dev/null 2>&1 & done; true`,
      );
      const cycles =
        await ok(`ok=0; busy=0; other=0; d=/sys/kernel/ksplice/version1; for i in $(seq 1 400); do
  if [ "$(cat $d/stage)" = applied ]; then s=reversed; else s=applied; fi
  if echo $s > $d/stage 2>/dev/null; then ok=$((ok+1));
  elif [ "$(cat $d/abort_cause)" = code_busy ]; then busy=$((busy+1)); else other=$((other+1)); fi
done; echo "$ok $busy $other"`);
      await ok(
        "touch /tmp/stop; for i in $(seq 1 150); do [ $(ls /tmp/reader.* 2>/dev/null | wc -l) -ge 4 ] && break; sleep 0.2; done",
      );
      const [okN, busyN, otherN] = cycles.trim().split(" ").map(Number);
      assert.equal(otherN, 0, "every cycle either succeeds or is code_busy");
      assert.equal(okN + busyN, 400);
      let reads = 0;
      for (const line of (await ok("cat /tmp/reader.*")).trim().split("\n")) {
        const [n, badReads] = line.split(" ").map(Number);
        assert.equal(badReads, 0, "a reader saw neither the old nor the new /proc/version");
        reads += n;
      }
      assert.equal((await ok("ls /tmp/reader.*")).trim().split("\n").length, 4);
      assert.ok(reads > 0);
      rows.push({
        fault: `200 apply/undo cycles, 4 readers in a tight loop (${reads} reads)`,
        tries: 400,
        outcome: `${okN} ok, ${busyN} code_busy, 0 torn reads`,
        unchanged: "n/a",
      });
      await ok("ksplice undo version1 >/dev/null 2>&1 || true; ksplice view --json");

      console.error("safety: 9. Concurrency");
      // 9. Concurrency: an apply waits while another ksplice holds the lock.
      await ok("sleep 600 >/dev/null 2>&1 & echo $! > /run/ksplice.lock");
      await sh(`(ksplice apply ${version} > /tmp/apply.out 2>&1; echo $? > /tmp/apply.rc) >/dev/null 2>&1 &`);
      await sh("sleep 4");
      assert.equal((await sh("cat /tmp/apply.rc")).code, 1, "apply finished while the lock was held");
      assert.equal(await ok("ksplice view"), "No updates applied.\n");
      await ok("kill $(cat /run/ksplice.lock)");
      for (let i = 0; i < 300 && (await sh("cat /tmp/apply.rc")).code !== 0; i++) await sh("sleep 0.2");
      assert.equal((await ok("cat /tmp/apply.rc")).trim(), "0", await ok("cat /tmp/apply.out"));
      assert.match(await ok("ksplice view"), /version1/);
      await ok("ksplice undo version1");
      rows.push({
        fault: "apply while another ksplice holds the lock",
        tries: 1,
        outcome: "waited, then applied",
        unchanged: "n/a",
      });
      // Two real applies started together: one waits for the other, both go in.
      const both = await ok(
        `ksplice apply ${version} >/tmp/a1.out 2>&1 & a=$!; ksplice apply ${pipe} >/tmp/a2.out 2>&1 & b=$!; wait $a; ra=$?; wait $b; echo "$ra $?"`,
      );
      assert.equal(both.trim(), "0 0", await ok("cat /tmp/a1.out /tmp/a2.out"));
      assert.match(await ok("ksplice view"), /version1[\s\S]*pipe0001|pipe0001[\s\S]*version1/);
      await ok("ksplice undo version1 && ksplice undo pipe0001");
      rows.push({
        fault: "two applies started at once",
        tries: 1,
        outcome: "serialised, both applied",
        unchanged: "n/a",
      });

      assert.equal(await text(), pristine);
      const log = await ok("dmesg");
      assert.doesNotMatch(log, /WARNING|Oops|Call Trace|BUG:/);
      // The refusing update's fail_apply hook ran when its check hook failed.
      assert.match(log, /ksplice demo: apply failed, as its check hook asked/);
    },
    { paths: lab, withPaths: [out], smp: 2 },
  );
  const table = [
    "| fault | tries | outcome | kernel text unchanged |",
    "|---|---|---|---|",
    ...rows.map(
      (r) =>
        `| ${r.fault} | ${r.tries} | ${r.outcome} | ${r.unchanged === "n/a" ? "n/a" : r.unchanged ? "yes" : "NO"} |`,
    ),
  ].join("\n");
  t.diagnostic(`safety report\n${table}`);
  if (process.env.KSPLICE_SAFETY_REPORT) {
    mkdirSync(join(process.env.KSPLICE_SAFETY_REPORT, ".."), { recursive: true });
    writeFileSync(process.env.KSPLICE_SAFETY_REPORT, `${table}\n`);
  }
});
