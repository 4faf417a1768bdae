// `prepareLab`: makes Debian's binary cloud kernel ready for the lab, idempotently. Installs the
// host packages, picks the kernel version (the pinned one while the registry has it), downloads
// and checks the five .deb files, unpacks image + headers, unpacks and prepares the source tree
// with the image's own config and gcc-12, extracts vmlinux. Each step is skipped when its cache
// entry is complete and its stamp matches; corrupt entries are rebuilt, never used (see cache.ts).
import { spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";
import { buildFileAtomic, cacheRoot, readJson, writeJsonAtomic } from "../files.js";
import { writeTreeInfo } from "../kbuild/tree.js";
import { mustRun, ToolError } from "../proc.js";
import {
  aptDownload,
  type ChoiceResult,
  chooseKernel,
  type DebInfo,
  debInfo,
  ensureHostPackages,
  type KernelChoice,
  labPackages,
  PINNED,
  queryAvailable,
  releaseOf,
  sha256File,
} from "./apt.js";
import { buildDir, labRoot, removeLeftovers, STAMP, stampMatches } from "./cache.js";

/** LabPaths is everything later stages need to know about a prepared lab kernel. */
export interface LabPaths {
  /** Kernel release, `uname -r` in the guest, e.g. `6.1.0-50-cloud-amd64`. */
  release: string;
  /** Debian version of the packages, e.g. `6.1.176-1`. */
  debianVersion: string;
  /** False when the pinned version was gone and a newer one was chosen. */
  pinned: boolean;
  /** The cache entry holding all of the below. */
  entryDir: string;
  /** Source tree configured with the image's config and prepared (`make prepare modules_prepare`). */
  sourceDir: string;
  /** Arguments every `make -C sourceDir` must get so objects match Debian's build. */
  makeArgs: string[];
  /** Headers tree for external modules: `make -C headersDir M=DIR modules`. */
  headersDir: string;
  /** Compressed kernel image, as booted by the lab. */
  vmlinuz: string;
  /** The uncompressed vmlinux ELF (extracted from vmlinuz; stripped, no symbols). */
  vmlinux: string;
  /** The image's own config (`/boot/config-<release>`). */
  config: string;
  /** The image package's modules directory (`lib/modules/<release>`). */
  modulesDir: string;
  /** The .deb files the entry was built from. */
  debs: DebInfo[];
}

/** PrepareOptions tune prepareLab; all are optional. */
export interface PrepareOptions {
  /** Cache root; default $KSPLICE_CACHE or ~/.cache/ksplice. */
  cacheDir?: string;
  env?: NodeJS.ProcessEnv;
  /** Kernel to prefer; default PINNED. */
  kernel?: KernelChoice;
  /** Ask the registry again even when a complete entry is cached. */
  refresh?: boolean;
  /** One line per step or notice. */
  log?: (line: string) => void;
  /** Fraction done (0..1) of a long step. */
  progress?: (step: string, fraction: number) => void;
  signal?: AbortSignal;
}

/** The stamp of the prepared source tree: a change in any field forces a re-prepare. */
interface SourceStamp {
  sourceSha256: string;
  configSha256: string;
  makeArgs: string[];
}

/** The version of this file's layout; bump to make every cache entry rebuild. */
const LAYOUT = 1;

/** prepareLab returns the paths of a ready lab kernel, building what the cache lacks. */
export async function prepareLab(opts: PrepareOptions = {}): Promise<LabPaths> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => {});
  const root = labRoot(opts.cacheDir ?? cacheRoot(env));
  const want = opts.kernel ?? PINNED;
  mkdirSync(root, { recursive: true });
  await ensureHostPackages(log);

  // Warm path: a complete entry for the version chosen last time, checked without asking apt.
  const selPath = join(root, "selection.json");
  const selection = readJson<Record<string, KernelChoice & { pinned: boolean }>>(selPath) ?? {};
  const prior = selection[want.version];
  if (prior && !opts.refresh) {
    const paths = readJson<LabPaths>(join(root, prior.version, "lab.json"));
    const problem = paths ? checkEntry(paths) : "lab.json is missing";
    if (!problem) return describeTree(paths!);
    log(`cache entry ${join(root, prior.version)} is incomplete or corrupt (${problem}); rebuilding it`);
  }

  const available = await queryAvailable(want);
  const choice = chooseKernel(available, want);
  if (!choice) {
    throw new UserError(
      `the package registry has neither ${labPackages(want).image}=${want.version} nor any other version for which image, headers, kbuild and source all exist; run 'apt-get update' and retry 'ksplice lab prepare'.`,
      { code: "lab_missing_version" },
    );
  }
  if (!choice.pinned) {
    log(
      `the pinned kernel ${want.version} (${want.abi}) is gone from the registry; using the newest complete one instead: ${choice.version} (${choice.abi})`,
    );
  }
  const paths = await buildEntry(root, choice, log, opts);
  selection[want.version] = choice;
  writeJsonAtomic(selPath, selection);
  return describeTree(paths);
}

