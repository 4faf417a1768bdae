// The corpus of real fixes: Debian's own stable delta for the lab kernel. The newest
// `linux-source-6.1` in the registry is downloaded and unpacked beside the lab's, and every
// `.c` file that differs from the lab's source becomes a one-file patch (-p1), kept when the
// file's code is in the lab kernel (built in, or in a module). This is what `npm run
// bench:coverage` measures the engine on; nothing here builds or applies anything.
//
// Cache layout ($KSPLICE_CACHE/corpus/<newer-version>/): debs/, linux-source-6.1/ (unpacked,
// stamped), fixes-<key>/ (one patch per changed .c file and index.json, stamped with both
// sources). Which of them are in the lab kernel is asked of the object map at each load.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";
import { cacheRoot, readJson, writeFileAtomic } from "../files.js";
import { ObjectMap, type SourceObject } from "../kbuild/objects.js";
import { parseConfig } from "../kbuild/tree.js";
import { runToolSync } from "../proc.js";
import { debInfo, queryAvailable } from "./apt.js";
import { buildDir, stampMatches } from "./cache.js";
import { compareDebVersions } from "./debver.js";
import { ensureDebs, type LabPaths, unpackSource } from "./prepare.js";

/** Fix is one changed .c file of the delta, as a patch against the lab's source. */
export interface Fix {
  /** Path of the changed file, relative to the tree (the patch is -p1 against it). */
  file: string;
  /** The patch file (written on first use). */
  patch: string;
  /** Objects the file is compiled into in the lab kernel, and how (y: vmlinux, m: module). */
  objects: SourceObject[];
  /** "y" when any object is built into vmlinux, else "m". */
  state: "y" | "m";
  added: number;
  removed: number;
}

/** Corpus is the delta between the lab's source and a newer one of the same series. */
export interface Corpus {
  from: string;
  to: string;
  newSource: string;
  /** Changed .c files whose code is not in the lab kernel (left out of `fixes`). */
  notBuilt: number;
  fixes: Fix[];
}

/** Directories whose .c files never reach the running kernel. */
const SKIP_DIRS = new Set(["Documentation", "tools", "samples", "scripts", "debian", "usr", ".git"]);

/** PINNED_CORPUS is the newer source the tests' expectations were written against. */
export const PINNED_CORPUS = "6.1.192-3";

/**
 * newestSourceVersion asks the registry for the newest version of the lab's source package,
 * or for `prefer` when the registry still has it (tests pin theirs; versions do vanish).
 */
export async function newestSourceVersion(lab: LabPaths, prefer?: string): Promise<string> {
  const name = sourcePackage(lab);
  const avail = await queryAvailable({
    abi: lab.release.replace(/-cloud-amd64$/, ""),
    version: lab.debianVersion,
  });
  const versions = [...(avail.get(name) ?? [])].sort(compareDebVersions);
  if (prefer && versions.includes(prefer)) return prefer;
  const newest = versions.at(-1);
  if (!newest || compareDebVersions(newest, lab.debianVersion) <= 0)
    throw new UserError(
      `the registry has no ${name} newer than the lab's ${lab.debianVersion}: run 'apt-get update', or pass --version`,
      { code: "lab_missing_version" },
    );
  return newest;
}

function sourcePackage(lab: LabPaths): string {
  const src = lab.debs.find((d) => d.name.startsWith("linux-source-"));
  if (!src) throw new Error(`the lab entry ${lab.entryDir} lists no linux-source package`);
  return src.name;
}

