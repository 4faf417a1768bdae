// `ksplice lab prepare` and `ksplice lab run`, driven as the user would, through bin/ksplice.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { prepareLab } from "../../src/lab/index.js";
import { tempDir } from "../helpers/compile.js";

const bin = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "bin", "ksplice");
const TIMEOUT = 30 * 60_000;

function ksplice(args: string[]) {
  return spawnSync(bin, args, { encoding: "utf8", timeout: 10 * 60_000 });
}

test("lab prepare prints the prepared source tree on its last line", { timeout: TIMEOUT }, async () => {
  const paths = await prepareLab();
  const r = ksplice(["lab", "prepare"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trimEnd().split("\n").at(-1), paths.sourceDir);
  const json = ksplice(["lab", "prepare", "--json"]);
  assert.equal(JSON.parse(json.stdout).release, "6.1.0-50-cloud-amd64");
});

test("lab run shows --with files in the guest and exits with the command's status", {
  timeout: TIMEOUT,
}, async () => {
  await prepareLab();
  const dir = tempDir();
  const file = join(dir, "input.txt");
  writeFileSync(file, "via --with\n");
  const r = ksplice(["lab", "run", "--with", file, "--", "sh", "-c", `cat ${file}; uname -r; exit 3`]);
  assert.equal(r.status, 3, r.stderr);
  assert.equal(r.stdout, "via --with\n6.1.0-50-cloud-amd64\n");
});

test("lab run without a command, or with a bad option value, is a usage error", () => {
  assert.equal(ksplice(["lab", "run"]).status, 2);
  const bad = ksplice(["lab", "run", "--smp", "zero", "--", "true"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--smp wants a positive whole number/);
  assert.equal(ksplice(["lab", "frob"]).status, 2);
});
