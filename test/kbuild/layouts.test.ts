// Structure layouts (src/kbuild/layouts.ts): the definitions and members a preprocessed
// translation unit has, and gcc-12's own answer to the probe made from them, compared pre
// against post: a new field, a moved one, a bigger structure are changes; a renamed field of
// the same type, or a comment, is not.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ElfFile } from "../../src/elf/reader.js";
import {
  bodiesTouched,
  definitionsOf,
  type Layout,
  layoutChange,
  layoutOf,
  probeSource,
} from "../../src/kbuild/layouts.js";
import { tempDir } from "../helpers/compile.js";

const SOURCE = `
struct list { struct list *next, *prev; };
struct demo {
	int x;
	char *p, q[4];
	void (*fn)(int);
	struct { int in1; };
	union { long u1; char u2; } __attribute__((aligned(8)));
	struct inner { int z; } nested;
	unsigned bits : 3;
	struct list link;
	int __attribute__((aligned(16))) late;
	int flex[];
};
typedef struct { unsigned int a; } plain_t;
static int use(void) { struct local { int hidden; } l = { 1 }; return l.hidden; }
`;

/** layouts preprocesses C with gcc-12 and lays out each definition through the probe. */
function layouts(source: string): Map<string, Layout> {
  const dir = tempDir();
  const c = join(dir, "t.c");
  writeFileSync(c, source);
  const pre = execFileSync("gcc-12", ["-E", "-P", c], { encoding: "utf8" });
  const defs = [...definitionsOf(pre).values()];
  writeFileSync(c, `${source}\n${probeSource(defs)}\n`);
  execFileSync("gcc-12", ["-c", "-O2", "-o", join(dir, "t.o"), c]);
  const elf = ElfFile.open(join(dir, "t.o"));
  try {
    return new Map(
      defs.map((d, n) => {
        const sym = elf.symbols.find((s) => s.name === `ksplice_layout_probe_${n}`)!;
        const data = Buffer.from(elf.sectionData(elf.sections[sym.shndx]));
        const values = Array.from({ length: Number(sym.size) / 8 }, (_, k) =>
          data.readBigUInt64LE(Number(sym.value) + 8 * k),
        );
        return [d.key, layoutOf(d, values)];
      }),
    );
  } finally {
    elf.close();
  }
}

test("definitions and their members: anonymous ones brought up, bitfields and flexible arrays left out", () => {
  const defs = definitionsOf(execFileSync("gcc-12", ["-E", "-P", "-"], { input: SOURCE, encoding: "utf8" }));
  assert.deepEqual([...defs.keys()], ["struct list", "struct demo", "struct inner", "typedef plain_t"]);
  assert.deepEqual(defs.get("struct demo")!.members, [
    "x",
    "p",
    "q",
    "fn",
    "in1",
    "u1",
    "u2",
    "nested",
    "link",
    "late",
  ]);
  assert.deepEqual(defs.get("struct list")!.members, ["next", "prev"]);
  assert.equal(defs.get("typedef plain_t")!.name, "plain_t");
});

test("the compiler's layout, compared: new, moved and wider fields change it; a rename does not", () => {
  const before = layouts(SOURCE);
  const demo = before.get("struct demo")!;
  assert.equal(demo.members.get("late")!.offset % 16, 0);
  assert.deepEqual(demo.members.get("q"), { offset: 16, size: 4 });
  const added = layouts(SOURCE.replace("\tint x;\n", "\tint x;\n\tint added;\n"));
  // Into the padding before p: the size stays, but old instances have no such field.
  assert.equal(layoutChange(demo, added.get("struct demo")!), "adds added at +4");
  const bigger = layouts(SOURCE.replace("q[4]", "q[64]"));
  assert.match(
    layoutChange(demo, bigger.get("struct demo")!)!,
    /^96 → 144 bytes; resizes q to 64 bytes; moves fn to \+80, /,
  );
  const renamed = layouts(SOURCE.replace("int x;", "int renamed_x;"));
  assert.equal(layoutChange(demo, renamed.get("struct demo")!), undefined);
  const list = layouts(
    SOURCE.replace(
      "struct list { struct list *next, *prev; };",
      "struct list { struct list *next, *prev; long n; };",
    ),
  );
  assert.equal(
    layoutChange(before.get("struct list")!, list.get("struct list")!),
    "16 → 24 bytes; adds n at +16",
  );
  // A struct that embeds the changed one changes too.
  assert.match(layoutChange(demo, list.get("struct demo")!)!, /resizes link to 24 bytes/);
});

test("bodiesTouched: a changed line inside a structure body, as written", () => {
  const src = `struct a {\n\tint x;\n};\n\nstatic int f(void)\n{\n\treturn 1;\n}\nstruct b\n{\n\tint y;\n};\n`;
  assert.equal(bodiesTouched(src, [2]), true);
  assert.equal(bodiesTouched(src, [7]), false);
  assert.equal(bodiesTouched(src, [11]), true);
  assert.equal(bodiesTouched(src, [1]), true);
  assert.equal(bodiesTouched(src, []), false);
});
