// Runs every compiled test file (dist/test/**/*.test.js) with node:test and fails when
// no test ran. `--unit` leaves out the lab tests (test/lab-*/ and files named *.lab.test.js),
// which boot Debian's kernel in QEMU.
import { spawn } from "node:child_process";
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
// Each file's results are printed as they arrive (the whole run takes more than ten minutes);
// the summary's pass count is read from the same stream.
const child = spawn(
  process.execPath,
  ["--test", "--test-concurrency=1", "--enable-source-maps", "--test-reporter=spec", ...files],
  { stdio: ["ignore", "pipe", "inherit"] },
);
let tail = "";
let passed = 0;
child.stdout.setEncoding("utf8");
child.stdout.on("data", (chunk) => {
  process.stdout.write(chunk);
  const lines = (tail + chunk).split("\n");
  tail = lines.pop() ?? "";
  for (const line of lines) {
    const m = /^ℹ pass (\d+)/.exec(line);
    if (m) passed = Number(m[1]);
  }
});
const status = await new Promise((resolve) => child.on("close", (code) => resolve(code)));
const last = /^ℹ pass (\d+)/.exec(tail);
if (last) passed = Number(last[1]);
if (status === 0 && passed === 0) {
  console.error("run-tests: zero tests passed: failing the run");
  process.exit(1);
}
process.exit(status ?? 1);
