// Writing files and directories so that a crash never leaves a half-written one under its real
// name: everything is made under NAME.partial-PID and renamed into place when complete (a
// rename within one filesystem is atomic). Also where ksplice keeps its cache. Below every stage.

import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** partialName is the temporary name an entry is built under; `*.partial-*` is a leftover. */
export function partialName(path: string): string {
  return `${path}.partial-${process.pid}`;
}

/**
 * buildFileAtomic makes `path` by having `fill` write its temporary name, then renames it into
 * place; on failure the temporary file is removed and nothing appears under `path`. An async
 * `fill` makes the result a promise.
 */
export function buildFileAtomic<R extends void | Promise<void>>(path: string, fill: (tmp: string) => R): R {
  const tmp = partialName(path);
  const fail = (e: unknown): never => {
    rmSync(tmp, { force: true });
    throw e;
  };
  try {
    const r = fill(tmp);
    if (r instanceof Promise) return r.then(() => renameSync(tmp, path), fail) as R;
    renameSync(tmp, path);
    return r;
  } catch (e) {
    return fail(e);
  }
}

/** writeFileAtomic writes a file through a temporary file and a rename. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  buildFileAtomic(path, (tmp) => writeFileSync(tmp, data));
}
/** writeJsonAtomic writes JSON (indented, with a final newline) through a temporary file and a rename. */
export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** readJson returns a JSON file's value, or undefined when missing or unreadable. */
export function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}

/** replaceDir moves a complete directory `tmp` to `dest`, replacing whatever was there. */
export function replaceDir(tmp: string, dest: string): void {
  rmSync(dest, { recursive: true, force: true });
  renameSync(tmp, dest);
}

/** cacheRoot is $KSPLICE_CACHE or ~/.cache/ksplice: built modules, the lab, the corpus. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env["KSPLICE_CACHE"] || join(env["HOME"] || homedir(), ".cache", "ksplice");
}
