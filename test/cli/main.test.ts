// The CLI's dispatch and exit codes, driven in-process through an injected context.
import assert from "node:assert/strict";
import { test } from "node:test";
import { main } from "../../src/cli/main.js";
import { fakeContext } from "../helpers/context.js";

test("no command prints usage and exits 2", async () => {
  const ctx = fakeContext();
  assert.equal(await main([], ctx), 2);
  assert.match(ctx.out(), /usage: ksplice <command>/);
});

test("an unknown command is a usage error naming it", async () => {
  const ctx = fakeContext();
  assert.equal(await main(["frobnicate"], ctx), 2);
  assert.match(ctx.err(), /unknown command 'frobnicate'/);
});