/** describeTree tells the prepared source tree where its kernel's headers and vmlinux are. */
function describeTree(paths: LabPaths): LabPaths {
  writeTreeInfo(paths.sourceDir, { headersDir: paths.headersDir, vmlinux: paths.vmlinux });
  return paths;
}

/** checkEntry returns why a complete-looking entry cannot be used, or null when it can. */
export function checkEntry(p: LabPaths): string | null {
  const stamp = readJson<{ layout?: number }>(join(p.entryDir, "lab.json.stamp"));
  if (stamp?.layout !== LAYOUT) return "it was made by another version of ksplice";
  for (const d of p.debs) {
    const f = join(p.entryDir, "debs", d.file);
    if (!existsSync(f)) return `${d.file} is missing`;
    if (statSync(f).size !== d.size) return `${d.file} has the wrong size (truncated?)`;
  }
  const rootStamp = readJson<unknown>(join(p.entryDir, "root", STAMP));
  if (JSON.stringify(rootStamp) !== JSON.stringify(rootStampOf(p.entryDir, p.debs)))
    return "the unpacked packages have no valid stamp";
  const srcStamp = readJson<unknown>(join(p.sourceDir, PREPARED));
  if (srcStamp === undefined) return "the source tree was not completely prepared";
  const must = [
    p.vmlinuz,
    p.config,
    join(p.headersDir, "Makefile"),
    join(p.headersDir, "Module.symvers"),
    join(p.sourceDir, "Makefile"),
    join(p.sourceDir, ".config"),
    join(p.sourceDir, "include", "generated", "autoconf.h"),
    join(p.sourceDir, "include", "config", "auto.conf"),
    join(p.sourceDir, "scripts", "mod", "modpost"),
    join(p.sourceDir, "tools", "objtool", "objtool"),
    join(p.sourceDir, "Module.symvers"),
    join(p.sourceDir, "scripts", "extract-vmlinux"),
    join(p.modulesDir, "modules.order"),
  ];
  for (const f of must) if (!existsSync(f)) return `${f} is missing`;
  if (!isElf(p.vmlinux)) return `${p.vmlinux} is missing or not an ELF file`;
  return null;
}

const PREPARED = ".ksplice-prepared.json";

function rootStampOf(entryDir: string, debs: DebInfo[]): unknown {
  // The absolute path is part of the stamp: the unpacked headers refer to it.
  return {
    layout: LAYOUT,
    at: join(entryDir, "root"),
    debs: debs.filter((d) => !d.name.startsWith("linux-source")).map((d) => d.sha256),
  };
}

function isElf(path: string): boolean {
  try {
    const fd = openSync(path, "r");
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, 0);
    closeSync(fd);
    return b.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])) && statSync(path).size > 1 << 20;
  } catch {
    return false;
  }
}

