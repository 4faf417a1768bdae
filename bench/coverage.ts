// The measure of the engine: Debian's own stable delta for the lab kernel, fix by fix. Every
// changed .c file between the lab's linux-source (6.1.176-1) and the newest one in the registry
// whose code is in the lab kernel becomes a one-file patch (src/lab/corpus.ts). Each goes
// through `ksplice create` on the host; then, in batches per lab boot, `ksplice apply`, a check
// (`ksplice view` lists it, the kernel log is clean), `ksplice undo` and the same check.
//
// Outcomes: pass (created, applied, undone, clean log); refused (create said why: no compiled
// change, __init-only, data); alone (the patched file does not compile without the header change
// of its upstream commit); busy (apply refused with code_busy: a task never leaves the replaced
// code); unloadable (a module fix whose module the lab guest cannot load: a driver with no
// device); fail (anything else: an engine bug or limit). Module fixes run with their module
// loaded (modprobe in the guest, Debian's own .ko). Coverage = pass / the fixes whose change
// reaches running code (pass, fail, busy, and refusals of such changes), for built-in and module
// fixes apart. A fix create refuses as a change of data, for which bench/fixtures/custom has a
// hand-written version (hooks or shadows instead of the data change, as Ksplice's custom code),
// is tried in that version; the summary counts those passes apart.
//
//   npm run bench:coverage -- [--sample N] [--subsystem PREFIX]... [--file PATH]... [--no-lab]
//                             [--only builtin|modules] [--batch N] [--json FILE] [--jobs N] [--lab-jobs N]
//                             [--load-modules first|later]
// With --load-modules later, a module fix is applied while its module is not loaded (pending),
// then the module is loaded and its part must be live before undo: the path of modules loaded
// after an update.
// Prints a table and one summary line, and writes a JSON report. Asserts nothing.
import { existsSync, linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { UserError } from "../src/errors.js";
import { buildCore } from "../src/kbuild/module.js";
import { type Fix, prepareCorpus, sampleFixes } from "../src/lab/corpus.js";
import { cacheRoot, type LabVM, prepareLab, withLab } from "../src/lab/index.js";
import { createUpdate } from "../src/update/create.js";
import { max, median, noteOtherGuests, REPO, secs, table } from "./common.js";

const usage = `usage: npm run bench:coverage -- [--sample N] [--subsystem DIR]... [--file PATH]...
       [--only builtin|modules] [--load-modules first|later] [--no-lab] [--batch N] [--jobs N] [--lab-jobs N]
       [--json FILE] [--version DEBIAN-VERSION]`;

function parseOptions() {
  try {
    return parseArgs({ options: OPTIONS });
  } catch (e) {
    console.error(`bench:coverage: ${(e as Error).message}\n${usage}`);
    process.exit(2);
  }
}

const OPTIONS = {
  sample: { type: "string" },
  subsystem: { type: "string", multiple: true },
  file: { type: "string", multiple: true },
  "no-lab": { type: "boolean" },
  batch: { type: "string", default: "20" },
  json: { type: "string" },
  jobs: { type: "string", default: "1" },
  "lab-jobs": { type: "string", default: "1" },
  version: { type: "string" },
  only: { type: "string" },
  "load-modules": { type: "string", default: "first" },
} as const;
const { values: args } = parseOptions();
if (!["first", "later"].includes(args["load-modules"])) {
  console.error(`bench:coverage: --load-modules is first or later\n${usage}`);
  process.exit(2);
}
const later = args["load-modules"] === "later";

type Outcome = "pass" | "refused" | "alone" | "busy" | "unloadable" | "fail";

interface Step {
  result: string;
  message?: string;
  seconds?: number;
  pauseNs?: number;
  /** apply --json's own step times (matchMs, totalMs, ...), when it reports them. */
  stepsMs?: Record<string, number>;
}

interface Row {
  file: string;
  state: "y" | "m";
  objects: string[];
  added: number;
  removed: number;
  id: string;
  create: Step & {
    functions?: string[];
    newFunctions?: string[];
    timings?: Array<{ pass: string; ms: number }>;
  };
  apply?: Step & { pauseNs?: number };
  undo?: Step & { pauseNs?: number };
  outcome: Outcome;
  reason: string;
  package?: string;
  /** Loadable modules the update patches (loaded in the guest before apply). */
  modules?: string[];
  /** Why a module could not be loaded in the guest (the fix is then not tried). */
  load?: string;
  /** With --load-modules later: the update's parts once its modules loaded (the core's `parts`). */
  parts?: string;
  /** Warnings the kernel logged while the guest loaded the fix's modules, before apply. */
  loadLog?: string;
  /** The hand-written version of the fix that was applied instead (bench/fixtures/custom). */
  custom?: string;
}

// Create refusals that are the tool's answer about the fix, not a failure of the engine.
const REFUSALS = new Set(["not_compiled", "no_change", "unsupported_change", "module_patch"]);
const BAD_LOG = /WARNING:|Oops|BUG:|Call Trace|general protection|kernel panic|RIP:/;

// Ctrl-C stops the run: builds are killed and their views unmounted, the report is written.
const stop = new AbortController();
for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => stop.abort());

