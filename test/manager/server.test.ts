// The manager server's guard and protocol, over real HTTP on loopback with a fake machine: the
// token (cookie after opening the printed address), the checks on changes (token header, same
// origin, JSON, loopback Host), the refusal of other addresses without TLS, actions one at a
// time, and progress as server-sent events ending with the CLI's message.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { test } from "node:test";
import { UserError } from "../../src/errors.js";
import { isLoopback, type Manager, startManager } from "../../src/manager/index.js";
import { tempDir } from "../helpers/compile.js";
import { FakeMachine } from "./fake.js";

async function open(m: Manager): Promise<string> {
  const r = await fetch(m.url, { redirect: "manual" });
  assert.equal(r.status, 303);
  assert.equal(r.headers.get("location"), "/");
  const cookie = r.headers.get("set-cookie") ?? "";
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Strict/);
  return cookie.split(";")[0];
}

const base = (m: Manager) => m.url.replace(/\/\?token=.*$/, "");

function post(m: Manager, cookie: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(`${base(m)}/api/actions`, {
    method: "POST",
    headers: {
      cookie,
      "content-type": "application/json",
      "x-ksplice-token": m.token,
      origin: base(m),
      ...headers,
    },
    body: JSON.stringify(body),
  });
}

/** events reads a job's server-sent events until the stream ends. */
async function events(m: Manager, cookie: string, path: string) {
  const r = await fetch(`${base(m)}${path}`, { headers: { cookie } });
  assert.equal(r.headers.get("content-type"), "text/event-stream");
  const text = await r.text();
  return text
    .split("\n\n")
    .filter(Boolean)
    .map((block) => {
      const [ev, data] = block.split("\n");
      return { event: ev.replace("event: ", ""), data: JSON.parse(data.replace("data: ", "")) };
    });
}

test("manager: the page and the state need the printed token; opening the address sets a cookie", async () => {
  const m = await startManager({ backend: new FakeMachine() });
  try {
    assert.match(m.url, /^http:\/\/127\.0\.0\.1:\d+\/\?token=[0-9a-f]{64}$/);
    const anon = await fetch(base(m));
    assert.equal(anon.status, 401);
    assert.match(await anon.text(), /This page needs its token/);
    assert.equal((await fetch(`${base(m)}/api/state`)).status, 401);
    const wrong = await fetch(`${base(m)}/?token=${"0".repeat(64)}`, { redirect: "manual" });
    assert.equal(wrong.status, 403);
    const cookie = await open(m);
    const page = await fetch(base(m), { headers: { cookie } });
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
    assert.match(await page.text(), new RegExp(`<meta name="ksplice-token" content="${m.token}">`));
    const state = await (await fetch(`${base(m)}/api/state`, { headers: { cookie } })).json();
    assert.equal(state.kernel.release, "6.1.0-50-cloud-amd64");
    assert.deepEqual(
      state.available.map((u: { id: string }) => u.id),
      ["upb", "upc"],
    );
  } finally {
    await m.close();
  }
});

test("manager: a change needs the token header, the same origin and JSON; a foreign Host is refused", async () => {
  const fake = new FakeMachine();
  const m = await startManager({ backend: fake });
  try {
    const cookie = await open(m);
    const noHeader = await post(m, cookie, { action: "check" }, { "x-ksplice-token": "" });
    assert.equal(noHeader.status, 403);
    const crossSite = await post(m, cookie, { action: "check" }, { origin: "https://evil.example" });
    assert.equal(crossSite.status, 403);
    assert.match((await crossSite.json()).error.message, /another site/);
    const form = await fetch(`${base(m)}/api/actions`, {
      method: "POST",
      headers: { cookie, "x-ksplice-token": m.token, "content-type": "application/x-www-form-urlencoded" },
      body: "action=check",
    });
    assert.equal(form.status, 415);
    assert.equal((await post(m, "", { action: "check" })).status, 401, "no cookie");
    assert.equal((await post(m, cookie, { action: "remove", ids: "all" })).status, 400);
    assert.deepEqual(fake.calls, [], "nothing ran");
    // DNS rebinding: a page of another name that resolves to 127.0.0.1.
    const port = Number(new URL(m.url).port);
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port, path: "/api/state", headers: { host: `evil.example:${port}`, cookie } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", reject);
      req.end();
    });
    assert.equal(status, 403);
  } finally {
    await m.close();
  }
});