async function buildEntry(
  root: string,
  choice: ChoiceResult,
  log: (l: string) => void,
  opts: PrepareOptions,
): Promise<LabPaths> {
  const entryDir = join(root, choice.version);
  const release = releaseOf(choice);
  const pk = labPackages(choice);
  mkdirSync(entryDir, { recursive: true });
  for (const gone of removeLeftovers(entryDir)) log(`removed ${gone}, left over by an interrupted run`);
  // Invalidate the entry's summary first: if anything below fails, the next run re-checks everything.
  rmSync(join(entryDir, "lab.json.stamp"), { force: true });

  const debs = await Promise.all(
    [pk.image, pk.headers, pk.common, pk.kbuild, pk.source].map((n) => debInfo(n, choice.version)),
  );
  await ensureDebs(join(entryDir, "debs"), debs, log, opts);
  const debPath = (d: DebInfo) => join(entryDir, "debs", d.file);
  const [image, headers, common, kbuild, source] = debs;

  // Image, headers and kbuild, unpacked together into one root as dpkg would install them.
  const rootDir = join(entryDir, "root");
  const rootStamp = rootStampOf(entryDir, debs);
  if (!stampMatches(rootDir, rootStamp)) {
    if (existsSync(rootDir)) log(`${rootDir} has no valid stamp; unpacking it again`);
    log(`unpacking ${pk.image}, ${pk.headers}, ${pk.common}, ${pk.kbuild}`);
    await buildDir(rootDir, rootStamp, async (tmp) => {
      for (const d of [image, headers, common, kbuild]) await mustRun("dpkg-deb", ["-x", debPath(d), tmp]);
      fixHeaders(tmp, rootDir, release, choice.abi);
    });
  }
  const headersDir = join(rootDir, "usr", "src", `linux-headers-${release}`);
  const modulesDir = join(rootDir, "lib", "modules", release);
  const vmlinuz = join(rootDir, "boot", `vmlinuz-${release}`);
  const config = join(rootDir, "boot", `config-${release}`);

  // The source tree: unpacked atomically, then prepared in place (Kbuild records absolute paths,
  // so it must be prepared where it will stay); the prepared stamp is written last.
  const series = pk.source.replace(/^linux-source-/, "");
  const sourceDir = join(entryDir, `linux-source-${series}`);
  const unpackStamp = { layout: LAYOUT, sha256: source.sha256 };
  if (!stampMatches(sourceDir, unpackStamp)) {
    if (existsSync(sourceDir)) log(`${sourceDir} is incomplete (no valid stamp); unpacking it again`);
    await buildDir(sourceDir, unpackStamp, async (tmp) =>
      unpackSource(debPath(source), series, tmp, log, opts),
    );
  }
  const makeArgs = ["CC=gcc-12", `KERNELRELEASE=${release}`];
  const srcStamp: SourceStamp = {
    sourceSha256: source.sha256,
    configSha256: await sha256File(config),
    makeArgs,
  };
  const preparedPath = join(sourceDir, PREPARED);
  if (JSON.stringify(readJson(preparedPath)) !== JSON.stringify(srcStamp)) {
    rmSync(preparedPath, { force: true });
    writeFileSync(join(sourceDir, ".config"), readFileSync(config));
    await make(sourceDir, [...makeArgs, "olddefconfig"], "olddefconfig", log, opts);
    await make(sourceDir, [...makeArgs, "-j2", "prepare", "modules_prepare"], "prepare", log, opts);
    // External modules built against the tree link against the image's exported symbols.
    writeFileSync(join(sourceDir, "Module.symvers"), readFileSync(join(headersDir, "Module.symvers")));
    writeJsonAtomic(preparedPath, srcStamp);
  }

  const vmlinux = join(entryDir, "vmlinux");
  if (!isElf(vmlinux)) {
    log(`extracting vmlinux from ${vmlinuz}`);
    await buildFileAtomic(vmlinux, async (tmp) => {
      await extractVmlinux(join(sourceDir, "scripts", "extract-vmlinux"), vmlinuz, tmp);
      if (!isElf(tmp))
        throw new UserError(
          `scripts/extract-vmlinux produced no ELF file from ${vmlinuz}; is lz4 installed? Retry 'ksplice lab prepare'.`,
          { code: "lab_prepare" },
        );
    });
  }

  const paths: LabPaths = {
    release,
    debianVersion: choice.version,
    pinned: choice.pinned,
    entryDir,
    sourceDir,
    makeArgs,
    headersDir,
    vmlinuz,
    vmlinux,
    config,
    modulesDir,
    debs,
  };
  writeJsonAtomic(join(entryDir, "lab.json"), paths);
  writeJsonAtomic(join(entryDir, "lab.json.stamp"), { layout: LAYOUT });
  const problem = checkEntry(paths);
  if (problem)
    throw new UserError(
      `the lab cache entry ${entryDir} is still incomplete after preparing it (${problem}); delete it and retry 'ksplice lab prepare'.`,
      { code: "lab_corrupt" },
    );
  return paths;
}