noteOtherGuests("at the start");
const lab = await prepareLab({ log: (l) => console.error(`lab: ${l}`) });
const corpus = await prepareCorpus(lab, { version: args.version, log: (l) => console.error(`corpus: ${l}`) });
let fixes: Fix[] = corpus.fixes;
if (args.only === "builtin" || args.only === "modules")
  fixes = fixes.filter((f) => f.state === (args.only === "builtin" ? "y" : "m"));
if (args.file?.length) fixes = fixes.filter((f) => args.file!.includes(f.file));
if (args.subsystem?.length)
  fixes = fixes.filter((f) => args.subsystem!.some((s) => f.file.startsWith(s.replace(/\/?$/, "/"))));
if (args.sample) fixes = sampleFixes(fixes, Number(args.sample));
console.error(
  `corpus: ${corpus.from} -> ${corpus.to}: ${corpus.fixes.length} changed .c files in the lab kernel ` +
    `(${corpus.notBuilt} more changed files are not built for it); running ${fixes.length}`,
);

const work = mkdtempSync(join(tmpdir(), "ksplice-coverage-"));
const pkgDir = join(work, "packages");
mkdirSync(pkgDir);
const coreDir = join(cacheRoot(), "modules");
await buildCore(lab.headersDir, coreDir); // once, outside the timings

const rows: Row[] = fixes.map((f, i) => ({
  file: f.file,
  state: f.state,
  objects: f.objects.map((o) => o.object),
  added: f.added,
  removed: f.removed,
  id: `cov${String(i).padStart(4, "0")}`,
  create: { result: "pending" },
  outcome: "fail",
  reason: "",
}));

try {
  // --- create, on the host ---
  const jobs = Math.max(1, Number(args.jobs));
  let next = 0;
  let done = 0;
  const worker = async () => {
    for (let i = next++; i < fixes.length && !stop.signal.aborted; i = next++) {
      await createOne(fixes[i], rows[i]);
      done++;
      const r = rows[i];
      console.error(
        `[${done}/${fixes.length}] create ${r.file}: ${r.create.result} (${r.create.seconds?.toFixed(1)} s)${r.create.result === "ok" ? "" : `: ${firstLine(r.create.message)}`}`,
      );
    }
  };
  await Promise.all(Array.from({ length: jobs }, worker));

  // --- apply, check, undo, check: in the lab, a batch per boot ---
  const ready = rows.filter((r) => r.create.result === "ok");
  if (!args["no-lab"] && ready.length) {
    // Batches run in --lab-jobs guests at once: a guest mostly runs one single-threaded `ksplice`.
    const size = Math.max(1, Number(args.batch));
    let b = 0;
    const guest = async () => {
      for (let at = b; at < ready.length && !stop.signal.aborted; at = b) {
        b += size;
        await labBatch(ready.slice(at, at + size), at, ready.length);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Number(args["lab-jobs"])) }, guest));
  }
  for (const r of rows) decide(r);
} finally {
  report();
  rmSync(work, { recursive: true, force: true });
}

