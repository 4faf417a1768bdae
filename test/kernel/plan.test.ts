// Jump planning (src/kernel/plan.ts): where the 5-byte jump goes in a running function and
// which bytes the core must find there, for traceable and plain functions.
import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../../src/errors.js";
import { FTRACE_NOP, planPatch } from "../../src/kernel/plan.js";

const fn = { name: "cmdline_proc_show", addr: 0xffffffff81000000n, size: 64n };
const replacement = { addr: 0xffffffffc0001000n, size: 48n };
const body = [0x55, 0x48, 0x89, 0xe5, 0x41, 0x54];

test("a traceable function keeps its ftrace nop: the jump goes right after it", () => {
  const p = planPatch(fn, Uint8Array.from([...FTRACE_NOP, ...body]), replacement);
  assert.equal(p.site, fn.addr + 5n);
  assert.deepEqual([...p.expected], body.slice(0, 5));
  assert.equal(p.newAddr, replacement.addr);
  assert.deepEqual(
    [p.fstart, p.fsize, p.nstart, p.nsize],
    [fn.addr, fn.size, replacement.addr, replacement.size],
  );
});

test("a function being traced now (its nop is a call) also keeps its ftrace site", () => {
  const p = planPatch(fn, Uint8Array.from([0xe8, 1, 2, 3, 4, ...body]), replacement);
  assert.equal(p.site, fn.addr + 5n);
  assert.deepEqual([...p.expected], body.slice(0, 5));
});

test("a function without an ftrace site is patched at its first byte", () => {
  const head = Uint8Array.from([...body, 0xc3, 0xcc, 0xcc, 0xcc]);
  const p = planPatch(fn, head, replacement);
  assert.equal(p.site, fn.addr);
  assert.deepEqual([...p.expected], body.slice(0, 5));
});

test("a function too short for the jump is refused with no_match", () => {
  assert.throws(
    () => planPatch({ ...fn, size: 8n }, Uint8Array.from([...FTRACE_NOP, ...body]), replacement),
    (e: unknown) =>
      e instanceof UserError && e.code === "no_match" && /8 bytes long: too short/.test(e.message),
  );
  assert.doesNotThrow(() =>
    planPatch({ ...fn, size: 5n }, Uint8Array.from([...body, 0, 0, 0, 0]), replacement),
  );
});
