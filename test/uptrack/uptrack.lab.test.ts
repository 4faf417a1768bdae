// Uptrack in Debian's running kernel (QEMU, the busybox guest), with a stream served on the
// guest's own loopback by `ksplice stream serve`:
//   - three stacked updates of /proc/cmdline (A, B on A, C on both): uptrack-show --check says
//     updates are available (3), uptrack-upgrade -y installs them in order, uptrack-show and
//     uptrack-uname report them, /run/ksplice and the metrics say so, --check says 0;
//   - refusals, each with nothing changed in the kernel: a tampered update, a replayed old
//     timestamp, expired metadata, a root the stream is not signed for, an update published for
//     another build of the kernel;
//   - crash consistency: commands killed (SIGKILL) at each step (the update module loaded, the
//     plan handed to the core, after an apply before it was recorded, while the installed list
//     was being written, between updates of a series, after an undo's reverse): the kernel has
//     the update fully in or fully out, and the next command sees the true state, cleans up and
//     carries on;
//   - uptrack-remove --all takes every update out, and /proc/cmdline is as it was.
import assert from "node:assert/strict";
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import * as tar from "tar";
import { prepareLab, withLab } from "../../src/lab/index.js";
import { initStream } from "../../src/stream/index.js";
import { tempDir } from "../helpers/compile.js";
import { ok, sh } from "../helpers/guest.js";
import { updateMaker } from "../helpers/updates.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
const FIX = join(REPO, "test/update/fixtures");
const patch = (x: string) => join(FIX, `cmdline-${x}.patch`);