/**
 * customPatch: the hand-written version of a fix that create refuses as a change of data, when
 * there is one: the same fix with hooks or shadows instead of the data change (Ksplice's "custom
 * code"; README: Changes to data). Named after the fix's file, its slashes made underscores.
 */
function customPatch(f: Fix): string | undefined {
  const p = join(REPO, "bench", "fixtures", "custom", `${f.file.replaceAll("/", "_")}.patch`);
  return existsSync(p) ? p : undefined;
}

async function createOne(f: Fix, r: Row): Promise<void> {
  await createFrom(f.patch, r);
  const custom = customPatch(f);
  if (r.create.result === "unsupported_change" && custom) {
    const refused = r.create;
    await createFrom(custom, r);
    const again: Row["create"] = r.create;
    r.custom = custom;
    if (again.result !== "ok")
      r.create = {
        ...refused,
        message: `${refused.message}\n(custom ${custom}: ${again.result}: ${again.message})`,
      };
  }
}

async function createFrom(patch: string, r: Row): Promise<void> {
  const t0 = performance.now();
  try {
    const res = await createUpdate({
      src: lab.sourceDir,
      patches: [patch],
      applied: [],
      id: r.id,
      outputDir: pkgDir,
      coreModule: (h) => buildCore(h, coreDir),
      log: () => {},
      signal: stop.signal,
    });
    r.create = {
      result: "ok",
      functions: res.manifest.targets.map((t) => t.name),
      newFunctions: res.manifest.newFunctions.map((n) => n.name),
      timings: res.timings,
    };
    r.package = res.path;
    const modules = [...new Set(res.manifest.objects.flatMap((o) => (o.module ? [o.module] : [])))];
    if (modules.length) r.modules = modules;
  } catch (e) {
    r.create =
      e instanceof UserError
        ? { result: e.code, message: e.message }
        : { result: "internal", message: e instanceof Error ? (e.stack ?? e.message) : String(e) };
  }
  r.create.seconds = (performance.now() - t0) / 1000;
}

async function labBatch(batch: Row[], offset: number, total: number): Promise<void> {
  const dir = join(work, `batch-${offset}`);
  mkdirSync(dir);
  for (const r of batch) linkSync(r.package!, join(dir, basename(r.package!)));
  const pending = [...batch];
  while (pending.length && !stop.signal.aborted) {
    const before = pending.length;
    await withLab(
      async (vm) => {
        await sh(vm, "dmesg -c >/dev/null");
        while (pending.length && !stop.signal.aborted) {
          const r = pending[0];
          try {
            await applyOne(vm, r, join(dir, basename(r.package!)));
          } catch (e) {
            // The guest died or hung: record it on this fix and go on in a fresh guest.
            r.apply ??= {
              result: "guest_died",
              message: `${(e as Error).message}\n${vm.console().slice(-3000)}`,
            };
            pending.shift();
            throw e;
          }
          pending.shift();
          console.error(
            `[${offset + batch.length - pending.length}/${total}] lab ${r.file}: apply ${r.apply?.result}, undo ${r.undo?.result ?? "-"}`,
          );
        }
      },
      {
        withPaths: [dir],
        memoryMb: 2048,
        log: () => {},
        modules: [...new Set(batch.flatMap((r) => r.modules ?? []))],
      },
    ).catch((e) => {
      if (pending.length === before) throw e; // boot failed: nothing was tried
    });
  }
}

