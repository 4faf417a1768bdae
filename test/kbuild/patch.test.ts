// parsePatch: which files a unified diff touches as `patch -p1` sees them, and the bad_patch
// errors a malformed patch gets (naming the patch and the line).
import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../../src/errors.js";
import { parsePatch } from "../../src/kbuild/patch.js";

const hunk = "@@ -1 +1 @@\n-a\n+b\n";

test("the files of a git-style patch, with the leading directory stripped", () => {
  const text = [
    "From abc Mon Sep 17 00:00:00 2001",
    "Subject: [PATCH] fs: fix",
    "---",
    " fs/fcntl.c | 2 +-",
    "diff --git a/fs/fcntl.c b/fs/fcntl.c",
    "--- a/fs/fcntl.c\t2026-01-01 00:00:00",
    `+++ b/fs/fcntl.c\t2026-01-01 00:00:00\n${hunk}`,
    "--- a/include/linux/fs.h",
    `+++ b/include/linux/fs.h\n${hunk}`,
  ].join("\n");
  assert.deepEqual(parsePatch(text, "fix.patch"), [
    { path: "fs/fcntl.c", created: false, deleted: false },
    { path: "include/linux/fs.h", created: false, deleted: false },
  ]);
});

test("created and deleted files are named by the side that exists", () => {
  const text = `--- /dev/null\n+++ b/kernel/new.c\n${hunk}--- a/kernel/old.c\n+++ /dev/null\n${hunk}`;
  assert.deepEqual(parsePatch(text, "p"), [
    { path: "kernel/new.c", created: true, deleted: false },
    { path: "kernel/old.c", created: false, deleted: true },
  ]);
});

test("a '---' line inside a hunk is not a file header", () => {
  const text = `--- a/a.c\n+++ b/a.c\n@@ -1,2 +1,2 @@\n--- removed line starting with dashes\n+++ added\n`;
  assert.deepEqual(
    parsePatch(text, "p").map((f) => f.path),
    ["a.c"],
  );
});

test("malformed patches are bad_patch errors naming the patch and the line", () => {
  const bad = (text: string, re: RegExp) =>
    assert.throws(
      () => parsePatch(text, "my.patch"),
      (e: unknown) => e instanceof UserError && e.code === "bad_patch" && re.test(e.message),
    );
  bad("just some text\n", /my\.patch is not a unified diff/);
  bad(
    "--- a/x.c\n+++ b/x.c\nno hunk here\n",
    /my\.patch: line 3: expected a hunk header \(@@\) after the file names of x\.c/,
  );
  bad(
    `--- /dev/null\n+++ /dev/null\n${hunk}`,
    /my\.patch: line 1: a diff between \/dev\/null and \/dev\/null/,
  );
});
