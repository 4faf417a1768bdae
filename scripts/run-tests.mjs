// Runs every compiled test file (dist/test/**/*.test.js) with node:test and fails when
// no test ran. `--unit` leaves out the lab tests (test/lab-*/ and files named *.lab.test.js),
// which boot Debian's kernel in QEMU.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const unitOnly = process.argv.includes("--unit") || process.env.KSPLICE_TESTS === "unit";
const only = process.argv.slice(2).filter((a) => !a.startsWith("--"));

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

let files = walk(join(root, "dist", "test"), []).sort();
if (unitOnly) files = files.filter((f) => !f.endsWith(".lab.test.js"));
if (only.length) files = files.filter((f) => only.some((o) => f.includes(o)));
// Unit tests first, lab tests (slow, one VM at a time) last.
files.sort(
  (a, b) => Number(a.endsWith(".lab.test.js")) - Number(b.endsWith(".lab.test.js")) || a.localeCompare(b),
);
if (files.length === 0) {
  console.error("run-tests: no test files found under dist/test (did the build run?)");
  process.exit(1);
}
console.error(
  `run-tests: ${files.length} test files: ${files.map((f) => relative(join(root, "dist"), f)).join(" ")}`,
);
const res = spawnSync(
  process.execPath,
  ["--test", "--test-concurrency=1", "--enable-source-maps", "--test-reporter=spec", ...files],
  { stdio: ["ignore", "pipe", "inherit"], encoding: "utf8", maxBuffer: 1 << 30 },
);
process.stdout.write(res.stdout ?? "");
const passed = Number(/^ℹ pass (\d+)/m.exec(res.stdout ?? "")?.[1] ?? 0);
if (res.status === 0 && passed === 0) {
  console.error("run-tests: zero tests passed: failing the run");
  process.exit(1);
}
process.exit(res.status ?? 1);