/**
 * applyOne applies, checks, undoes and checks one update in one guest command (each `ksplice`
 * run starts Node, seconds under TCG): the check is the core's own state in sysfs and the log.
 */
async function applyOne(vm: LabVM, r: Row, pkg: string): Promise<void> {
  const dir = `/sys/kernel/ksplice/${r.id}`;
  const mods = r.modules ?? [];
  // A module fix needs its module loaded; one the guest cannot load (no such device) is not
  // tried. With --load-modules later it is loaded after apply, unless it is in use already.
  for (const m of mods) {
    if (later) await vm.exec(["sh", "-c", `modprobe -r ${m} 2>/dev/null || rmmod ${m} 2>/dev/null`]);
    const load = await vm.exec(["modprobe", m], { timeoutMs: 120_000 });
    if (load.code !== 0) {
      r.load = `modprobe ${m}: ${(load.stderr || load.stdout).trim() || `exit ${load.code}`}`;
      return;
    }
    if (later) await vm.exec(["sh", "-c", `modprobe -r ${m} 2>/dev/null || rmmod ${m} 2>/dev/null`]);
  }
  // What loading the modules logged (a crypto module's self-tests run in a kthread just after
  // modprobe) is the lab's, not the update's: kept apart, and not checked as apply's log.
  if (mods.length) {
    const loaded = (await vm.exec(["sh", "-c", "sleep 1; dmesg -c"])).stdout;
    const bad = loaded.split("\n").filter((l) => BAD_LOG.test(l));
    if (bad.length) r.loadLog = bad.slice(0, 5).join("\n");
  }
  // busybox has no date +%N: time in centiseconds from /proc/uptime.
  const script = `
cs() { read u _ </proc/uptime; echo "\${u%.*}\${u#*.}"; }
t0=$(cs); ksplice apply --json --raw-errors ${pkg} >/tmp/a.out 2>/tmp/a.err; a=$?; t1=$(cs)
echo "apply=$a $(( (t1 - t0) * 10 ))"; echo "stage=$(cat ${dir}/stage 2>/dev/null)"
${later && mods.length ? `[ $a = 0 ] && for m in ${mods.join(" ")}; do modprobe $m >/dev/null 2>&1 || echo "load=$m"; done; echo "--parts"; cat ${dir}/parts 2>/dev/null; echo "--endparts"` : ""}
echo "--log"; dmesg -c; echo "--end"
if [ $a = 0 ]; then
  t0=$(cs); ksplice undo --json --raw-errors ${r.id} >/tmp/u.out 2>/tmp/u.err; u=$?; t1=$(cs)
  echo "undo=$u $(( (t1 - t0) * 10 ))"; [ -e ${dir} ] && echo "left=dir"; lsmod | grep -q '^ksplice_${r.id} ' && echo "left=module"
  [ $u = 0 ] || ksplice undo ${r.id} >/dev/null 2>&1
  echo "--log"; dmesg -c; echo "--end"
fi
echo "--apply"; cat /tmp/a.out /tmp/a.err; echo "--undo"; cat /tmp/u.out /tmp/u.err 2>/dev/null; rm -f /tmp/u.out /tmp/u.err`;
  const out = (await vm.exec(["sh", "-c", script], { timeoutMs: 900_000 })).stdout;
  const field = (k: string) => new RegExp(`^${k}=(.*)$`, "m").exec(out)?.[1];
  const logs = [...out.matchAll(/^--log\n([\s\S]*?)^--end$/gm)].map((m) => m[1]);
  const after = (k: string, next?: string) => {
    const from = out.indexOf(`--${k}\n`);
    if (from < 0) return "";
    const to = next ? out.indexOf(`--${next}\n`, from) : -1;
    return out.slice(from + k.length + 3, to < 0 ? out.length : to);
  };
  const outcome = (text: string, code: string, ms: string): Step => {
    const seconds = Number(ms) / 1000;
    if (code !== "0")
      return {
        result: text.split("\n").find((l) => /^[a-z_]+$/.test(l)) ?? `exit ${code}`,
        message: text.trim(),
        seconds,
      };
    const json = JSON.parse(text.slice(0, text.lastIndexOf("}") + 1));
    return { result: "ok", seconds, pauseNs: json.pauseNs, stepsMs: json.timings } as Step;
  };
  const [aCode, aMs] = (field("apply") ?? "? 0").split(" ");
  r.apply = outcome(after("apply", "undo"), aCode, aMs);
  if (r.apply.result === "ok" && field("stage") !== "applied")
    r.apply = {
      ...r.apply,
      result: "not_applied",
      message: `${dir}/stage says ${field("stage") || "nothing"}`,
    };
  if (later && mods.length && r.apply.result === "ok") {
    r.parts = /^--parts\n([\s\S]*?)^--endparts$/m.exec(out)?.[1]?.trim();
    const notLive = (r.parts ?? "").split("\n").filter((l) => l && !/^\S+ live /.test(l));
    if (notLive.length)
      r.apply = {
        ...r.apply,
        result: "part_not_live",
        message: `after loading ${mods.join(", ")}: ${notLive.join("; ")}`,
      };
  }
  checkLog(r, "apply", logs[0] ?? "");
  if (aCode !== "0") return;
  const [uCode, uMs] = (field("undo") ?? "? 0").split(" ");
  r.undo = outcome(after("undo"), uCode, uMs);
  const left = [...out.matchAll(/^left=(.*)$/gm)].map((m) => m[1]);
  if (r.undo.result === "ok" && left.length)
    r.undo = { ...r.undo, result: "left_behind", message: `after undo: ${left.join(", ")}` };
  checkLog(r, "undo", logs[1] ?? "");
}

