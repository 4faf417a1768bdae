// The manager page in a real browser (headless Chromium), served on the host's loopback with a
// fake machine: what a person sees of the state, progress arriving live while an action runs and
// its closing message, the confirmation before a removal, errors with what to do, the page on a
// phone-sized screen, and the page without its token. Screenshots of each state are left in
// test-output/manager (see browser.ts).
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import { UserError } from "../../src/errors.js";
import { type Manager, startManager } from "../../src/manager/index.js";
import { launchBrowser, screenshotDir, shown } from "./browser.js";
import { FakeMachine } from "./fake.js";

let browser: Browser;
const shots = screenshotDir();

before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** session serves a fake machine and opens the printed address in a new page. */
async function session(
  fake = new FakeMachine(),
  viewport = { width: 1280, height: 900 },
): Promise<{ fake: FakeMachine; m: Manager; page: Page; done: () => Promise<void> }> {
  const m = await startManager({ backend: fake });
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  await page.goto(m.url);
  await page.locator("#status[data-state]:not([data-state=loading])").waitFor();
  return {
    fake,
    m,
    page,
    done: async () => {
      await context.close();
      await m.close();
      assert.deepEqual(errors, [], "the page logged no errors");
    },
  };
}

const text = (page: Page, sel: string) => shown(page.locator(sel));
const ids = (page: Page, list: string) =>
  page.locator(`#${list} article.update`).evaluateAll((els) => els.map((e) => e.getAttribute("data-id")));

test("manager page: shows the kernel, its effective version, what is applied and what is available", async () => {
  const s = await session();
  try {
    const { page } = s;
    assert.equal(new URL(page.url()).search, "", "the token left the address bar");
    assert.equal(await text(page, "#status-text"), "2 updates available");
    assert.equal(await text(page, "#release"), "6.1.0-50-cloud-amd64");
    assert.equal(await text(page, "#effective"), "6.1.176-1");
    assert.match(await text(page, "#last-check"), /\(12 min ago\)/);
    assert.deepEqual(await ids(page, "available"), ["upb", "upc"]);
    assert.deepEqual(await ids(page, "applied"), ["upa"]);
    const upb = page.locator('#available article[data-id="upb"]');
    assert.match(await shown(upb), /overlayfs: fix the options shown in \/proc\/mounts/);
    assert.match(await shown(upb), /CVE-2026-1002[\s\S]*CVE-2026-1005/);
    assert.match(await shown(upb), /Stacks on upa/);
    const upa = await shown(page.locator('#applied article[data-id="upa"]'));
    assert.match(upa, /CVE-2026-1001/);
    assert.match(upa, /212 µs/);
    assert.match(upa, /1 function\(s\): cmdline_proc_show/);
    assert.match(upa, /kernel image only/);
    assert.match(upa, /\(3 h ago\)/);
    assert.match(await text(page, "#log"), /installed upa: proc: show the boot command line with A/);
    assert.ok(await page.locator("#install-all").isEnabled());
    assert.ok(await page.locator("#problem").isHidden());
    await page.screenshot({ path: join(shots, "laptop-updates-available.png"), fullPage: true });
  } finally {
    await s.done();
  }
});

test("manager page: install all shows progress live, then the CLI's message and an up-to-date kernel", async () => {
  const fake = new FakeMachine();
  let release!: () => void;
  fake.gate = new Promise((r) => {
    release = r;
  });
  const s = await session(fake);
  try {
    const { page } = s;
    await page.click("#install-all");
    // While the action runs: its first line is there, every button is off.
    await page.locator("#progress-lines", { hasText: "checking the stream" }).waitFor();
    assert.equal(await text(page, "#progress-title"), "Installing every available update…");
    assert.ok(await page.locator("#check").isDisabled());
    assert.ok(await page.locator('#available article[data-id="upc"] button').isDisabled());
    assert.equal(await text(page, "#progress-result"), "");
    await page.screenshot({ path: join(shots, "laptop-installing.png"), fullPage: true });
    release();
    await page.locator("#progress-result.ok").waitFor();
    assert.equal(await text(page, "#progress-result"), "Installed [upb]\nInstalled [upc]");
    assert.match(await text(page, "#progress-lines"), /installing upc: tcp: bound tcp_reordering/);
    await page.locator("#status[data-state=up_to_date]").waitFor();
    assert.equal(await text(page, "#status-text"), "Up to date");
    assert.equal(await text(page, "#effective"), "6.1.192-3");
    assert.deepEqual(await ids(page, "applied"), ["upa", "upb", "upc"]);
    assert.equal(await text(page, "#available"), "None.");
    assert.ok(await page.locator("#install-all").isDisabled(), "nothing left to install");
    assert.ok(await page.locator("#check").isEnabled());
    await page.screenshot({ path: join(shots, "laptop-up-to-date.png"), fullPage: true });
  } finally {
    await s.done();
  }
});

test("manager page: install one update by its button", async () => {
  const s = await session();
  try {
    const { page, fake } = s;
    await page.click('#available article[data-id="upc"] button');
    await page.locator("#progress-result.ok").waitFor();
    assert.equal(await text(page, "#progress-result"), "Installed [upc]");
    await page.locator('#applied article[data-id="upc"]').waitFor();
    assert.deepEqual(await ids(page, "available"), ["upb"]);
    assert.deepEqual(fake.calls, ["install"]);
  } finally {
    await s.done();
  }
});

