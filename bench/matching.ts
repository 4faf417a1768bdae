// Measures run-pre matching and the whole `ksplice apply` command in one lab guest, for a set of
// update packages: the examples, test fixtures that apply to the lab kernel, and the largest
// fixes of the coverage corpus (a built-in one and a module one).
//  1. matching: the real matchTargets against the live kernel, each run a fresh `node` process
//     (as apply pays it: cold JIT, cold caches), timed inside it: reading /proc/kallsyms, then
//     matchTargets (pre objects parsed, every target matched, relocations resolved);
//  2. the command: `ksplice apply --json` then `ksplice undo`, wall time of each process.
// Each --build is a compiled tree (tsc's outDir: BUILD/src/...); with several, runs interleave
// build by build so each sees the same host load, and the table sets them side by side.
// Packages are kept in --packages DIR (default ~/.cache/ksplice/bench-matching) and made again
// only when their patch changes. Prints tables; asserts nothing.
//
//   npm run bench:matching -- [--build DIR]... [--runs N] [--cycles N] [--only NAME]...
//                             [--packages DIR] [--profile DIR]
// --profile DIR writes one `node --cpu-prof` profile of matching per package and build there.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { gunzipSync } from "node:zlib";
import { buildCore } from "../src/kbuild/module.js";
import { prepareCorpus } from "../src/lab/corpus.js";
import { cacheRoot, type LabVM, prepareLab, withLab } from "../src/lab/index.js";
import { createUpdate } from "../src/update/create.js";
import { max, median, min, noteOtherGuests, REPO, table } from "./common.js";

const usage = `usage: npm run bench:matching -- [--build DIR]... [--runs N] [--cycles N] [--only NAME]...
       [--packages DIR] [--profile DIR]`;

const { values: args } = (() => {
  try {
    return parseArgs({
      options: {
        build: { type: "string", multiple: true },
        runs: { type: "string", default: "5" },
        cycles: { type: "string", default: "3" },
        only: { type: "string", multiple: true },
        packages: { type: "string" },
        profile: { type: "string" },
      },
    });
  } catch (e) {
    console.error(`bench:matching: ${(e as Error).message}\n${usage}`);
    process.exit(2);
  }
})();

/** The compiled tree this script is part of (BUILD/bench/matching.js). */
const SELF_BUILD = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const builds = (args.build?.length ? args.build : [SELF_BUILD]).map((b) => resolve(b));
const RUNS = Number(args.runs);
const CYCLES = Number(args.cycles);

/** BenchPackage is one update measured: its patch(es) (a corpus fix's are found by name). */
interface BenchPackage {
  name: string;
  id: string;
  patches: string[];
}

// The largest fixes of Debian's stable delta (6.1.192-3) for the lab kernel, by functions
// replaced, among those that create today: in a module, the largest of a coverage run's report
// (dm-thin-metadata.c and dm-cache-target.c, larger, are now refused for layout changes); built
// in, the largest of the fixes with the most changed hunks (most of those do not compile alone).
const LARGEST_BUILTIN = "fs/namespace.c";
const LARGEST_MODULE = "fs/smb/server/vfs.c";

const fixture = (...p: string[]) => join(REPO, ...p);
const PACKAGES: BenchPackage[] = [
  {
    name: "proc-version-banner",
    id: "bmbanner",
    patches: [fixture("examples", "proc-version-banner.patch")],
  },
  {
    name: "tcp-sysctl-bounds-hooks",
    id: "bmtcp",
    patches: [fixture("examples", "tcp-sysctl-bounds-hooks.patch")],
  },
  { name: "cls-route-shadows", id: "bmclsroute", patches: [fixture("examples", "cls-route-shadows.patch")] },
  { name: "getcpu-nop", id: "bmgetcpu", patches: [fixture("bench", "fixtures", "getcpu-nop.patch")] },
  {
    name: "pipe-read-count",
    id: "bmpipe",
    patches: [fixture("test", "update", "fixtures", "pipe-read-count.patch")],
  },
  {
    name: "meminfo-inlined-helper",
    id: "bmmeminfo",
    patches: [fixture("test", "update", "fixtures", "meminfo-inlined-helper.patch")],
  },
  {
    name: "uname-syscall",
    id: "bmuname",
    patches: [fixture("test", "update", "fixtures", "uname-syscall.patch")],
  },
  {
    name: "overlay-show-options",
    id: "bmoverlay",
    patches: [fixture("test", "kernel", "fixtures", "overlay-show-options.patch")],
  },
  { name: LARGEST_BUILTIN, id: "bmbigbuiltin", patches: [] },
  { name: LARGEST_MODULE, id: "bmbigmodule", patches: [] },
];

