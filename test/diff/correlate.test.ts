// correlate (src/diff/correlate.ts) between two builds of one source (`sameSource`): the running
// kernel's plain build and the diffed one. Built here with gcc-12: two dynamic-debug-style
// descriptors in a static function, identical in content; the plain build inlines the function
// into its callers, the diffed one (-fno-inline) keeps it, so the descriptors' owners differ and
// their content cannot tell them apart: only their exact names can.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { correlate, ObjectUnits } from "../../src/diff/index.js";
import { ElfFile } from "../../src/elf/reader.js";
import { compileC, FIXTURE_CFLAGS, tempDir } from "../helpers/compile.js";

const SRC = `
struct desc { const char *func; const char *fmt; int line; };
extern void use(const void *);
#define dbg(fmt) do { static struct desc __attribute__((section("__dyndbg"), used)) __UNIQUE_ID_d = { __func__, fmt, __LINE__ }; use(&__UNIQUE_ID_d); } while (0)
static void helper(int x) { if (x > 3) dbg("x"); else dbg("x"); }
int call_a(int x) { helper(x); return 1; }
int call_b(int x) { helper(x + 1); return 2; }
`;

function builds() {
  const dir = tempDir();
  const load = (p: string) => new ObjectUnits(ElfFile.parse(readFileSync(p), p));
  const plain = load(
    compileC(
      dir,
      "plain",
      SRC,
      FIXTURE_CFLAGS.filter((f) => f !== "-fdata-sections"),
    ),
  );
  const diffed = load(compileC(dir, "pre", SRC, [...FIXTURE_CFLAGS, "-fno-inline"]));
  const descs = (o: ObjectUnits) => o.units.filter((u) => u.name.startsWith("__UNIQUE_ID_d"));
  assert.equal(descs(plain).length, 2);
  assert.notEqual(descs(plain)[0].canon, descs(diffed)[0].canon, "owners differ between the builds");
  return { plain, diffed, descs };
}

test("two builds of one source: numbered data is paired by its exact name", () => {
  const { plain, diffed, descs } = builds();
  const p = correlate(plain, diffed, { sameSource: true });
  for (const u of descs(diffed)) assert.equal(p.partner.get(u)?.name, u.name);
});

test("builds of different sources: numbered names are not identity", () => {
  const { plain, diffed, descs } = builds();
  const p = correlate(plain, diffed);
  assert.deepEqual(
    descs(diffed).map((u) => p.partner.get(u)?.name),
    [undefined, undefined],
  );
});