test("manager page: remove asks first; Cancel changes nothing, Remove removes", async () => {
  const s = await session();
  try {
    const { page, fake } = s;
    await page.click('#applied article[data-id="upa"] button');
    const dialog = page.locator("dialog#confirm");
    await dialog.waitFor({ state: "visible" });
    assert.equal(await text(page, "#confirm-title"), "Remove upa?");
    assert.match(await text(page, "#confirm-text"), /every update that stacks on it/);
    await page.screenshot({ path: join(shots, "laptop-confirm-remove.png") });
    await page.click("#confirm-cancel");
    await dialog.waitFor({ state: "hidden" });
    assert.deepEqual(fake.calls, [], "cancel removed nothing");
    assert.deepEqual(await ids(page, "applied"), ["upa"]);
    await page.click('#applied article[data-id="upa"] button');
    await page.click("#confirm-remove");
    await page.locator("#progress-result.ok").waitFor();
    assert.equal(await text(page, "#progress-result"), "Removed [upa]");
    await page.locator("#applied p.empty").waitFor();
    assert.equal(await text(page, "#applied"), "No updates applied.");
    assert.deepEqual(fake.calls, ["remove"]);
  } finally {
    await s.done();
  }
});

test("manager page: errors are shown plainly, with what to do", async () => {
  const s = await session();
  try {
    const { page, fake } = s;
    // The stream is down.
    fake.failNext.check = new UserError(
      "refreshing the stream's metadata: the stream cannot be reached (fetch failed: connect ECONNREFUSED 127.0.0.1:8080)",
      { code: "stream_unreachable" },
    );
    await page.click("#check");
    await page.locator("#problem").waitFor({ state: "visible" });
    assert.equal(await text(page, "#problem-title"), "The stream cannot be reached");
    assert.match(await text(page, "#problem-message"), /ECONNREFUSED 127\.0\.0\.1:8080/);
    assert.match(await text(page, "#problem-hint"), /update_repo_url in \/etc\/ksplice\/uptrack\.conf/);
    assert.equal(await text(page, "#progress-result"), "Failed: stream_unreachable");
    await page.locator("#status[data-state=error]").waitFor();
    assert.equal(await text(page, "#status-text"), "The last check failed");
    assert.match(await text(page, "#log"), /check failed: stream_unreachable/);
    await page.screenshot({ path: join(shots, "laptop-error-unreachable.png"), fullPage: true });
    // Verification failure.
    fake.failNext.install = new UserError(
      "fetching updates/upb.tar.gz: what the stream served is not what its metadata signed (hash mismatch): tampered or corrupt",
      { code: "metadata_tampered" },
    );
    await page.click('#available article[data-id="upb"] button');
    await page.locator("#problem-title", { hasText: "The stream failed verification" }).waitFor();
    assert.match(await text(page, "#problem-hint"), /nothing was installed.*tell the stream's publisher/i);
    // A busy function: the tasks are named.
    fake.failNext.install = new UserError(
      "ksplice apply upc: code_busy: the code is in use by cat (pid 812) in pipe_read+0x3df/0x4a0; try again when the task(s) have left it",
      { code: "code_busy" },
    );
    await page.click('#available article[data-id="upc"] button');
    await page.locator("#problem-title", { hasText: "The code to replace is in use" }).waitFor();
    assert.match(await text(page, "#problem-message"), /cat \(pid 812\) in pipe_read\+0x3df/);
    assert.match(await text(page, "#problem-hint"), /Try again in a moment/);
    assert.deepEqual(await ids(page, "applied"), ["upa"], "nothing was installed");
    await page.screenshot({ path: join(shots, "laptop-error-code-busy.png"), fullPage: true });
    // A success clears it.
    await page.click("#check");
    await page.locator("#progress-result.ok").waitFor();
    assert.ok(await page.locator("#problem").isHidden());
    assert.equal(await text(page, "#status-text"), "2 updates available");
  } finally {
    await s.done();
  }
});

test("manager page: readable on a phone-sized screen, nothing wider than it", async () => {
  const s = await session(new FakeMachine(), { width: 390, height: 844 });
  try {
    const { page } = s;
    const width = await page.evaluate(() => ({
      page: document.documentElement.scrollWidth,
      view: window.innerWidth,
      wide: [...document.querySelectorAll("body *")]
        .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
        .map((e) => `${e.tagName}#${e.id}.${e.className}`),
    }));
    assert.deepEqual(width.wide, [], "every element fits the screen");
    assert.ok(width.page <= width.view, `page ${width.page}px wide on a ${width.view}px screen`);
    // The buttons are big enough to tap.
    for (const sel of ["#check", "#install-all", '#available article[data-id="upb"] button']) {
      const box = (await page.locator(sel).boundingBox())!;
      assert.ok(box.height >= 32, `${sel} is ${box.height}px high`);
    }
    const size = await page
      .locator("#status-text")
      .evaluate((e) => Number.parseFloat(getComputedStyle(e).fontSize));
    assert.ok(size >= 16, `the status is ${size}px`);
    await page.screenshot({ path: join(shots, "phone-updates-available.png"), fullPage: true });
    await page.click('#applied article[data-id="upa"] button');
    await page.locator("dialog#confirm").waitFor({ state: "visible" });
    await page.screenshot({ path: join(shots, "phone-confirm-remove.png") });
  } finally {
    await s.done();
  }
});

test("manager page: without the token, it says how to get in", async () => {
  const m = await startManager({ backend: new FakeMachine() });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const r = await page.goto(m.url.replace(/\?token=.*$/, ""));
    assert.equal(r?.status(), 401);
    assert.match(await shown(page.locator("#denied")), /Open the address that ksplice manager printed/);
    await page.screenshot({ path: join(shots, "laptop-no-token.png") });
  } finally {
    await context.close();
    await m.close();
  }
});