// The guest-side driver: `match BUILD PKG` times Kallsyms.read and matchTargets in this
// process; `cmd ARGV...` times one command. Plain JS, so every build can be driven by it.
const DRIVER = `
import { spawnSync } from "node:child_process";
const [mode, ...rest] = process.argv.slice(2);
if (mode === "cmd") {
  const t0 = performance.now();
  const r = spawnSync(rest[0], rest.slice(1), { encoding: "utf8" });
  const ms = performance.now() - t0;
  if (r.status !== 0) { console.error(r.stdout + r.stderr); process.exit(1); }
  let timings;
  try { timings = JSON.parse(r.stdout).timings; } catch {}
  console.log(JSON.stringify({ ms, timings }));
} else {
  const [build, pkgPath] = rest;
  const { Kallsyms } = await import(build + "/src/live/kallsyms.js");
  const { matchTargets } = await import(build + "/src/kernel/matching.js");
  const { openPackage } = await import(build + "/src/package/package.js");
  const pkg = await openPackage(pkgPath);
  const t0 = performance.now();
  const kallsyms = Kallsyms.read();
  const t1 = performance.now();
  const loaded = new Set(kallsyms.entries.map((e) => e.module));
  const scope = (mod) => mod === undefined || loaded.has(mod);
  const r = matchTargets(pkg.manifest, pkg.dir, { partial: false, scope, kallsyms });
  const t2 = performance.now();
  pkg.close();
  console.log(JSON.stringify({ kallsymsMs: t1 - t0, matchMs: t2 - t1, matched: r.matched.length, relocs: r.relocs.length }));
}
`;

noteOtherGuests("at the start");
const lab = await prepareLab({ log: (l) => console.error(`lab: ${l}`) });
const pkgDir = resolve(args.packages ?? join(cacheRoot(), "bench-matching"));
mkdirSync(pkgDir, { recursive: true });
const work = mkdtempSync(join(tmpdir(), "ksplice-bench-matching-"));
try {
  const coreDir = join(cacheRoot(), "modules");
  await buildCore(lab.headersDir, coreDir);
  let chosen = PACKAGES.filter(
    (p) => !args.only?.length || args.only.includes(p.name) || args.only.includes(p.id),
  );
  if (chosen.some((p) => p.patches.length === 0)) {
    const corpus = await prepareCorpus(lab, { log: (l) => console.error(`corpus: ${l}`) });
    for (const p of chosen.filter((x) => x.patches.length === 0)) {
      const fix = corpus.fixes.find((f) => f.file === p.name);
      if (fix) p.patches = [fix.patch];
      else console.error(`corpus: ${p.name} is not in the corpus ${corpus.to}; left out`);
    }
    chosen = chosen.filter((p) => p.patches.length > 0);
  }
  // --- packages, made on the host (kept while their patches do not change) ---
  const paths = new Map<string, string>();
  const functions = new Map<string, number>();
  // The modules the packages patch: loaded in the guest (modprobe) before anything is measured.
  const modules = new Set<string>();
  for (const p of chosen) {
    const path = join(pkgDir, `ksplice-${p.id}.tar.gz`);
    const keyFile = join(pkgDir, `${p.id}.key`);
    const key = createHash("sha256")
      .update(lab.release)
      .update(p.patches.map((f) => readFileSync(f, "utf8")).join("\0"))
      .digest("hex");
    if (!existsSync(path) || !existsSync(keyFile) || readFileSync(keyFile, "utf8") !== key) {
      console.error(`create ${p.name}...`);
      const res = await createUpdate({
        src: lab.sourceDir,
        patches: p.patches,
        applied: [],
        id: p.id,
        outputDir: pkgDir,
        coreModule: (h) => buildCore(h, coreDir),
        log: () => {},
        signal: new AbortController().signal,
      });
      if (res.path !== path) throw new Error(`create wrote ${res.path}, expected ${path}`);
      writeFileSync(keyFile, key);
    }
    paths.set(p.name, path);
    const m = readManifest(path);
    functions.set(p.name, m.targets.length);
    for (const o of m.objects) if (o.module) modules.add(o.module);
  }
  const driver = join(work, "driver.mjs");
  writeFileSync(driver, DRIVER);
  await withLab(
    async (vm) => {
      for (const mod of modules) await sh(vm, `modprobe ${mod}`);
      const matchRows: string[][] = [];
      const cmdRows: string[][] = [];
      const label = (b: string) => (builds.length > 1 ? basename(b) : "");
      for (const p of chosen) {
        const pkg = paths.get(p.name)!;
        const match = new Map<string, { kall: number[]; match: number[] }>(
          builds.map((b) => [b, { kall: [], match: [] }]),
        );
        const apply = new Map<
          string,
          { apply: number[]; undo: number[]; steps: Array<Record<string, number>> }
        >(builds.map((b) => [b, { apply: [], undo: [], steps: [] }]));
        let matched = 0;
        for (let i = 0; i < RUNS; i++)
          for (const b of builds) {
            const r = JSON.parse(await sh(vm, `node ${driver} match ${b} ${pkg}`));
            match.get(b)!.kall.push(r.kallsymsMs);
            match.get(b)!.match.push(r.matchMs);
            matched = r.matched;
          }
        if (args.profile)
          for (const b of builds) {
            const dir = `/tmp/prof-${p.id}-${basename(b)}`;
            await sh(
              vm,
              `rm -rf ${dir}; node --cpu-prof --cpu-prof-dir=${dir} ${driver} match ${b} ${pkg} >/dev/null`,
            );
            const file = (await sh(vm, `ls ${dir}/*.cpuprofile | head -1`)).trim();
            mkdirSync(args.profile, { recursive: true });
            writeFileSync(join(args.profile, `${p.id}-${basename(b)}.cpuprofile`), await vm.readFile(file));
          }
        for (let i = 0; i < CYCLES; i++)
          for (const b of builds) {
            const cli = `${b}/src/cli/run.js`;
            const a = JSON.parse(await sh(vm, `node ${driver} cmd node ${cli} apply --json ${pkg}`));
            const u = JSON.parse(await sh(vm, `node ${driver} cmd node ${cli} undo --json ${p.id}`));
            apply.get(b)!.apply.push(a.ms);
            apply.get(b)!.undo.push(u.ms);
            if (a.timings) apply.get(b)!.steps.push(a.timings);
          }
        for (const b of builds) {
          const m = match.get(b)!;
          matchRows.push([
            p.name,
            label(b),
            `${matched}/${functions.get(p.name)}`,
            ms(median(m.kall)),
            ms(median(m.match)),
            `${ms(min(m.match))}–${ms(max(m.match))}`,
          ]);
          const a = apply.get(b)!;
          cmdRows.push([
            p.name,
            label(b),
            ms(median(a.apply)),
            `${ms(min(a.apply))}–${ms(max(a.apply))}`,
            ms(median(a.undo)),
            a.steps.length ? stepsLine(a.steps) : "",
          ]);
        }
        console.error(`measured ${p.name}`);
      }
      console.log();
      console.log(
        `Matching, ms, ${RUNS} runs each (a fresh node process per run), in the guest: kallsyms = Kallsyms.read(); match = matchTargets`,
      );
      table(["package", "build", "matched/targets", "kallsyms", "match", "min–max"], matchRows);
      console.log();
      console.log(`The command, ms of wall time, ${CYCLES} cycles of apply then undo (each its own process)`);
      table(
        ["package", "build", "apply", "min–max", "undo", "apply steps (medians, from --json timings)"],
        cmdRows,
      );
      console.log("These are TCG (emulated) times, not hardware times.");
    },
    {
      paths: lab,
      withPaths: [work, pkgDir, ...builds.filter((b) => !b.startsWith(join(REPO, "dist")))],
      modules: [...modules],
      smp: 2,
    },
  );
  noteOtherGuests("at the end");
} finally {
  rmSync(work, { recursive: true, force: true });
}