/** ensureDebs makes debsDir hold each package with the registry's checksum, downloading what is missing or corrupt. */
export async function ensureDebs(
  debsDir: string,
  debs: DebInfo[],
  log: (l: string) => void,
  opts: PrepareOptions,
): Promise<void> {
  mkdirSync(debsDir, { recursive: true });
  removeLeftovers(debsDir);
  const indexPath = join(debsDir, "index.json");
  const index = readJson<Record<string, { sha256: string; size: number; mtimeMs: number }>>(indexPath) ?? {};
  const need: DebInfo[] = [];
  for (const d of debs) {
    const f = join(debsDir, d.file);
    if (!existsSync(f)) {
      need.push(d);
      continue;
    }
    const st = statSync(f);
    const known = index[d.file];
    // A file already verified and untouched since needs no re-hash (keeps warm runs fast).
    if (known && known.sha256 === d.sha256 && known.size === st.size && known.mtimeMs === st.mtimeMs)
      continue;
    if (st.size === d.size && (await sha256File(f)) === d.sha256) {
      index[d.file] = { sha256: d.sha256, size: st.size, mtimeMs: st.mtimeMs };
      continue;
    }
    log(`${f} is corrupt (size ${st.size}, expected ${d.size}, or wrong SHA256); downloading it again`);
    rmSync(f, { force: true });
    need.push(d);
  }
  if (need.length) {
    const mb = Math.round(need.reduce((s, d) => s + d.size, 0) / 1e6);
    log(`downloading ${need.map((d) => `${d.name}=${d.version}`).join(" ")} (${mb} MB)`);
    const tmp = join(debsDir, `download.partial-${process.pid}`);
    mkdirSync(tmp, { recursive: true });
    const started = Date.now();
    const timer = setInterval(() => {
      const got = need.reduce(
        (s, d) => s + sizeOrZero(join(tmp, d.file)) + sizeOrZero(join(tmp, "partial", d.file)),
        0,
      );
      opts.progress?.("download", got / Math.max(1, mb * 1e6));
    }, 500);
    try {
      await aptDownload(tmp, need, opts.signal);
    } finally {
      clearInterval(timer);
    }
    for (const d of need) {
      const f = join(tmp, d.file);
      const sum = existsSync(f) ? await sha256File(f) : "(missing)";
      if (sum !== d.sha256) {
        rmSync(tmp, { recursive: true, force: true });
        throw new UserError(
          `downloaded ${d.file} does not have the registry's SHA256 (${sum} != ${d.sha256}); retry 'ksplice lab prepare'.`,
          {
            code: "lab_download",
          },
        );
      }
      renameSync(f, join(debsDir, d.file));
      const st = statSync(join(debsDir, d.file));
      index[d.file] = { sha256: d.sha256, size: st.size, mtimeMs: st.mtimeMs };
    }
    rmSync(tmp, { recursive: true, force: true });
    log(`downloaded ${mb} MB in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
  writeJsonAtomic(indexPath, index);
}

function sizeOrZero(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/**
 * fixHeaders makes the unpacked headers work from the cache instead of /usr/src: Debian's arch
 * Makefile includes the common one by absolute path, and lib/modules/<release>/{build,source}
 * point into /usr/src.
 */
function fixHeaders(tmp: string, finalRoot: string, release: string, abi: string): void {
  const common = join(finalRoot, "usr", "src", `linux-headers-${abi}-common`);
  writeFileSync(
    join(tmp, "usr", "src", `linux-headers-${release}`, "Makefile"),
    `include ${common}/Makefile\n`,
  );
  const mods = join(tmp, "lib", "modules", release);
  for (const [link, target] of [
    ["build", join(finalRoot, "usr", "src", `linux-headers-${release}`)],
    ["source", common],
  ]) {
    rmSync(join(mods, link), { force: true });
    symlinkSync(target, join(mods, link));
  }
}

/** unpackSource streams the tarball out of the .deb into `tar -xJ`, reporting progress by compressed bytes. */
export async function unpackSource(
  deb: string,
  series: string,
  dest: string,
  log: (l: string) => void,
  opts: PrepareOptions,
): Promise<void> {
  const member = `./usr/src/linux-source-${series}.tar.xz`;
  const listing = await mustRun("dpkg-deb", ["-c", deb]);
  const line = listing.split("\n").find((l) => l.endsWith(member.slice(1)));
  const total = Number(line?.trim().split(/\s+/)[2] ?? 0);
  if (!total) {
    throw new UserError(
      `${deb} holds no ${member}; the cached .deb is corrupt: delete it and retry 'ksplice lab prepare'.`,
      { code: "lab_corrupt" },
    );
  }
  log(`unpacking linux-source-${series} (${Math.round(total / 1e6)} MB compressed)`);
  const started = Date.now();
  await new Promise<void>((resolve, reject) => {
    const extract = spawn("sh", ["-c", `dpkg-deb --fsys-tarfile "$1" | tar -xOf - "$2"`, "sh", deb, member], {
      stdio: ["ignore", "pipe", "pipe"],
      signal: opts.signal,
    });
    // tar strips the top directory (linux-source-6.1/) so the tree lands directly in dest.
    const untar = spawn("sh", ["-c", `xz -dc -T2 | tar -x --strip-components=1 -C "$1"`, "sh", dest], {
      stdio: ["pipe", "ignore", "pipe"],
      signal: opts.signal,
    });
    let err = "";
    extract.stderr.on("data", (d) => {
      err += d;
    });
    untar.stderr.on("data", (d) => {
      err += d;
    });
    let done = 0;
    let last = 0;
    extract.stdout.on("data", (chunk: Buffer) => {
      done += chunk.length;
      if (Date.now() - last > 500) {
        last = Date.now();
        opts.progress?.("unpack", done / total);
      }
    });
    extract.stdout.pipe(untar.stdin);
    let exits = 0;
    let failed = false;
    const onExit = (what: string) => (code: number | null) => {
      if (code !== 0 && !failed) {
        failed = true;
        reject(
          new UserError(
            `unpacking ${deb} failed (${what} exit ${code}): ${err.trim().split("\n").slice(-3).join(" ")}; the .deb may be corrupt: retry 'ksplice lab prepare'.`,
            { code: "lab_corrupt" },
          ),
        );
      }
      if (++exits === 2 && !failed) resolve();
    };
    extract.on("error", reject).on("close", onExit("dpkg-deb | tar"));
    untar.on("error", reject).on("close", onExit("xz | tar"));
  });
  opts.progress?.("unpack", 1);
  log(`unpacked the source in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

async function make(
  dir: string,
  args: string[],
  step: string,
  log: (l: string) => void,
  opts: PrepareOptions,
): Promise<void> {
  log(`make ${args.join(" ")} in ${dir}`);
  const started = Date.now();
  let lines = 0;
  try {
    await mustRun("make", args, {
      cwd: dir,
      signal: opts.signal,
      onOutput: (chunk) => {
        lines += chunk.split("\n").length - 1;
        // `prepare` prints ~400 lines; report them as a rough fraction.
        opts.progress?.(step, Math.min(0.99, lines / 400));
      },
    });
  } catch (err) {
    if (err instanceof ToolError) {
      throw new UserError(
        `'make ${args.join(" ")}' failed in ${dir}; fix the cause below and retry 'ksplice lab prepare':\n${err.tail}`,
        {
          code: "lab_prepare",
          cause: err,
        },
      );
    }
    throw err;
  }
  opts.progress?.(step, 1);
  log(`${step} took ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** extractVmlinux runs the tree's scripts/extract-vmlinux, writing its output to `out`. */
async function extractVmlinux(script: string, vmlinuz: string, out: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const fd = openSync(out, "w");
    const child = spawn("sh", [script, vmlinuz], { stdio: ["ignore", fd, "pipe"] });
    let err = "";
    child.stderr!.on("data", (d) => {
      err += d;
    });
    child.on("error", reject);
    child.on("close", (code) => {
      closeSync(fd);
      if (code === 0) resolve();
      else
        reject(
          new UserError(
            `${script} ${vmlinuz} failed (exit ${code}): ${err.trim()}; retry 'ksplice lab prepare'.`,
            { code: "lab_prepare" },
          ),
        );
    });
  });
}
