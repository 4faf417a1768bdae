// The corpus's own logic on small trees: which .c files changed, and a deterministic sample.
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { changedSources, sampleFixes } from "../../src/lab/corpus.js";
import { tempDir } from "../helpers/compile.js";

function tree(files: Record<string, string>): string {
  const root = tempDir();
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, rel)), { recursive: true });
    writeFileSync(join(root, rel), text);
  }
  return root;
}

test("changedSources lists .c files of both trees whose bytes differ, leaving out tools and docs", () => {
  const old = tree({
    "kernel/a.c": "int a;\n",
    "kernel/b.c": "int b;\n",
    "kernel/same.c": "x\n",
    "fs/c.h": "old\n",
    "tools/t.c": "old\n",
    "kernel/gone.c": "x\n",
  });
  const now = tree({
    "kernel/a.c": "int a = 1;\n",
    "kernel/b.c": "int c;\n", // same size, other bytes
    "kernel/same.c": "x\n",
    "fs/c.h": "new\n",
    "tools/t.c": "new\n",
    "kernel/new.c": "x\n",
  });
  assert.deepEqual(changedSources(old, now), ["kernel/a.c", "kernel/b.c"]);
});

test("sampleFixes picks the same subset whatever the input order, in path order", () => {
  const fixes = Array.from({ length: 50 }, (_, i) => ({ file: `dir/f${i}.c` }));
  const a = sampleFixes(fixes, 10);
  assert.equal(a.length, 10);
  assert.deepEqual(a, sampleFixes([...fixes].reverse(), 10));
  assert.deepEqual(
    a.map((f) => f.file),
    [...a.map((f) => f.file)].sort(),
  );
  assert.ok(a.every((f) => fixes.includes(f)));
  assert.notDeepEqual(a, fixes.slice(0, 10));
});
