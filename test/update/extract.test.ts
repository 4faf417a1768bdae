// Extraction of replacement code (src/update/extract.ts) from small gcc-12 objects, diffed and
// classified as create does: functions in a section of their own name (the kernel's __sched,
// .sched.text) are copied with their neighbours and only the changed ones replace; new data in a
// shared data section is refused; an alternative's replacement is found where its entry says.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { diffObjects } from "../../src/diff/index.js";
import { ElfFile } from "../../src/elf/reader.js";
import { classify } from "../../src/update/classify.js";
import { extractObject } from "../../src/update/extract.js";
import { compileC, FIXTURE_CFLAGS, tempDir } from "../helpers/compile.js";

function extract(pre: string, post: string, exported: (name: string) => boolean = () => false) {
  const dir = tempDir();
  const load = (p: string) => ElfFile.parse(readFileSync(p), p);
  const p = classify(
    "kernel/demo.o",
    diffObjects(
      load(compileC(dir, "pre", pre, FIXTURE_CFLAGS)),
      load(compileC(dir, "post", post, FIXTURE_CFLAGS)),
    ),
  );
  const ext = extractObject({
    object: p.object,
    post: p.diff.post,
    pre: p.diff.pre,
    replaced: p.replaced.map((r) => ({ post: r.post, preName: r.pre.name })),
    added: p.added,
    addedData: p.addedData,
    preNameOf: (u) => p.diff.pairing.partner.get(u)?.name,
    exported,
    updateGlobals: new Set(),
    usedNames: new Set(),
  });
  return { plan: p, ext, out: ElfFile.parse(ext.bytes, "extracted") };
}

const SCHED = `
extern int other(int);
#define __sched __attribute__((__section__(".sched.text")))
static __attribute__((noinline)) int __sched helper(int x) { return other(x) + 1; }
int __sched wait_a(int x) { return helper(x) * 2; }
int __sched wait_b(int x) { return helper(x) * 3; }
`;

test("a changed function of a shared text section is copied with its neighbours; only it replaces", () => {
  const { plan, ext, out } = extract(SCHED, SCHED.replace("helper(x) * 2", "helper(x) * 4"));
  assert.deepEqual(
    plan.replaced.map((r) => r.post.name),
    ["wait_a"],
  );
  assert.deepEqual(ext.refusals, []);
  assert.deepEqual(
    ext.functions.map((f) => [f.name, f.replaces]),
    [["wait_a", "wait_a"]],
  );
  const sched = out.sections.find((s) => s.name.startsWith(".sched.text"));
  assert.ok(sched, "the module object has the .sched.text copy");
  // The whole section: wait_a's call to helper, resolved by the assembler, still lands on helper.
  const pre = ElfFile.parse(ext.bytes, "x");
  assert.equal(sched.size, pre.sections.find((s) => s.name === sched.name)!.size);
  assert.ok(sched.size >= 3n * 8n);
});

test("new data in a data section shared with the kernel's own is copied alone; new per-CPU data is refused", () => {
  const rm = `__attribute__((__section__(".data..read_mostly")))`;
  const base = `int ${rm} knob = 1;\nint get(void) { return knob; }\n`;
  const post = `int ${rm} knob = 1;\nint *${rm} knob2 = &knob;\nint get(void) { return knob + *knob2; }\n`;
  const { ext, out } = extract(base, post);
  assert.deepEqual(ext.refusals, []);
  assert.deepEqual(
    ext.data.map((d) => [d.name, d.section, d.size]),
    [["knob2", ".data..read_mostly", 8]],
  );
  // Only knob2's 8 bytes are copied; its pointer to knob is left for the kernel's knob.
  assert.equal(out.sectionByName(".data..read_mostly")?.size, 8n);
  assert.deepEqual(
    ext.relocs.map((r) => [r.section, r.offset, r.symbol]),
    [
      [".text.get", ext.relocs.find((x) => x.section === ".text.get")?.offset, "knob"],
      [".data..read_mostly", 0, "knob"],
    ].sort(),
  );
  const pcpu = `__attribute__((__section__(".data..percpu")))`;
  const percpu = extract(
    `int ${pcpu} a;\nint get(void) { return a; }\n`,
    `int ${pcpu} a;\nint ${pcpu} b;\nint get(void) { return a + b; }\n`,
  );
  assert.deepEqual(
    percpu.ext.refusals.map((r) => [r.symbol, /new per-CPU variable/.test(r.reason)]),
    [["b", true]],
  );
});

// The kernel's alternative() in miniature: an .altinstructions entry (instr, replacement, cpuid,
// lengths) whose replacement is a jmp to a kernel function, one per function.
const ALT = `
extern void ext_a(void);
extern void ext_b(void);
#define ALT(target) asm volatile("661: .skip 5, 0x90\\n662:\\n" \\
  ".pushsection .altinstructions,\\"a\\"\\n .long 661b - .\\n .long 663f - .\\n .word 1\\n .byte 662b-661b\\n .byte 664f-663f\\n .popsection\\n" \\
  ".pushsection .altinstr_replacement,\\"ax\\"\\n663: jmp " #target "\\n664:\\n .popsection")
int f1(int x) { ALT(ext_a); return x + 1; }
int f2(int x) { ALT(ext_b); return x + 2; }
`;

test("the new code's alternatives are told from a neighbour's in the shared replacement section", () => {
  // f1 changes; its replacement jumps to an export. f2's replacement, copied along in the same
  // section, jumps to a function the kernel does not export: not the new code's, so no refusal.
  const { ext } = extract(ALT, ALT.replace("x + 1", "x + 5"), (n) => n === "ext_a");
  assert.deepEqual(ext.refusals, []);
  assert.deepEqual(
    ext.functions.map((f) => f.name),
    ["f1"],
  );
  // Had f1's own replacement needed ext_b, it would be refused.
  const own = extract(ALT, ALT.replace("x + 1", "x + 5"), () => false);
  assert.deepEqual(
    own.ext.refusals.map((r) => r.symbol),
    ["ext_a"],
  );
});

test("changed const data read only by code is copied, and every function reading it replaced", () => {
  const src = (last: number) => `
static const int table[4] = { 1, 2, 3, ${last} };
int get(int i) { return table[i & 3]; }
int twice(int i) { return table[(i + 1) & 3] * 2; }
int unrelated(int i) { return i + 5; }
`;
  const { plan, ext } = extract(src(4), src(5));
  assert.deepEqual(plan.refusals, []);
  assert.deepEqual(plan.replaced.map((r) => r.post.name).sort(), ["get", "twice"]);
  assert.deepEqual(
    ext.data.map((d) => d.name),
    ["table"],
  );
  assert.match(plan.notes.join("\n"), /^table: its new contents .* read by the replaced get, twice/);
  // Nothing of the kernel's copy is used by the new code: the references stay in the module.
  assert.deepEqual(
    ext.relocs.filter((r) => r.symbol === "table"),
    [],
  );
  // Read through a pointer in other data: the copy would not reach it, so it is refused.
  const viaData = (last: number) => `
static const int t2[2] = { 1, ${last} };
const int *const ptrs[] = { t2 };
int get(int i) { return t2[i & 1]; }
`;
  const refused = extract(viaData(2), viaData(3)).plan.refusals;
  assert.deepEqual(
    refused.map((r) => [r.symbol, /read-only .* is referred to by data \(ptrs\)/.test(r.reason)]),
    [["t2", true]],
  );
});