test("manager: an action streams its progress and ends with the CLI's message; one at a time", async () => {
  const fake = new FakeMachine();
  let release!: () => void;
  fake.gate = new Promise((r) => {
    release = r;
  });
  const m = await startManager({ backend: fake });
  try {
    const cookie = await open(m);
    const r = await post(m, cookie, { action: "install", ids: "all" });
    assert.equal(r.status, 202);
    const job = await r.json();
    const second = await post(m, cookie, { action: "check" });
    assert.equal(second.status, 409);
    assert.equal((await second.json()).error.code, "busy");
    const got = events(m, cookie, job.events);
    release();
    const evs = await got;
    assert.deepEqual(
      evs.filter((e) => e.event === "progress").map((e) => e.data.line),
      [
        "checking the stream",
        "installing upb: overlayfs: fix the options shown in /proc/mounts",
        "upb: matched 1 function against the running kernel",
        "installing upc: tcp: bound tcp_reordering",
        "upc: matched 1 function against the running kernel",
      ],
    );
    assert.deepEqual(evs.at(-1), {
      event: "done",
      data: { ok: true, message: "Installed [upb]\nInstalled [upc]" },
    });
    // A later subscriber gets the whole story again.
    assert.deepEqual(await events(m, cookie, job.events), evs);
    // A failure ends with the problem and what to do.
    fake.failNext.remove = new UserError(
      "ksplice undo upb: code_busy: the code is in use by cat (pid 80) in pipe_read+0x3df/0x4a0",
      {
        code: "code_busy",
      },
    );
    const failed = await (await post(m, cookie, { action: "remove", ids: ["upb"] })).json();
    const end = (await events(m, cookie, failed.events)).at(-1)!;
    assert.equal(end.data.ok, false);
    assert.equal(end.data.problem.code, "code_busy");
    assert.match(end.data.problem.message, /cat \(pid 80\)/);
    assert.match(end.data.problem.hint, /Try again in a moment/);
  } finally {
    await m.close();
  }
});

test("manager: another address is refused unless allowed, and then needs TLS", async () => {
  assert.ok(
    isLoopback("127.0.0.1") && isLoopback("::1") && isLoopback("localhost") && isLoopback("127.0.0.2"),
  );
  assert.ok(!isLoopback("0.0.0.0") && !isLoopback("10.0.2.15") && !isLoopback("::"));
  await assert.rejects(
    startManager({ backend: new FakeMachine(), host: "0.0.0.0" }),
    /not a loopback address.*--allow-remote/,
  );
  await assert.rejects(
    startManager({ backend: new FakeMachine(), host: "0.0.0.0", allowRemote: true }),
    /needs TLS: give --tls-cert FILE and --tls-key FILE/,
  );
});

test("manager: served over TLS with the given certificate", async () => {
  const dir = tempDir();
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
    ].concat(["-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")]),
    { stdio: "ignore" },
  );
  const m = await startManager({
    backend: new FakeMachine(),
    tls: { cert: readFileSync(join(dir, "cert.pem")), key: readFileSync(join(dir, "key.pem")) },
  });
  try {
    assert.match(m.url, /^https:\/\/127\.0\.0\.1:\d+\/\?token=/);
    const { get } = await import("node:https");
    const res = await new Promise<{ status: number; cookie: string }>((resolve, reject) =>
      get(m.url, { ca: readFileSync(join(dir, "cert.pem")) }, (r) => {
        r.resume();
        resolve({ status: r.statusCode ?? 0, cookie: String(r.headers["set-cookie"]) });
      }).on("error", reject),
    );
    assert.equal(res.status, 303);
    assert.match(res.cookie, /; Secure/);
  } finally {
    await m.close();
  }
});