function checkLog(r: Row, step: "apply" | "undo", log: string): void {
  const bad = log.split("\n").filter((l) => BAD_LOG.test(l));
  if (bad.length) {
    const s = r[step]!;
    r[step] = { ...s, result: "bad_log", message: `${s.message ?? ""}\nkernel log:\n${log.slice(-4000)}` };
  }
}

async function sh(vm: LabVM, cmd: string) {
  return vm.exec(["sh", "-c", cmd], { timeoutMs: 120_000 });
}

function decide(r: Row): void {
  const c = r.create;
  if (r.load) {
    r.outcome = "unloadable";
    r.reason = `the lab cannot load the module: ${r.load}`;
  } else if (c.result === "does_not_compile") {
    r.outcome = "alone";
    r.reason = `does not compile alone: ${firstLine(c.message)}`;
  } else if (c.result !== "ok") {
    r.outcome = REFUSALS.has(c.result) ? "refused" : "fail";
    r.reason = `create: ${c.result}: ${firstLine(c.message)}`;
  } else if (args["no-lab"]) {
    r.outcome = "pass";
    r.reason = "created (not applied: --no-lab)";
  } else if (r.apply?.result === "code_busy") {
    // Refused at apply, by design: a task never leaves the code (a kthread's main loop, init in wait4).
    r.outcome = "busy";
    r.reason = `apply: code_busy: ${firstLine(r.apply.message)}`;
  } else if (r.apply?.result === "unsupported_change") {
    // Refused at apply for a limitation named in the message (a jump label under the jump).
    r.outcome = "refused";
    r.reason = `apply: unsupported_change: ${firstLine(r.apply.message)}`;
  } else if (r.apply?.result !== "ok") {
    r.outcome = "fail";
    r.reason = `apply: ${r.apply?.result ?? "not run"}: ${firstLine(r.apply?.message)}`;
  } else if (r.undo?.result !== "ok") {
    r.outcome = "fail";
    r.reason = `undo: ${r.undo?.result ?? "not run"}: ${firstLine(r.undo?.message)}`;
  } else {
    r.outcome = "pass";
    r.reason = r.custom ? `with hand-written hooks or shadows: ${basename(r.custom)}` : "";
  }
}

