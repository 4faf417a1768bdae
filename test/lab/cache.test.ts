// The cache's rules: entries appear only complete, leftovers of interrupted runs are removed,
// and a cache entry with a missing stamp, file or truncated .deb is refused.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cacheRoot } from "../../src/files.js";
import { buildDir, removeLeftovers, STAMP, stampMatches } from "../../src/lab/cache.js";
import { tempDir } from "../helpers/compile.js";

test("cacheRoot honours KSPLICE_CACHE, else ~/.cache/ksplice", () => {
  assert.equal(cacheRoot({ KSPLICE_CACHE: "/x/y" }), "/x/y");
  assert.equal(cacheRoot({ HOME: "/home/u" }), "/home/u/.cache/ksplice");
});

test("buildDir renames a complete entry into place with its stamp", async () => {
  const dir = join(tempDir(), "entry");
  await buildDir(dir, { v: 1 }, async (tmp) => writeFileSync(join(tmp, "f"), "x"));
  assert.ok(existsSync(join(dir, "f")));
  assert.ok(stampMatches(dir, { v: 1 }));
  assert.equal(stampMatches(dir, { v: 2 }), false);
});

test("buildDir leaves neither entry nor temporary directory when filling fails", async () => {
  const parent = tempDir();
  const dir = join(parent, "entry");
  await assert.rejects(
    buildDir(dir, { v: 1 }, async (tmp) => {
      writeFileSync(join(tmp, "half"), "x");
      throw new Error("disk full");
    }),
    /disk full/,
  );
  assert.deepEqual(readdirSync(parent), []);
});

test("an entry without its stamp (half-unpacked) does not match", () => {
  const dir = join(tempDir(), "entry");
  mkdirSync(dir);
  writeFileSync(join(dir, "some-file"), "x");
  assert.equal(stampMatches(dir, { v: 1 }), false);
  writeFileSync(join(dir, STAMP), "{ truncated");
  assert.equal(stampMatches(dir, { v: 1 }), false);
});

test("removeLeftovers deletes what interrupted runs left behind, and nothing else", () => {
  const dir = tempDir();
  mkdirSync(join(dir, "root.partial-1234"));
  writeFileSync(join(dir, "vmlinux.partial-99"), "");
  writeFileSync(join(dir, "vmlinux"), "");
  assert.deepEqual(removeLeftovers(dir).sort(), ["root.partial-1234", "vmlinux.partial-99"]);
  assert.deepEqual(readdirSync(dir), ["vmlinux"]);
});
