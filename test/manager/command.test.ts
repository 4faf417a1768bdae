// `ksplice manager` as a command, in-process: it refuses another address than loopback unless
// told, then without TLS files; on loopback it prints the address with its token, serves the
// page there, and stops when interrupted.
import assert from "node:assert/strict";
import { test } from "node:test";
import { main } from "../../src/cli/main.js";
import { fakeContext } from "../helpers/context.js";

test("ksplice manager: refuses an address off loopback unless told, then needs TLS", async () => {
  const ctx = fakeContext();
  assert.equal(await main(["manager", "--host", "0.0.0.0"], ctx), 2);
  assert.match(ctx.err(), /refusing to serve the manager on 0\.0\.0\.0, which is not a loopback address/);
  const told = fakeContext();
  assert.equal(await main(["manager", "--host", "0.0.0.0", "--allow-remote"], told), 2);
  assert.match(told.err(), /needs TLS: give --tls-cert FILE and --tls-key FILE/);
  const half = fakeContext();
  assert.equal(await main(["manager", "--tls-cert", "c.pem"], half), 2);
  assert.match(half.err(), /--tls-cert and --tls-key go together/);
});

test("ksplice manager: prints the address with its token, serves the page, stops on Ctrl-C", async () => {
  const abort = new AbortController();
  const ctx = { ...fakeContext(), signal: abort.signal };
  const running = main(["manager", "--port", "0"], ctx);
  let url = "";
  for (let i = 0; i < 100 && !url; i++) {
    await new Promise((r) => setTimeout(r, 50));
    url = /http:\/\/127\.0\.0\.1:\d+\/\?token=[0-9a-f]{64}/.exec(ctx.out())?.[0] ?? "";
  }
  assert.ok(url, `printed: ${ctx.out()}`);
  const opened = await fetch(url, { redirect: "manual" });
  assert.equal(opened.status, 303);
  const cookie = (opened.headers.get("set-cookie") ?? "").split(";")[0];
  const r = await fetch(url.replace(/\?token=.*$/, ""), { headers: { cookie } });
  assert.equal(r.status, 200);
  assert.match(await r.text(), /<title>ksplice manager<\/title>/);
  abort.abort();
  assert.equal(await running, 0);
  await assert.rejects(fetch(url), "stopped serving");
});