test("uptrack: a stream of three stacked updates upgraded, reported, refused when wrong, crash-safe, removed", {
  timeout: 45 * 60_000,
}, async () => {
  const lab = await prepareLab();
  const out = tempDir();
  const make = updateMaker(lab, out, join(out, "core"));
  const a = await make("upa", patch("a"));
  const b = await make("upb", patch("b"), [patch("a")]);
  const c = await make("upc", patch("c"), [patch("a"), patch("b")]);
  const d = await make("upd", patch("d"), [patch("a"), patch("b"), patch("c")]);
  // The same code as A, made for another build of this kernel.
  const other = join(out, "other");
  mkdirSync(other);
  await tar.extract({ file: await make("upother", patch("a")), cwd: other });
  const om = join(other, "ksplice-upother", "manifest.json");
  const m = JSON.parse(readFileSync(om, "utf8"));
  m.kernel.buildId = "0".repeat(40);
  writeFileSync(om, JSON.stringify(m));
  const otherPkg = join(out, "ksplice-upother-build.tar.gz");
  await tar.create({ gzip: true, file: otherPkg, cwd: other }, ["ksplice-upother"]);
  rmSync(other, { recursive: true });
  // The stream and its keys, and a stranger's root.
  const stream = join(out, "stream");
  const keys = join(out, "keys");
  const root = initStream(stream, keys);
  const strangerRoot = initStream(join(out, "stranger"), join(out, "strangerkeys"));
  cpSync(stream, join(out, "stream-empty"), { recursive: true });

  await withLab(
    async (vm) => {
      const S = `${stream}`;
      const k = `--keys ${keys}`;
      await ok(vm, `ksplice stream add ${S} ${a} ${k} --cve CVE-2026-1001`);
      await ok(vm, `ksplice stream add ${S} ${b} ${k} --cve CVE-2026-1002 --name 'B on A'`);
      await ok(vm, `ksplice stream add ${S} ${c} ${k} --cve CVE-2026-1003 --effective 6.1.192-3`);
      await ok(vm, `ksplice stream add ${S} ${otherPkg} ${k}`);
      await ok(vm, `(ksplice stream serve ${S} --port 8080 >/tmp/serve.log 2>&1 &) && sleep 2`);
      await ok(
        vm,
        `mkdir -p /etc/ksplice && cp ${root} /etc/ksplice/root.json && printf '[Network]\\nupdate_repo_url = http://127.0.0.1:8080\\n[Settings]\\nchannel = stable\\n' > /etc/ksplice/uptrack.conf`,
      );
      const cmdline = (await ok(vm, "cat /proc/cmdline")).trim();
      const kernelNow = async () => ({
        cmdline: (await ok(vm, "cat /proc/cmdline")).trim(),
        view: JSON.parse(await ok(vm, "ksplice view --json")).updates.map((u: { id: string }) => u.id),
      });

      // Upgrade: three stacked updates, in order.
      const check = async (code: number) => {
        const r = await sh(vm, "uptrack-show --check");
        assert.equal(r.code, code, `uptrack-show --check: ${r.out}${r.err}`);
      };
      await check(3);
      assert.match(
        await ok(vm, "uptrack-upgrade -n"),
        /^Install \[upa\]\nInstall \[upb\]\nInstall \[upc\]\n/,
      );
      assert.deepEqual((await kernelNow()).view, [], "-n changes nothing");
      assert.match(
        await ok(vm, "uptrack-upgrade -y"),
        /^Installed \[upa\]\nInstalled \[upb\]\nInstalled \[upc\]\n$/,
      );
      assert.deepEqual(await kernelNow(), { cmdline: `C B A ${cmdline}`, view: ["upa", "upb", "upc"] });
      const shown = await ok(vm, "uptrack-show");
      assert.match(
        shown,
        /\[upa\] .* \(CVE-2026-1001\)\n\[upb\] B on A \(CVE-2026-1002\)\n\[upc\] .*CVE-2026-1003/,
      );
      assert.match(shown, /Effective kernel version is 6\.1\.192-3/);
      assert.equal((await ok(vm, "uptrack-uname -r")).trim(), "6.1.192-3");
      assert.match(await ok(vm, "uptrack-uname -a"), /^Linux \S+ 6\.1\.192-3 #1 SMP/);
      assert.equal(await ok(vm, "cat /run/ksplice/effective_version"), "6.1.192-3\n");
      assert.equal(await ok(vm, "cat /run/ksplice/cves"), "CVE-2026-1001\nCVE-2026-1002\nCVE-2026-1003\n");
      const metrics = await ok(vm, "cat /var/lib/prometheus/node-exporter/ksplice.prom");
      assert.match(metrics, /^ksplice_updates_applied 3$/m);
      assert.match(metrics, /^ksplice_state\{state="up_to_date"\} 1$/m);
      await check(0);
      const json = JSON.parse(await ok(vm, "uptrack-show --available --json"));
      assert.deepEqual(
        json.installed.map((u: { id: string }) => u.id),
        ["upa", "upb", "upc"],
      );
      assert.deepEqual(json.available, []);

      // Refusals: nothing changes in the kernel.
      const refused = async (what: string, code: string, cmd = "uptrack-upgrade -y --raw-errors") => {
        const before = await kernelNow();
        const r = await sh(vm, cmd);
        assert.equal(r.code, 1, `${what}: ${r.out}${r.err}`);
        assert.equal(r.err.split("\n")[0], code, `${what}: ${r.err}`);
        assert.deepEqual(await kernelNow(), before, `${what}: the kernel changed`);
        return r.err;
      };
      const ts = join(stream, "metadata/timestamp.json");
      await ok(vm, `cp ${ts} /tmp/old-timestamp.json`);
      await ok(vm, `ksplice stream add ${S} ${d} ${k} --cve CVE-2026-1004`);
      // A tampered update: the package served is not the one signed.
      await ok(
        vm,
        `for f in ${S}/targets/updates/*.upd.tar.gz; do cp $f /tmp/upd.good; echo tampered >> $f; done`,
      );
      assert.match(await refused("a tampered update", "metadata_tampered"), /not what its metadata signed/);
      await ok(vm, `for f in ${S}/targets/updates/*.upd.tar.gz; do cp /tmp/upd.good $f; done`);
      // A replayed old timestamp, after the client saw the newer one.
      await ok(vm, `cp ${ts} /tmp/new-timestamp.json && cp /tmp/old-timestamp.json ${ts}`);
      assert.match(
        await refused("a replayed timestamp", "metadata_rollback"),
        /older than this machine has seen/,
      );
      await ok(vm, `cp /tmp/new-timestamp.json ${ts}`);
      // Expired metadata.
      await ok(vm, `ksplice stream resign ${S} ${k} --expires timestamp=2s && sleep 3`);
      assert.match(await refused("expired metadata", "metadata_expired"), /expired/);
      await ok(vm, `ksplice stream resign ${S} ${k}`);
      // A root the stream is not signed for.
      await ok(vm, `cp /etc/ksplice/root.json /tmp/root.good && cp ${strangerRoot} /etc/ksplice/root.json`);
      await refused("another stream's root", "untrusted_root");
      await ok(vm, "cp /tmp/root.good /etc/ksplice/root.json");
      // An update the stream published for another build of this kernel: not offered here, and
      // refused by apply when given anyway.
      await refused("another kernel's update", "not_in_stream", "uptrack-install upother --raw-errors");
      await refused("another kernel's update", "wrong_kernel", `ksplice apply --raw-errors ${otherPkg}`);

      // Crash consistency: killed at each step, the kernel has the update fully in or fully out,
      // and the next command finds the truth, cleans up and carries on.
      const crash = async (point: string, cmd: string) => {
        // (sh runs the command in its own process: the agent reports it killed by a signal.)
        const r = await sh(vm, `KSPLICE_CRASH_AT=${point} ${cmd}`);
        assert.ok(r.code >= 128, `${point}: the command was to be killed (exit ${r.code}): ${r.out}${r.err}`);
      };
      const leftovers = async () =>
        (
          await ok(
            vm,
            "cut -d' ' -f1 /proc/modules | grep '^ksplice_' | sort | tr '\\n' ' '; ls /var/lib/ksplice/updates | tr '\\n' ' '; echo",
          )
        ).trim();
      await crash("apply:module-loaded", "uptrack-upgrade -y");
      assert.deepEqual(
        (await kernelNow()).view,
        ["upa", "upb", "upc"],
        "D not in after a kill at module load",
      );
      await crash("apply:planned", "uptrack-upgrade -y");
      assert.deepEqual((await kernelNow()).view, ["upa", "upb", "upc"], "D not in after a kill once planned");
      await crash("client:applied", "uptrack-upgrade -y");
      assert.deepEqual(await kernelNow(), {
        cmdline: `D C B A ${cmdline}`,
        view: ["upa", "upb", "upc", "upd"],
      });
      // The list lacked D (killed before recording it): the next command learns it from the core.
      assert.deepEqual(
        JSON.parse(await ok(vm, "uptrack-show --json")).installed.map((u: { id: string }) => u.id),
        ["upa", "upb", "upc", "upd"],
      );
      await crash("undo:reversed", "uptrack-remove upd");
      assert.deepEqual(await kernelNow(), { cmdline: `C B A ${cmdline}`, view: ["upa", "upb", "upc"] });
      await ok(vm, "uptrack-show"); // learns that D is out
      // Killed while writing the list of installed updates (after D went in): the old list stays.
      await crash("client:recording", "uptrack-upgrade -y");
      assert.deepEqual((await kernelNow()).view, ["upa", "upb", "upc", "upd"]);
      assert.deepEqual(
        JSON.parse(await ok(vm, "cat /var/cache/ksplice/installed.json")).updates.map(
          (u: { id: string }) => u.id,
        ),
        ["upa", "upb", "upc"],
      );
      assert.match(await ok(vm, "ls /var/cache/ksplice"), /installed\.json\.partial-/);
      assert.equal((await ok(vm, "uptrack-upgrade -y")).trim(), "Nothing to be done.");
      assert.equal(await leftovers(), "ksplice_upa ksplice_upb ksplice_upc ksplice_upd upa upb upc upd");
      assert.doesNotMatch(await ok(vm, "ls /var/cache/ksplice"), /partial/);
      // A series cut between two updates: the first is in and recorded, the rest follow.
      await ok(vm, "uptrack-remove upc");
      assert.deepEqual((await kernelNow()).view, ["upa", "upb"]);
      await crash("client:between", "uptrack-upgrade -y");
      assert.deepEqual((await kernelNow()).view, ["upa", "upb", "upc"]);
      assert.match(await ok(vm, "uptrack-upgrade -y"), /^Installed \[upd\]\n$/);

      // Everything out again.
      assert.match(
        await ok(vm, "uptrack-remove --all"),
        /^Removed \[upd\]\nRemoved \[upc\]\nRemoved \[upb\]\nRemoved \[upa\]\n$/,
      );
      assert.deepEqual(await kernelNow(), { cmdline, view: [] });
      assert.equal(await leftovers(), "");
      assert.equal(
        await ok(vm, "cat /run/ksplice/effective_version"),
        `${(await ok(vm, "uname -r")).trim()}\n`,
      );
      const log = await ok(vm, "cat /var/log/ksplice.log");
      assert.match(log, /installed upa: /);
      assert.match(log, /upgrade failed: metadata_tampered: /);
      assert.doesNotMatch(await ok(vm, "dmesg"), /WARNING|Oops|BUG:|Call Trace/);
    },
    { paths: lab, withPaths: [out] },
  );
});
