// `ksplice diff` on small C fixtures compiled with gcc-12 -O2 -ffunction-sections
// -fdata-sections: one scenario per test, pre and post sources side by side.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { type DiffReport, diffObjects, report } from "../../src/diff/index.js";
import { ElfFile } from "../../src/elf/reader.js";
import { assemble, compileC, FIXTURE_CFLAGS, tempDir } from "../helpers/compile.js";

const BIN = fileURLToPath(new URL("../../../bin/ksplice", import.meta.url));

function diffC(pre: string, post: string): DiffReport {
  const dir = tempDir();
  const a = compileC(dir, "pre", pre);
  const b = compileC(dir, "post", post);
  return report(diffObjects(ElfFile.parse(readFileSync(a), a), ElfFile.parse(readFileSync(b), b)));
}

function names(r: DiffReport) {
  const { changed, new: added, removed, dataChanged, newData, removedData } = r;
  return { changed, new: added, removed, dataChanged, newData, removedData };
}

const none = { changed: [], new: [], removed: [], dataChanged: [], newData: [], removedData: [] };

const BASE = `
extern int printk(const char *fmt, ...);
struct item { int key, weight, flags, spare; };
static int helper(int x) { return x * 3 + 1; }
static __attribute__((noinline)) int square(int x) { return x * x + 7; }
int limit = 40;
int compute(int x) { return helper(x) + limit; }
int stable(int x) { return square(x) - 1; }
int announce(int x) { printk("value %d\\n", x); return x; }
`;

test("identical sources: no differences", () => {
  assert.deepEqual(names(diffC(BASE, BASE)), none);
});

test("a changed function is reported, an unchanged one is not", () => {
  const post = BASE.replace("return square(x) - 1;", "return square(x) - 2;");
  assert.deepEqual(names(diffC(BASE, post)), { ...none, changed: ["stable"] });
});

test("a change in an inlined static helper shows in its caller", () => {
  const post = BASE.replace("return x * 3 + 1;", "return x * 5 + 1;");
  const r = diffC(BASE, post);
  assert.deepEqual(r.changed, ["compute"]);
  assert.deepEqual(r.new, []);
});

test("a change in a called (not inlined) static function reports that function only", () => {
  const post = BASE.replace("return x * x + 7;", "return x * x + 9;");
  assert.deepEqual(names(diffC(BASE, post)), { ...none, changed: ["square"] });
});

test("a new function and a removed function", () => {
  const post = `${BASE.replace(/int announce[^\n]*\n/, "")}\nint fresh(int x) { return x ^ 0x55; }\n`;
  assert.deepEqual(names(diffC(BASE, post)), { ...none, new: ["fresh"], removed: ["announce"] });
});

test("a changed string literal changes the function using it", () => {
  const post = BASE.replace("value %d", "value=%d");
  assert.notEqual(post, BASE);
  const r = diffC(BASE, post);
  assert.deepEqual(names(r), { ...none, changed: ["announce"] });
  assert.match(r.details.announce.reason, /value %d/);
});

test("a string literal that only moved is not a change", () => {
  const pre = `${BASE}\nint other(void) { printk("aaa\\n"); return 0; }\n`;
  const post = `${BASE}\nint other(void) { printk("zzz\\n"); return 0; }\n`;
  const r = diffC(pre, post);
  assert.deepEqual(r.changed, ["other"], "only the function whose string changed");
});

test("a change in initialised data is reported as changed data", () => {
  const post = BASE.replace("int limit = 40;", "int limit = 41;");
  assert.deepEqual(names(diffC(BASE, post)), { ...none, dataChanged: ["limit"] });
});

