// Line facts for explaining a patch that changes no code (src/kbuild/lines.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { changedLines, codeLines } from "../../src/kbuild/lines.js";

test("changedLines numbers removed lines in the old file and added lines in the new one", () => {
  const patch = [
    "--- a/kernel/x.c",
    "+++ b/kernel/x.c",
    "@@ -10,4 +10,5 @@",
    " a",
    "-b",
    "+B",
    "+C",
    " d",
    " e",
    "@@ -40,2 +41,1 @@",
    "-gone",
    " kept",
    "--- a/fs/y.c",
    "+++ b/fs/y.c",
    "@@ -1 +1 @@",
    "-old",
    "+new",
    "",
  ].join("\n");
  assert.deepEqual(Object.fromEntries(changedLines(patch)), {
    "kernel/x.c": { removed: [11, 40], added: [11, 12] },
    "fs/y.c": { removed: [1], added: [1] },
  });
});

test("codeLines: comments and blank lines are not code; strings hide comment markers", () => {
  const src = [
    "/* a comment", // 1
    " * more */", // 2
    "int a; // trailing", // 3
    "", // 4
    "   // only a comment", // 5
    '#define S "/* not a comment */"', // 6
    "int b; /* x */ int c;", // 7
    "/* one */ /* two */", // 8
  ].join("\n");
  assert.deepEqual(
    [...codeLines(src)].sort((x, y) => x - y),
    [3, 6, 7],
  );
});
