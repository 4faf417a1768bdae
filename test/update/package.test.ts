// Package verification without a kernel: a package written by writePackage opens, and each way
// a package can be damaged (truncated, path traversal, two top directories, a checksum that does
// not match, a listed file missing, an unlisted file, an unknown format version, no manifest)
// is a bad_package error that says what is wrong.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { UserError } from "../../src/errors.js";
import { FORMAT_VERSION, type Manifest } from "../../src/package/manifest.js";
import { openPackage, writePackage } from "../../src/package/package.js";
import { tempDir } from "../helpers/compile.js";
import { tarball } from "../helpers/tar.js";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const ko = Buffer.from("\x7fELF pretend module");

function manifest(files: Array<{ path: string; bytes: Uint8Array }>): Manifest {
  return {
    format: "ksplice-update",
    formatVersion: FORMAT_VERSION,
    id: "abcd1234",
    description: "test",
    createdAt: "2026-11-26T00:00:00.000Z",
    tool: "ksplice test",
    kernel: { release: "6.1.0-50-cloud-amd64", buildId: null, banner: null },
    patches: [],
    applied: [],
    module: { name: "ksplice_abcd1234", file: "ksplice_abcd1234.ko" },
    core: null,
    objects: [],
    targets: [],
    newFunctions: [],
    newData: [],
    relocations: [],
    hooks: [],
    files: files.map((f) => ({ path: f.path, sha256: sha(f.bytes), size: f.bytes.length })),
  };
}

async function good(): Promise<{ path: string; dir: string }> {
  const files = [{ path: "ksplice_abcd1234.ko", bytes: ko }];
  const path = join(tempDir(), "ksplice-abcd1234.tar.gz");
  await writePackage(path, "ksplice-abcd1234", manifest(files), files);
  const pkg = await openPackage(path);
  const dir = join(tempDir(), "ksplice-abcd1234");
  cpSync(pkg.dir, dir, { recursive: true });
  pkg.close();
  return { path, dir };
}

async function refused(path: string, re: RegExp): Promise<void> {
  await assert.rejects(openPackage(path), (e: unknown) => {
    assert.ok(e instanceof UserError, String(e));
    assert.equal(e.code, "bad_package");
    assert.match(e.message, re);
    return true;
  });
}

test("a package made by writePackage opens with its manifest", async () => {
  const { path } = await good();
  const pkg = await openPackage(path);
  try {
    assert.equal(pkg.manifest.id, "abcd1234");
    assert.deepEqual(readFileSync(join(pkg.dir, "ksplice_abcd1234.ko")), ko);
  } finally {
    pkg.close();
  }
});

test("damaged archives are bad_package", async () => {
  const { path } = await good();
  const tgz = readFileSync(path);
  const cut = join(tempDir(), "cut.tar.gz");
  writeFileSync(cut, tgz.subarray(0, tgz.length >> 1));
  await refused(cut, /truncated/);
  const evil = join(tempDir(), "evil.tar.gz");
  writeFileSync(
    evil,
    tarball([
      ["ksplice-x/manifest.json", Buffer.from("{}")],
      ["ksplice-x/../../etc/passwd", Buffer.from("x")],
    ]),
  );
  await refused(evil, /path traversal/);
  const two = join(tempDir(), "two.tar.gz");
  writeFileSync(
    two,
    tarball([
      ["a/manifest.json", Buffer.from("{}")],
      ["b/x", Buffer.from("x")],
    ]),
  );
  await refused(two, /one top directory/);
  const empty = join(tempDir(), "empty.tar.gz");
  writeFileSync(empty, tarball([["ksplice-x/ksplice_x.ko", ko]]));
  await refused(empty, /manifest\.json is missing/);
});

test("unpacked packages that disagree with their manifest are bad_package", async () => {
  const { dir } = await good();
  const edit = (fn: (d: string, m: Manifest) => void) => {
    const d = join(tempDir(), "ksplice-abcd1234");
    cpSync(dir, d, { recursive: true });
    const m = JSON.parse(readFileSync(join(d, "manifest.json"), "utf8")) as Manifest;
    fn(d, m);
    writeFileSync(join(d, "manifest.json"), JSON.stringify(m));
    return d;
  };
  await refused(
    edit((d) => writeFileSync(join(d, "ksplice_abcd1234.ko"), "tampered")),
    /ksplice_abcd1234\.ko does not match its checksum/,
  );
  await refused(
    edit((d) => rmSync(join(d, "ksplice_abcd1234.ko"))),
    /listed in the manifest but missing/,
  );
  await refused(
    edit((d) => writeFileSync(join(d, "extra.ko"), "x")),
    /extra\.ko is in the package but not in the manifest/,
  );
  await refused(
    edit((_d, m) => {
      m.formatVersion = 99;
    }),
    /format version 99 is not supported/,
  );
  await refused(
    edit((_d, m) => {
      m.files[0].path = "../x";
    }),
    /unsafe path/,
  );
  await refused(
    edit((_d, m) => {
      m.id = "../etc";
    }),
    /invalid id/,
  );
});
