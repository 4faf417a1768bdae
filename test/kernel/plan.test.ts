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

test("a jump label or static call site under the jump is refused; one past it is not", () => {
  const traced = Uint8Array.from([...FTRACE_NOP, ...body]);
  const label = (offset: number) => ({
    ...fn,
    runtimeSites: [{ offset, length: 5, table: "__jump_table" }],
  });
  assert.throws(
    () => planPatch(label(5), traced, replacement),
    (e: unknown) =>
      e instanceof UserError &&
      e.code === "unsupported_change" &&
      /jump label \(static key\) site at \+5, where ksplice writes its 5-byte jump \(at \+5\)/.test(
        e.message,
      ),
  );
  assert.throws(() => planPatch(label(8), traced, replacement), /at \+8/);
  assert.equal(planPatch(label(10), traced, replacement).site, fn.addr + 5n);
  // Without an ftrace site the jump is at +0: a static call at +3 is under it.
  const call = { ...fn, runtimeSites: [{ offset: 3, length: 5, table: ".static_call_sites" }] };
  assert.throws(
    () => planPatch(call, Uint8Array.from([...body, 0xc3, 0, 0, 0]), replacement),
    /static call site at \+3/,
  );
});