function firstLine(s?: string): string {
  const lines = (s ?? "").split("\n").filter((l) => l.trim() && !/^[a-z_]+$/.test(l.trim()));
  return (lines[0] ?? "").replace(/^ksplice: /, "").slice(0, 400);
}

function report(): void {
  console.log();
  table(
    ["file", "functions", "create", "secs", "apply", "undo", "reason"],
    rows.map((r) => [
      r.file,
      r.create.functions ? String(r.create.functions.length) : "-",
      r.create.result,
      r.create.seconds === undefined ? "-" : r.create.seconds.toFixed(1),
      r.apply?.result ?? "-",
      r.undo?.result ?? "-",
      r.reason.slice(0, 160),
    ]),
  );
  const count = (o: Outcome, state?: "y" | "m") =>
    rows.filter((r) => r.outcome === o && (!state || r.state === state)).length;
  const times = rows.filter((r) => r.create.result === "ok").map((r) => (r.create.seconds ?? 0) * 1000);
  // Coverage is over the fixes whose change reaches running code: passed, failed, busy, and the
  // refusals of changes that do (unsupported_change); not no_change, modules, or "alone".
  const line = (state?: "y" | "m") => {
    const pass = count("pass", state);
    const reaching = rows.filter(
      (r) =>
        (!state || r.state === state) &&
        (["fail", "busy"].includes(r.outcome) ||
          (r.outcome === "refused" &&
            (r.create.result === "unsupported_change" || r.apply?.result === "unsupported_change"))),
    ).length;
    const pct = pass + reaching ? ((100 * pass) / (pass + reaching)).toFixed(1) : "-";
    const unloadable = count("unloadable", state);
    const custom = rows.filter(
      (r) => r.outcome === "pass" && r.custom && (!state || r.state === state),
    ).length;
    return `${pass} passed${custom ? ` (${custom} with hand-written hooks or shadows, bench/fixtures/custom)` : ""}, ${count("fail", state)} failed, ${count("busy", state)} busy (code_busy at apply), ${count("refused", state)} refused, ${count("alone", state)} do not compile alone${unloadable ? `, ${unloadable} in modules the lab cannot load` : ""}; coverage ${pct}% of ${pass + reaching} that reach running code`;
  };
  console.log();
  console.log(
    `coverage ${corpus.from} -> ${corpus.to}: ${rows.length} fixes: ${line()}; ` +
      `built-in: ${line("y")}; modules: ${line("m")}; create ${times.length ? `median ${secs(median(times))}, max ${secs(max(times))}` : "-"}`,
  );
  const out =
    args.json ??
    join(
      cacheRoot(),
      "corpus",
      "reports",
      `coverage-${corpus.to}-${new Date().toISOString().replace(/[:.]/g, "")}.json`,
    );
  mkdirSync(join(out, ".."), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify({ schema: 1, from: corpus.from, to: corpus.to, args, createdAt: new Date().toISOString(), rows }, null, 1)}\n`,
  );
  // The apply command in the guest (TCG), and run-pre matching inside it, over the applied fixes.
  const applied = rows.filter((r) => r.apply?.result === "ok");
  const spread = (xs: number[]) => (xs.length ? `median ${secs(median(xs))}, max ${secs(max(xs))}` : "-");
  const matchMs = applied.flatMap((r) =>
    r.apply?.stepsMs?.matchMs === undefined ? [] : [r.apply.stepsMs.matchMs],
  );
  console.log(
    `apply in the lab guest over ${applied.length} applied fixes: command ${spread(applied.map((r) => (r.apply?.seconds ?? 0) * 1000))}; run-pre matching ${spread(matchMs)}`,
  );
  console.log(`report: ${out}`);
}