test("a changed function-local static initialiser is changed data, renumbering is not", () => {
  const pre =
    "int f(void) { static int calls = 3; return ++calls; }\nint g(void) { static int hits = 4; return hits += 2; }\n";
  const renumbered = `int h(void) { static int extra; return ++extra; }\n${pre}`;
  const r1 = diffC(pre, renumbered);
  assert.deepEqual(names(r1), { ...none, new: ["h"], newData: [r1.newData[0]] });
  assert.match(r1.newData[0], /^extra\.\d+$/);
  const changedInit = renumbered.replace("hits = 4", "hits = 5");
  const r2 = diffC(pre, changedInit);
  assert.equal(r2.dataChanged.length, 1);
  assert.match(r2.dataChanged[0], /^hits\.\d+$/);
  assert.deepEqual(r2.changed, []);
});

test("names kernel macros number with __COUNTER__ (BTF_ID, __UNIQUE_ID) are not identity", () => {
  // As BTF_ID(struct, x) makes them: a local 4-byte object per use, numbered by __COUNTER__.
  const id = (n: number) =>
    `asm(".pushsection .BTF_ids,\\"a\\"; .local __BTF_ID__struct__item__${n}; .type __BTF_ID__struct__item__${n}, STT_OBJECT; .size __BTF_ID__struct__item__${n}, 4; __BTF_ID__struct__item__${n}: .zero 4; .popsection");\nextern int __BTF_ID__struct__item__${n};\n`;
  const table = (n: number) => `${id(n)}const void *const item_ops[] = { &__BTF_ID__struct__item__${n} };\n`;
  const r = diffC(table(312208), table(312207));
  assert.deepEqual(names(r), none);
  const other = diffC(table(1), `${id(2)}const void *const item_ops[] = { 0 };\n`);
  assert.deepEqual(other.dataChanged, ["item_ops"]);
});

test("a .cold part is compared on its own", () => {
  const pre = `
extern void sink(int);
extern void report_err(const char *) __attribute__((cold));
int check(int x) { if (__builtin_expect(x < 0, 0)) { report_err("negative"); sink(x); sink(x + 1); return -1; } sink(x); return x; }
`;
  // A change in the hot part that keeps its layout (another callee) leaves the cold part alone.
  const hot = pre
    .replace("extern void sink(int);", "extern void sink(int), sunk(int);")
    .replace("sink(x); return x;", "sunk(x); return x;");
  assert.deepEqual(diffC(pre, hot).changed, ["check"]);
  // A change only on the cold path changes only the cold part.
  assert.deepEqual(diffC(pre, pre.replace("sink(x + 1)", "sink(x + 2)")).changed, ["check.cold"]);
  // A change that moves the join point changes both: the cold part jumps back into the hot one.
  const both = diffC(pre, pre.replace("sink(x); return x;", "sink(x + 9); return x;"));
  assert.deepEqual(both.changed, ["check", "check.cold"]);
  assert.match(both.details["check.cold"].reason, /reference check\+\d+ -> check\+\d+/);
});

// Clones: gcc-12 numbers clones per function, so a real renumbering needs a larger file.
// The assembly gcc-12 emits is renamed instead: the same code under another clone number.
const CLONES = `
extern int work(int);
static __attribute__((noinline)) int scale(int x, int k) { int r = 0; for (int i = 0; i < k; i++) r += work(x * i) + (r >> 2); return r; }
int user(int x) { return scale(x, 5); }
`;

function diffAsm(pre: string, post: string): DiffReport {
  const dir = tempDir();
  const a = assemble(dir, "pre", pre);
  const b = assemble(dir, "post", post);
  return report(diffObjects(ElfFile.parse(readFileSync(a), a), ElfFile.parse(readFileSync(b), b)));
}

function gccAsm(source: string): string {
  const dir = tempDir();
  writeFileSync(join(dir, "c.c"), source);
  execFileSync("gcc-12", ["-S", ...FIXTURE_CFLAGS, "-o", join(dir, "c.s"), join(dir, "c.c")]);
  return readFileSync(join(dir, "c.s"), "utf8");
}

