// prepareLab on the real cache: complete and warm on a second run, and corrupt entries (a
// truncated .deb, a tree without its stamp, leftovers of an interrupted run) detected and rebuilt.
// On a fresh machine the first test downloads and prepares everything (a few minutes).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { UserError } from "../../src/errors.js";
import { aptDownload, debInfo } from "../../src/lab/apt.js";
import { STAMP } from "../../src/lab/cache.js";
import { checkEntry, prepareLab } from "../../src/lab/index.js";
import { tempDir } from "../helpers/compile.js";

const TIMEOUT = 30 * 60_000;

test("prepareLab yields a complete lab: release, tree, headers, vmlinux, config, modules", {
  timeout: TIMEOUT,
}, async () => {
  const p = await prepareLab({ log: (l) => console.error(`lab: ${l}`) });
  assert.equal(p.release, "6.1.0-50-cloud-amd64");
  assert.equal(p.debianVersion, "6.1.176-1");
  assert.equal(p.pinned, true);
  assert.equal(checkEntry(p), null);
  assert.match(readFileSync(p.config, "utf8"), /CONFIG_LIVEPATCH=y/);
  assert.match(
    readFileSync(join(p.sourceDir, "include", "generated", "utsrelease.h"), "utf8"),
    /"6\.1\.0-50-cloud-amd64"/,
  );
  // The tree was configured with the image's own config, unchanged by olddefconfig where it matters.
  assert.match(
    readFileSync(join(p.sourceDir, ".config"), "utf8"),
    /CONFIG_CC_VERSION_TEXT="gcc-12 \(Debian 12\.2\.0-14\+deb12u1\) 12\.2\.0"/,
  );
  assert.match(
    execFileSync("readelf", ["-h", p.vmlinux], { encoding: "utf8" }),
    /Advanced Micro Devices X86-64/,
  );
  assert.ok(existsSync(join(p.modulesDir, "kernel")));
  assert.equal(
    readFileSync(join(p.headersDir, "Makefile"), "utf8").trim(),
    `include ${join(p.entryDir, "root", "usr", "src", "linux-headers-6.1.0-50-common")}/Makefile`,
  );
});

test("a warm prepareLab does no work and returns the same paths", async () => {
  const first = await prepareLab();
  const lines: string[] = [];
  const again = await prepareLab({ log: (l) => lines.push(l), progress: (s) => lines.push(s) });
  assert.deepEqual(again, first);
  assert.deepEqual(lines, []);
});

test("a truncated .deb in the cache is detected and downloaded again", { timeout: TIMEOUT }, async () => {
  const p = await prepareLab();
  const kbuild = p.debs.find((d) => d.name.startsWith("linux-kbuild"))!;
  const file = join(p.entryDir, "debs", kbuild.file);
  writeFileSync(file, readFileSync(file).subarray(0, 1000));
  assert.match(checkEntry(p) ?? "", /wrong size/);
  const lines: string[] = [];
  const again = await prepareLab({ log: (l) => lines.push(l) });
  assert.ok(
    lines.some((l) => /corrupt/.test(l) && l.includes(kbuild.file)),
    lines.join("\n"),
  );
  assert.ok(
    lines.some((l) => /downloading linux-kbuild/.test(l)),
    lines.join("\n"),
  );
  assert.equal(checkEntry(again), null);
  assert.equal(readFileSync(file).length, kbuild.size);
});

test("an unpacked tree without its stamp, and leftovers of an interrupted run, are rebuilt and removed", {
  timeout: TIMEOUT,
}, async () => {
  const p = await prepareLab();
  const root = join(p.entryDir, "root");
  rmSync(join(root, STAMP));
  mkdirSync(join(p.entryDir, "root.partial-99999"));
  assert.match(checkEntry(p) ?? "", /no valid stamp/);
  const lines: string[] = [];
  const again = await prepareLab({ log: (l) => lines.push(l) });
  assert.ok(
    lines.some((l) => /root.partial-99999/.test(l)),
    lines.join("\n"),
  );
  assert.ok(
    lines.some((l) => /no valid stamp; unpacking it again/.test(l)),
    lines.join("\n"),
  );
  assert.equal(existsSync(join(p.entryDir, "root.partial-99999")), false);
  assert.equal(checkEntry(again), null);
});

test("a package version the registry lacks, and a failed download, are named errors", async () => {
  await prepareLab();
  await assert.rejects(debInfo("linux-kbuild-6.1", "0.0.0-0"), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.equal(err.code, "lab_missing_version");
    assert.match(err.message, /linux-kbuild-6\.1=0\.0\.0-0/);
    return true;
  });
  const bogus = { name: "linux-kbuild-6.1", version: "0.0.0-0", sha256: "", size: 0, file: "x.deb" };
  await assert.rejects(aptDownload(tempDir(), [bogus]), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.equal(err.code, "lab_download");
    assert.match(err.message, /retry 'ksplice lab prepare'/);
    return true;
  });
});
