// Compiles small C or assembly fixtures with gcc-12 at test time, into a fresh temp dir.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Flags the kernel objects will be built with, as far as a fixture needs them. */
export const FIXTURE_CFLAGS = [
  "-O2",
  "-ffunction-sections",
  "-fdata-sections",
  "-fno-asynchronous-unwind-tables",
];

const made: string[] = [];
// Each test file runs in its own process: its directories go when it exits (set
// KSPLICE_KEEP_TMP=1 to keep them for a post-mortem).
process.on("exit", () => {
  if (process.env.KSPLICE_KEEP_TMP) return;
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** tempDir makes a fresh directory for one test's files, removed when the test process exits. */
export function tempDir(prefix = "ksplice-test-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** compileC writes `source` to NAME.c in dir and compiles it to NAME.o; returns the object path. */
export function compileC(
  dir: string,
  name: string,
  source: string,
  flags: string[] = FIXTURE_CFLAGS,
): string {
  const src = join(dir, `${name}.c`);
  const obj = join(dir, `${name}.o`);
  writeFileSync(src, source);
  execFileSync("gcc-12", ["-c", ...flags, "-o", obj, src], { stdio: ["ignore", "ignore", "pipe"] });
  return obj;
}

/** assemble writes `source` to NAME.s in dir and assembles it; returns the object path. */
export function assemble(dir: string, name: string, source: string): string {
  const src = join(dir, `${name}.s`);
  const obj = join(dir, `${name}.o`);
  writeFileSync(src, source);
  execFileSync("gcc-12", ["-c", "-o", obj, src], { stdio: ["ignore", "ignore", "pipe"] });
  return obj;
}

/** run executes a tool and returns its stdout (throws with stderr on failure). */
export function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 28 });
}