test("clone suffixes that change number only are not changes", () => {
  const asm = gccAsm(CLONES);
  assert.match(asm, /scale\.constprop\.0/, "gcc-12 made a constprop clone");
  const renumbered = asm.replaceAll("scale.constprop.0", "scale.constprop.3");
  assert.deepEqual(names(diffAsm(asm, renumbered)), none);
  const isra = asm.replaceAll("scale.constprop.0", "scale.isra.0");
  const isra2 = asm.replaceAll("scale.constprop.0", "scale.isra.1");
  assert.deepEqual(names(diffAsm(isra, isra2)), none);
});

test("two clones whose numbers swapped are paired by content", () => {
  const two = `
extern int work(int);
static __attribute__((noinline)) int scale(int x, int k) { int r = 0; for (int i = 0; i < k; i++) r += work(x * i) + (r >> 2); return r; }
static __attribute__((noinline)) int scale2(int x, int k) { int r = 1; for (int i = 0; i < k; i++) r ^= work(x + i); return r; }
int user(int x) { return scale(x, 5) + scale2(x, 6); }
`;
  const asm = gccAsm(two).replaceAll("scale2.constprop.0", "scale.constprop.1");
  const swapped = asm
    .replaceAll("scale.constprop.0", "TMP")
    .replaceAll("scale.constprop.1", "scale.constprop.0")
    .replaceAll("TMP", "scale.constprop.1");
  assert.deepEqual(names(diffAsm(asm, swapped)), none);
  const changed = swapped.replace(/xorl\t/, "addl\t");
  assert.notEqual(changed, swapped);
  assert.deepEqual(diffAsm(asm, changed).changed, ["scale.constprop.0"]);
});

test("bin/ksplice diff --json prints the sets; the text form lists them; bad input exits 1", () => {
  const dir = tempDir();
  const a = compileC(dir, "pre", BASE);
  const b = compileC(
    dir,
    "post",
    BASE.replace("return square(x) - 1;", "return square(x) - 2;").replace(
      "int limit = 40;",
      "int limit = 4;",
    ),
  );
  const json = spawnSync(BIN, ["diff", a, b, "--json"], { encoding: "utf8" });
  assert.equal(json.status, 0, json.stderr);
  const rep = JSON.parse(json.stdout);
  assert.deepEqual(rep.changed, ["stable"]);
  assert.deepEqual(rep.dataChanged, ["limit"]);
  assert.deepEqual(rep.new, []);
  assert.deepEqual(rep.removed, []);
  const text = spawnSync(BIN, ["diff", a, b], { encoding: "utf8" });
  assert.equal(text.status, 0);
  assert.match(text.stdout, /changed functions \(1\):\n {2}stable/);
  assert.match(text.stdout, /changed data \(1\):\n {2}limit/);
  writeFileSync(join(dir, "junk.o"), "this is not an object file at all, just text\n");
  const bad = spawnSync(BIN, ["diff", a, join(dir, "junk.o")], { encoding: "utf8" });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /junk\.o: malformed ELF at byte offset 0x0: not an ELF file/);
  const usage = spawnSync(BIN, ["diff", a], { encoding: "utf8" });
  assert.equal(usage.status, 2);
});

test("names for one body (as SYSCALL_DEFINE0 makes) are one function, reported by a global name", () => {
  const src = (n: number) => `
extern int counter;
static long do_sys_thing(void) { return counter + ${n}; }
long sys_thing(void) __attribute__((alias("do_sys_thing")));
long ia32_sys_thing(void) __attribute__((alias("do_sys_thing")));
`;
  const dir = tempDir();
  const a = compileC(dir, "pre", src(1));
  const b = compileC(dir, "post", src(2));
  const d = diffObjects(ElfFile.parse(readFileSync(a), a), ElfFile.parse(readFileSync(b), b));
  assert.deepEqual(report(d).changed, ["ia32_sys_thing"]);
  const unit = d.changed[0].post;
  assert.deepEqual(unit.aliases.sort(), ["do_sys_thing", "sys_thing"]);
  // The body's relocation (to counter) belongs to the one unit.
  assert.deepEqual(
    unit.relocs.map((r) => (r.target.kind === "symbol" ? r.target.name : r.target.kind)),
    ["counter"],
  );
});
