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
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { partialName, readJson, replaceDir } from "../files.js";

/** labRoot is the lab's part of the cache. */
export function labRoot(cache: string): string {
  return join(cache, "lab");
}

/** STAMP is the file name of the stamp inside a directory entry. */
export const STAMP = ".ksplice-stamp.json";

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
  const tmp = partialName(dir);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    await fill(tmp);
    writeFileSync(join(tmp, STAMP), `${JSON.stringify(stamp, null, 2)}\n`);
    replaceDir(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}
