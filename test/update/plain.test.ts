// alignToPlain (src/update/plain.ts): the running kernel's build inlines a static function that
// the diffed build keeps out of line. Built here with gcc-12: the "plain" object inlines
// `helper` into both callers, the diffed pre and post keep it. A change to helper then copies
// helper and replaces its callers (the running kernel has no helper to patch); a caller changed
// alone copies the unchanged helper it calls.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { correlate, diffObjects, ObjectUnits } from "../../src/diff/index.js";
import { ElfFile } from "../../src/elf/reader.js";
import { classify } from "../../src/update/classify.js";
import { alignToPlain } from "../../src/update/plain.js";
import { compileC, FIXTURE_CFLAGS, tempDir } from "../helpers/compile.js";

const SRC = `
extern int other(int);
static int helper(int x) { return other(x) * 7 + 1; }
int call_a(int x) { return helper(x) + 2; }
int call_b(int x) { return helper(x) + 3; }
`;

function align(post: string) {
  const dir = tempDir();
  const load = (p: string) => ElfFile.parse(readFileSync(p), p);
  const noInline = [...FIXTURE_CFLAGS, "-fno-inline"];
  const plain = load(compileC(dir, "plain", SRC, FIXTURE_CFLAGS));
  const pre = load(compileC(dir, "pre", SRC, noInline));
  const plan = classify("kernel/demo.o", diffObjects(pre, load(compileC(dir, "post", post, noInline))));
  assert.equal(
    new ObjectUnits(plain).units.some((u) => u.name === "helper"),
    false,
    "plain inlines helper",
  );
  return alignToPlain(plan, correlate(new ObjectUnits(plain), plan.diff.pre));
}

test("a changed function the running kernel has inlined is copied, and its callers replaced", () => {
  const a = align(SRC.replace("* 7 + 1", "* 7 + 5"));
  assert.deepEqual(a.replaced.map((r) => r.post.name).sort(), ["call_a", "call_b"]);
  assert.deepEqual(
    a.added.map((u) => u.name),
    ["helper"],
  );
  assert.deepEqual(a.refusals, []);
  assert.match(a.notes.join("\n"), /helper is inlined into its callers in the running kernel/);
});

test("an unchanged function the new code calls, inlined in the running kernel, is copied", () => {
  const a = align(SRC.replace("helper(x) + 2", "helper(x) + 9"));
  assert.deepEqual(
    a.replaced.map((r) => r.post.name),
    ["call_a"],
  );
  assert.deepEqual(
    a.added.map((u) => u.name),
    ["helper"],
  );
  assert.match(a.notes.join("\n"), /helper, which the new code uses, is inlined or folded away/);
});

// Two lockdep-style keys (empty structs, as `struct lock_class_key` is with lockdep off): the
// plain build, without -fdata-sections, puts both at one .bss offset, and relocations name that
// offset only, so it cannot say which key is which.
const KEYS = `
struct key {};
extern void use(void *, int);
int call_a(int x) { static struct key __key; use(&__key, x); return x + 2; }
int call_b(int x) { static struct key __key; use(&__key, x); return x + 3; }
`;

test("a zero-size object the new code uses, which the running build cannot tell apart, is copied", () => {
  const dir = tempDir();
  const load = (p: string) => ElfFile.parse(readFileSync(p), p);
  const plainFlags = FIXTURE_CFLAGS.filter((f) => f !== "-fdata-sections");
  const plain = load(compileC(dir, "plain", KEYS, plainFlags));
  const pre = load(compileC(dir, "pre", KEYS, FIXTURE_CFLAGS));
  const post = load(compileC(dir, "post", KEYS.replace("x + 2", "x + 5"), FIXTURE_CFLAGS));
  const plan = classify("kernel/demo.o", diffObjects(pre, post));
  const a = alignToPlain(plan, correlate(new ObjectUnits(plain), plan.diff.pre));
  assert.deepEqual(a.refusals, []);
  assert.deepEqual(
    a.replaced.map((r) => r.post.name),
    ["call_a"],
  );
  assert.deepEqual(
    a.addedData.map((u) => [u.name.replace(/\.\d+$/, ""), u.size]),
    [["__key", 0]],
  );
  assert.match(a.notes.join("\n"), /__key\.\d+, which the new code uses, has no bytes/);
});