function ms(x: number): string {
  return x.toFixed(0);
}

/** stepsLine prints the median of each named step of apply's timings. */
function stepsLine(steps: Array<Record<string, number>>): string {
  const keys = Object.keys(steps[0]);
  return keys.map((k) => `${k.replace(/Ms$/, "")} ${ms(median(steps.map((s) => s[k] ?? 0)))}`).join(", ");
}

/** readManifest reads what the bench needs of a package's manifest. */
function readManifest(path: string): { targets: unknown[]; objects: Array<{ module?: string }> } {
  // A package is a small .tar.gz: gunzip it and walk the ustar headers to the manifest.
  const tarBytes = gunzipSync(readFileSync(path));
  for (let off = 0; off + 512 <= tarBytes.length; ) {
    const name = tarBytes
      .subarray(off, off + 100)
      .toString("latin1")
      .replace(/\0.*$/s, "");
    const size = Number.parseInt(
      tarBytes
        .subarray(off + 124, off + 136)
        .toString("latin1")
        .trim() || "0",
      8,
    );
    if (!name) break;
    if (name.endsWith("manifest.json"))
      return JSON.parse(tarBytes.subarray(off + 512, off + 512 + size).toString("utf8"));
    off += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error(`${path}: no manifest.json`);
}

/** sh runs a shell command in the guest and returns its stdout; a failure throws with its output. */
async function sh(vm: LabVM, cmd: string): Promise<string> {
  const r = await vm.exec(["sh", "-c", cmd], { timeoutMs: 600_000 });
  if (r.code !== 0) throw new Error(`in the guest, '${cmd}' exited ${r.code}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}