/** prepareCorpus downloads and unpacks the newer source (once) and writes the fixes (once). */
export async function prepareCorpus(
  lab: LabPaths,
  opts: { version?: string; prefer?: string; log?: (line: string) => void; cacheDir?: string } = {},
): Promise<Corpus> {
  const log = opts.log ?? (() => {});
  const to = opts.version ?? (await newestSourceVersion(lab, opts.prefer));
  const entry = join(opts.cacheDir ?? cacheRoot(), "corpus", to);
  const name = sourcePackage(lab);
  const series = name.replace(/^linux-source-/, "");
  const deb = await debInfo(name, to);
  await ensureDebs(join(entry, "debs"), [deb], log, {});
  const newSource = join(entry, `linux-source-${series}`);
  const unpackStamp = { sha256: deb.sha256 };
  if (!stampMatches(newSource, unpackStamp))
    await buildDir(newSource, unpackStamp, (tmp) =>
      unpackSource(join(entry, "debs", deb.file), series, tmp, log, {}),
    );

  const labSource = lab.debs.find((d) => d.name === name)!;
  const stamp = { layout: 4, from: labSource.sha256, to: deb.sha256 };
  const key = createHash("sha256").update(JSON.stringify(stamp)).digest("hex").slice(0, 12);
  const fixesDir = join(entry, `fixes-${key}`);
  if (!stampMatches(fixesDir, stamp)) {
    log(`comparing ${lab.debianVersion} with ${to}`);
    await buildDir(fixesDir, stamp, async (tmp) => {
      const changed = changedSources(lab.sourceDir, newSource);
      writeFileSync(join(tmp, "index.json"), `${JSON.stringify({ changed }, null, 1)}\n`);
    });
  }
  const index = readJson<{ changed: string[] }>(join(fixesDir, "index.json"));
  if (!index)
    throw new UserError(`${fixesDir}/index.json is unreadable: delete ${fixesDir} and run again`, {
      code: "lab_corrupt",
    });
  // Which fixes are in the lab kernel is the object map's answer of the day, not a cached one;
  // their patches are written on first use.
  const map = new ObjectMap(lab.sourceDir, parseConfig(readFileSync(join(lab.sourceDir, ".config"), "utf8")));
  const fixes: Fix[] = [];
  for (const file of index.changed) {
    const objects = map.objectsOf(file).filter((o) => o.state !== "n");
    if (objects.length)
      fixes.push({
        file,
        ...patchFor(lab.sourceDir, newSource, fixesDir, file),
        objects,
        state: objects.some((o) => o.state === "y") ? "y" : "m",
      });
  }
  return { from: lab.debianVersion, to, newSource, notBuilt: index.changed.length - fixes.length, fixes };
}

/** changedSources lists the .c files present in both trees whose contents differ. */
export function changedSources(oldTree: string, newTree: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(newTree, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      if (!rel && SKIP_DIRS.has(name)) continue;
      const st = statSync(join(newTree, r));
      if (st.isDirectory()) walk(r);
      else if (name.endsWith(".c") && existsSync(join(oldTree, r))) {
        const old = statSync(join(oldTree, r));
        if (old.size !== st.size || !readFileSync(join(oldTree, r)).equals(readFileSync(join(newTree, r))))
          out.push(r);
      }
    }
  };
  walk("");
  return out.sort();
}

/** patchFor writes (once) the -p1 patch of one changed file and returns its path and line counts. */
function patchFor(oldTree: string, newTree: string, dir: string, file: string) {
  const path = join(dir, `${file.replaceAll("/", "_")}.patch`);
  if (!existsSync(path)) {
    const d = runToolSync("diff", [
      "-u",
      "--label",
      `a/${file}`,
      "--label",
      `b/${file}`,
      join(oldTree, file),
      join(newTree, file),
    ]);
    if (d.code !== 1) throw new Error(`diff of ${file} failed (exit ${d.code}): ${d.stderr}`);
    writeFileAtomic(path, d.stdout);
  }
  const lines = readFileSync(path, "utf8").split("\n");
  return {
    patch: path,
    added: lines.filter((l) => l.startsWith("+") && !l.startsWith("+++")).length,
    removed: lines.filter((l) => l.startsWith("-") && !l.startsWith("---")).length,
  };
}

/** sampleFixes picks n fixes deterministically (by a hash of the path), in path order. */
export function sampleFixes<T extends { file: string }>(fixes: T[], n: number): T[] {
  const h = (s: string) => createHash("sha256").update(s).digest("hex");
  return [...fixes]
    .sort((a, b) => h(a.file).localeCompare(h(b.file)))
    .slice(0, n)
    .sort((a, b) => a.file.localeCompare(b.file));
}
