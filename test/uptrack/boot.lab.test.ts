// Boot re-apply in the Debian 12 guest with systemd (lab/debian.ts), on a persistent disk:
//   - the repository's units installed and enabled as a package would; a stream of three
//     stacked updates served on the guest's loopback; uptrack-upgrade -y installs them;
//   - the guest reboots with no stream reachable: ksplice.service (from the verified cache
//     alone) has them back, and it finished before the network was brought up;
//   - a boot with ksplice=off on the command line applies nothing and forgets nothing: the next
//     normal boot has them back;
//   - uptrack-remove --all, offline, takes them out, and a reboot keeps them out.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { cacheRoot } from "../../src/files.js";
import { buildSystemImage, type LabVM, labRoot, prepareLab, LabVM as VM } from "../../src/lab/index.js";
import { initStream } from "../../src/stream/index.js";
import { tempDir } from "../helpers/compile.js";
import { ok, sh } from "../helpers/guest.js";
import { updateMaker } from "../helpers/updates.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
const patch = (x: string) => join(REPO, "test/update/fixtures", `cmdline-${x}.patch`);

test("uptrack in the systemd guest: updates come back at boot before the network, offline; ksplice=off; remove --all", {
  timeout: 60 * 60_000,
}, async () => {
  const lab = await prepareLab();
  const out = tempDir();
  const make = updateMaker(lab, out, join(out, "core"));
  const a = await make("upa", patch("a"));
  const b = await make("upb", patch("b"), [patch("a")]);
  const c = await make("upc", patch("c"), [patch("a"), patch("b")]);
  const stream = join(out, "stream");
  const keys = join(out, "keys");
  const root = initStream(stream, keys);
  const system = await buildSystemImage({
    paths: lab,
    labDir: labRoot(cacheRoot()),
    dir: tempDir(),
    withPaths: [out],
  });

  let vm: LabVM | undefined;
  const boot = async (append = "") => {
    vm = await VM.boot({ paths: lab, system, append });
    return vm;
  };
  const reboot = async (g: LabVM, append = "") => {
    // From a timer, so the agent answers before systemd stops it.
    await ok(g, "systemd-run --on-active=1 --timer-property=AccuracySec=100ms systemctl reboot");
    await g.stopped(180_000);
    return boot(append);
  };
  const state = async (g: LabVM) => ({
    cmdline: (await ok(g, "cat /proc/cmdline")).trim().replace(/ ksplice=off$/, ""),
    view: JSON.parse(await ok(g, "ksplice view --json")).updates.map((u: { id: string }) => u.id),
  });
  /** A unit property, from systemctl show. */
  const prop = async (g: LabVM, unit: string, p: string) =>
    (await ok(g, `systemctl show ${unit} -p ${p} --value`)).trim();
  try {
    let g = await boot();
    assert.equal((await ok(g, "cat /proc/1/comm")).trim(), "systemd");
    assert.equal(await prop(g, "ksplice.service", "ActiveState"), "active");
    const cmdline = (await ok(g, "cat /proc/cmdline")).trim();
    const k = `--keys ${keys}`;
    await ok(g, `ksplice stream add ${stream} ${a} ${k} --cve CVE-2026-1001`);
    await ok(g, `ksplice stream add ${stream} ${b} ${k} --cve CVE-2026-1002`);
    await ok(g, `ksplice stream add ${stream} ${c} ${k} --cve CVE-2026-1003 --effective 6.1.192-3`);
    await ok(
      g,
      `mkdir -p /etc/ksplice && cp ${root} /etc/ksplice/root.json && printf '[Network]\\nupdate_repo_url = http://127.0.0.1:8080\\n' > /etc/ksplice/uptrack.conf`,
    );
    await ok(g, `systemd-run --unit=stream ksplice stream serve ${stream} --port 8080 && sleep 3`);
    assert.match(
      await ok(g, "uptrack-upgrade -y"),
      /^Installed \[upa\]\nInstalled \[upb\]\nInstalled \[upc\]\n$/,
    );
    const applied = { cmdline: `C B A ${cmdline}`, view: ["upa", "upb", "upc"] };
    assert.deepEqual(await state(g), applied);

    // Restart with no stream: the transient unit serving it is gone with the boot.
    g = await reboot(g);
    assert.deepEqual(await state(g), applied, "the updates are back after the restart");
    assert.equal(await prop(g, "ksplice.service", "ActiveState"), "active");
    assert.equal(await prop(g, "ksplice.service", "ExecMainStatus"), "0");
    const done = Number(await prop(g, "ksplice.service", "ExecMainExitTimestampMonotonic"));
    const net = Number(await prop(g, "networking.service", "ExecMainStartTimestampMonotonic"));
    const pre = Number(await prop(g, "network-pre.target", "ActiveEnterTimestampMonotonic"));
    assert.ok(
      done > 0 && net > 0 && pre > 0,
      `timestamps: ksplice ${done}, network-pre ${pre}, networking ${net}`,
    );
    assert.ok(
      done <= pre && pre <= net,
      `ksplice finished at ${done} µs, network-pre at ${pre}, networking started at ${net}`,
    );
    const log = await ok(g, "cat /var/log/ksplice.log");
    assert.match(log, /boot: re-applied upa: /);
    assert.match(log, /boot: re-applied upc: /);
    // Offline, the client still knows what is installed, and says the stream cannot be reached.
    const shown = await sh(g, "uptrack-show --check");
    assert.equal(shown.code, 1, `${shown.out}${shown.err}`);
    assert.match(shown.err, /stream/);
    assert.deepEqual(
      JSON.parse(await ok(g, "uptrack-show --json")).installed.map((u: { id: string }) => u.id),
      ["upa", "upb", "upc"],
    );

    // ksplice=off: nothing applied, nothing forgotten.
    g = await reboot(g, "ksplice=off");
    assert.deepEqual(await state(g), { cmdline, view: [] });
    assert.equal(await prop(g, "ksplice.service", "ConditionResult"), "no");
    assert.deepEqual(JSON.parse(await ok(g, "uptrack-show --json")).installed, []);
    g = await reboot(g);
    assert.deepEqual(await state(g), applied, "back after the ksplice=off boot");

    // Everything out, offline; a restart keeps them out.
    assert.match(
      await ok(g, "uptrack-remove --all"),
      /^Removed \[upc\]\nRemoved \[upb\]\nRemoved \[upa\]\n$/,
    );
    assert.deepEqual(await state(g), { cmdline, view: [] });
    g = await reboot(g);
    assert.deepEqual(await state(g), { cmdline, view: [] });
    assert.equal(await prop(g, "ksplice.service", "ActiveState"), "active");
    assert.doesNotMatch(await ok(g, "dmesg"), /WARNING|Oops|BUG:|Call Trace/);
  } finally {
    await vm?.shutdown();
  }
});
