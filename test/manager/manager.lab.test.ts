// The manager end to end, in Debian's running kernel (QEMU, the busybox guest): a stream of two
// stacked updates of /proc/cmdline served on the guest's loopback, `ksplice manager` running in
// the guest over TLS on its NIC (told --allow-remote), reached from the host only through QEMU
// forwarding a host 127.0.0.1 port into the guest (restricted user network). Headless Chromium
// on the host checks the stream, installs one update by its button, then the rest with Install
// all, and removes the first (confirmed), which takes out the one stacked on it; after each
// step `ksplice view` in the guest and /proc/cmdline say the page told the truth.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Page } from "playwright-core";
import { prepareLab, withLab } from "../../src/lab/index.js";
import { initStream } from "../../src/stream/index.js";
import { tempDir } from "../helpers/compile.js";
import { ok } from "../helpers/guest.js";
import { updateMaker } from "../helpers/updates.js";
import { launchBrowser, screenshotDir, shown } from "./browser.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
const FIX = join(REPO, "test/update/fixtures");
const patch = (x: string) => join(FIX, `cmdline-${x}.patch`);
const GUEST_PORT = 8470;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

test("manager: the page checks, installs and removes updates of the running lab kernel", {
  timeout: 45 * 60_000,
}, async () => {
  const lab = await prepareLab();
  const out = tempDir();
  const make = updateMaker(lab, out, join(out, "core"));
  const a = await make("upa", patch("a"));
  const b = await make("upb", patch("b"), [patch("a")]);
  const stream = join(out, "stream");
  const keys = join(out, "keys");
  const root = initStream(stream, keys);
  // The manager's certificate, for the address the browser uses (the forwarded port).
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
      .concat(["-addext", "subjectAltName=IP:127.0.0.1"])
      .concat(["-keyout", join(out, "key.pem"), "-out", join(out, "cert.pem")]),
    { stdio: "ignore" },
  );
  const hostPort = await freePort();
  const shots = screenshotDir();
  const browser = await launchBrowser();
  try {
    await withLab(
      async (vm) => {
        const k = `--keys ${keys}`;
        await ok(vm, `ksplice stream add ${stream} ${a} ${k} --cve CVE-2026-1001 --name 'A first'`);
        await ok(
          vm,
          `ksplice stream add ${stream} ${b} ${k} --cve CVE-2026-1002 --name 'B on A' --effective 6.1.192-3`,
        );
        await ok(vm, `(ksplice stream serve ${stream} --port 8080 >/tmp/serve.log 2>&1 &) && sleep 2`);
        await ok(
          vm,
          `mkdir -p /etc/ksplice && cp ${root} /etc/ksplice/root.json && printf '[Network]\\nupdate_repo_url = http://127.0.0.1:8080\\n[Settings]\\nchannel = stable\\n' > /etc/ksplice/uptrack.conf`,
        );
        const cmdline = (await ok(vm, "cat /proc/cmdline")).trim();
        // The NIC QEMU forwards the host's port to.
        await ok(
          vm,
          "modprobe virtio_pci && modprobe virtio_net && for i in $(seq 150); do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done; ls /sys/class/net; ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0",
        );
        await ok(
          vm,
          `(ksplice manager --host 10.0.2.15 --port ${GUEST_PORT} --allow-remote --tls-cert ${out}/cert.pem --tls-key ${out}/key.pem >/tmp/manager.log 2>&1 &) && for i in $(seq 120); do grep -q token= /tmp/manager.log && break; sleep 0.5; done; cat /tmp/manager.log`,
        );
        const printed = await ok(vm, "cat /tmp/manager.log");
        const m = /https:\/\/10\.0\.2\.15:8470\/\?token=([0-9a-f]{64})/.exec(printed);
        assert.ok(m, `the manager printed its address:\n${printed}`);
        const view = async () =>
          JSON.parse(await ok(vm, "ksplice view --json")).updates.map((u: { id: string }) => u.id);

        const context = await browser.newContext({
          ignoreHTTPSErrors: true,
          viewport: { width: 1280, height: 900 },
        });
        const page: Page = await context.newPage();
        page.setDefaultTimeout(10 * 60_000);
        await page.goto(`https://127.0.0.1:${hostPort}/?token=${m[1]}`);
        await page.locator("#status[data-state]:not([data-state=loading])").waitFor();
        const text = (sel: string) => shown(page.locator(sel));
        const finish = async () => {
          await page.locator("#progress-result.ok, #progress-result.bad").waitFor();
          const result = await text("#progress-result");
          assert.ok(
            await page.locator("#problem").isHidden(),
            `${result}: ${await shown(page.locator("#problem"))}`,
          );
          // The page redraws from the machine after the action.
          await page.locator("#check:not([disabled])").waitFor();
          return result;
        };
        assert.equal(await text("#status-text"), "Not checked yet: press Check now");
        assert.equal(await text("#release"), (await ok(vm, "uname -r")).trim());

        // Check now: what the stream offers, as uptrack-show --available prints it.
        await page.click("#check");
        assert.equal(
          await finish(),
          "Available updates:\n[upa] A first (CVE-2026-1001)\n[upb] B on A (CVE-2026-1002)",
        );
        await page.locator("#status[data-state=updates_available]").waitFor();
        assert.equal(await text("#status-text"), "2 updates available");
        await page.screenshot({ path: join(shots, "lab-updates-available.png"), fullPage: true });

        // Install one.
        await page.click('#available article[data-id="upa"] button');
        await page.locator("#progress-lines", { hasText: "installing upa: A first" }).waitFor();
        assert.equal(await finish(), "Installed [upa]");
        assert.deepEqual(await view(), ["upa"]);
        assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), `A ${cmdline}`);
        const upa = await shown(page.locator('#applied article[data-id="upa"]'));
        assert.match(upa, /CVE-2026-1001/);
        assert.match(upa, /cmdline_proc_show/);
        assert.match(upa, /\d+ µs/);

        // Install all: the rest.
        await page.click("#install-all");
        assert.equal(await finish(), "Installed [upb]");
        assert.deepEqual(await view(), ["upa", "upb"]);
        assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), `B A ${cmdline}`);
        await page.locator("#status[data-state=up_to_date]").waitFor();
        assert.equal(await text("#effective"), "6.1.192-3");
        assert.match(await text("#log"), /installed upb: B on A/);
        await page.screenshot({ path: join(shots, "lab-up-to-date.png"), fullPage: true });

        // Remove the first, confirmed: the one stacked on it goes first.
        await page.click('#applied article[data-id="upa"] button');
        await page.locator("dialog#confirm").waitFor({ state: "visible" });
        await page.click("#confirm-remove");
        assert.equal(await finish(), "Removed [upb]\nRemoved [upa]");
        assert.deepEqual(await view(), []);
        assert.equal((await ok(vm, "cat /proc/cmdline")).trim(), cmdline);
        assert.equal(await text("#applied"), "No updates applied.");
        await page.locator("#status[data-state=updates_available]").waitFor();
        assert.equal((await ok(vm, "uptrack-uname -r")).trim(), (await ok(vm, "uname -r")).trim());
        await context.close();
        assert.doesNotMatch(await ok(vm, "dmesg"), /WARNING|Oops|BUG:|Call Trace/);
      },
      {
        paths: lab,
        withPaths: [out],
        modules: ["virtio_pci", "virtio_net"],
        forward: { hostPort, guestPort: GUEST_PORT },
      },
    );
  } finally {
    await browser.close();
  }
});
