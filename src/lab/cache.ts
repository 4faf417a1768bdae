// The lab's cache directory: where it is, and the two rules that keep it honest.
// 1. Every built entry (an unpacked tree, a prepared source, a downloaded .deb) is made under a
//    temporary name and renamed into place only when complete, so a crash leaves a `*.partial-*`
//    that the next run deletes, never a half-built entry under the real name.
// 2. Every entry carries a stamp (JSON) written last, saying what it was built from; an entry
//    without its stamp, or whose stamp does not match what we would build now, is corrupt and
//    rebuilt.
//
// Layout ($KSPLICE_CACHE, default ~/.cache/ksplice):
//   lab/<debian-version>/debs/*.deb            the five packages, checked against the registry
//   lab/<debian-version>/debs/index.json       name, version, sha256, size (+mtime when verified)
//   lab/<debian-version>/root/                 image + headers + kbuild, unpacked (dpkg -x)
//   lab/<debian-version>/linux-source-6.1/     the source tree, configured and prepared
//   lab/<debian-version>/vmlinux               extracted from the vmlinuz
//   lab/<debian-version>/lab.json              the LabPaths of a complete entry
//   lab/selection.json                          which version was chosen for a pinned one
//   lab/initramfs/<key>.cpio                    base initramfs (busybox + node)
//   lab/accel.json                              result of the KVM probe
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** cacheRoot is $KSPLICE_CACHE or ~/.cache/ksplice. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env["KSPLICE_CACHE"] || join(env["HOME"] || homedir(), ".cache", "ksplice");
}

/** labRoot is the lab's part of the cache. */
export function labRoot(cache: string): string {
  return join(cache, "lab");
}

/** STAMP is the file name of the stamp inside a directory entry. */
export const STAMP = ".ksplice-stamp.json";

/** readJson returns a JSON file's value, or undefined when missing or unreadable. */
export function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}

/** writeJsonAtomic writes JSON through a temporary file and a rename. */
export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.partial-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, path);
}

/** stampMatches says whether dir has a stamp equal (as JSON) to `want`. */
export function stampMatches(dir: string, want: unknown): boolean {
  const have = readJson<unknown>(join(dir, STAMP));
  return have !== undefined && JSON.stringify(have) === JSON.stringify(want);
}

/** removeLeftovers deletes `*.partial-*` entries a crashed or interrupted run left in dir. */
export function removeLeftovers(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const gone: string[] = [];
  for (const name of readdirSync(dir)) {
    if (name.includes(".partial-")) {
      rmSync(join(dir, name), { recursive: true, force: true });
      gone.push(name);
    }
  }
  return gone;
}

/**
 * buildDir builds a directory entry atomically: `fill` populates a fresh temporary directory, the
 * stamp is written into it, and it is renamed to `dir` (replacing any corrupt old entry).
 */
export async function buildDir(
  dir: string,
  stamp: unknown,
  fill: (tmp: string) => Promise<void>,
): Promise<void> {
  const tmp = `${dir}.partial-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    await fill(tmp);
    writeFileSync(join(tmp, STAMP), `${JSON.stringify(stamp, null, 2)}\n`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}
