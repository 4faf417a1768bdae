// Measures apply and undo in one lab guest (smp 2, core loaded with bench=1):
//  1. the machine pause of `ksplice apply` and `ksplice undo` (pause_ns, median of CYCLES each)
//     with 1, 100 and 1,000 sleeping threads, next to bare stop_machine at the same thread
//     count (20 empty calls before each cycle, so both see the same host load), and the ratio;
//  2. the per-call cost of a patched function: getcpu(2) ns/call unpatched, patched and after
//     undo (ROUNDS rounds of measure, apply, measure, undo), the update being
//     bench/fixtures/getcpu-nop.patch (one nop more, same behaviour).
// Prints figures next to targets; asserts nothing. BENCH_CYCLES and BENCH_CALLS override counts.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildCore } from "../src/kbuild/module.js";
import { Core } from "../src/kernel/core.js";
import { labCoreHost } from "../src/lab/host.js";
import { cacheRoot, type LabVM, prepareLab, withLab } from "../src/lab/index.js";
import { createUpdate } from "../src/update/create.js";
import { max, median, min, noteOtherGuests, REPO, table } from "./common.js";

const THREADS = [1, 100, 1000];
const CYCLES = Number(process.env.BENCH_CYCLES ?? 10);
const BARE_PER_CYCLE = 20;
const CALLS = Number(process.env.BENCH_CALLS ?? 2_000_000);
const ROUNDS = 3;
const RUNS_PER_PHASE = 2;
const ID = "benchcpu";

noteOtherGuests("at the start");
const lab = await prepareLab();
const work = mkdtempSync(join(tmpdir(), "ksplice-bench-apply-"));
try {
  // Host side: the core module, the update package, the two static test programs.
  const cached = await buildCore(lab.headersDir, join(cacheRoot(), "modules"));
  const coreKo = join(work, "ksplice.ko");
  copyFileSync(cached, coreKo);
  const pkg = (
    await createUpdate({
      src: lab.sourceDir,
      patches: [join(REPO, "bench", "fixtures", "getcpu-nop.patch")],
      applied: [],
      id: ID,
      outputDir: work,
      coreModule: async () => cached,
      log: () => {},
      signal: new AbortController().signal,
    })
  ).path;
  const cc = (name: string, extra: string[]) =>
    execFileSync("gcc-12", [
      "-O2",
      "-static",
      ...extra,
      "-o",
      join(work, name),
      join(REPO, "bench", "fixtures", `${name}.c`),
    ]);
  cc("sleepers", ["-pthread"]);
  cc("getcpu-loop", []);

  await withLab(
    async (vm) => {
      const core = new Core({ host: labCoreHost(vm) });
      await core.ensureLoaded(coreKo, { bench: 1 });
      const apply = async () => JSON.parse(await sh(vm, `ksplice apply --json ${pkg}`)).pauseNs as number;
      const undo = async () => JSON.parse(await sh(vm, `ksplice undo --json ${ID}`)).pauseNs as number;

      // --- 1. pause of apply and undo against bare stop_machine ---
      const rows: string[][] = [];
      const ratios: string[][] = [];
      let worst = "";
      for (const n of THREADS) {
        const pid = await startSleepers(vm, join(work, "sleepers"), n);
        const tasks = (await sh(vm, "ls -d /proc/[0-9]*/task/[0-9]* | wc -l")).trim();
        const bare: number[] = [];
        const applied: number[] = [];
        const undone: number[] = [];
        for (let i = 0; i < CYCLES; i++) {
          bare.push(await core.benchStopMachine(BARE_PER_CYCLE));
          applied.push(await apply());
          undone.push(await undo());
        }
        await sh(vm, `kill -9 ${pid}; while [ -e /proc/${pid} ]; do sleep 0.1; done`);
        const range = (xs: number[]) => `${us(min(xs))}–${us(max(xs))}`;
        rows.push([
          String(n),
          tasks,
          ...[bare, applied, undone].flatMap((xs) => [us(median(xs)), range(xs)]),
        ]);
        // Host load only ever adds time, so the ratio of minimums is the one least disturbed by it.
        const r = (f: (xs: number[]) => number) => [f(applied) / f(bare), f(undone) / f(bare)];
        ratios.push([String(n), ...[...r(median), ...r(min)].map((x) => `${x.toFixed(2)}x`)]);
        if (n === 1000)
          worst = `${Math.max(...r(median)).toFixed(2)}x (medians), ${Math.max(...r(min)).toFixed(2)}x (minimums)`;
        console.log(`${n} threads, µs: bare ${bare.map(us).join(" ")}`);
        console.log(`  apply ${applied.map(us).join(" ")}`);
        console.log(`  undo  ${undone.map(us).join(" ")}`);
      }
      console.log();
      console.log(
        `Machine pause, µs, over ${CYCLES} cycles; bare = empty stop_machine (each sample the median of ${BARE_PER_CYCLE} calls, taken before each cycle)`,
      );
      table(["threads", "tasks", "bare", "min–max", "apply", "min–max", "undo", "min–max"], rows);
      console.log();
      table(
        [
          "threads",
          "apply/bare (medians)",
          "undo/bare (medians)",
          "apply/bare (minimums)",
          "undo/bare (minimums)",
        ],
        ratios,
      );
      console.log(
        `target: pause with 1,000 threads within 3x bare stop_machine; worst of apply/undo: ${worst}`,
      );

      // --- 2. per-call overhead of the patched function ---
      const measure = async (into: number[]) => {
        for (let i = 0; i < RUNS_PER_PHASE; i++)
          into.push(Number(await sh(vm, `${join(work, "getcpu-loop")} ${CALLS}`)));
      };
      const before: number[] = [];
      const patched: number[] = [];
      const after: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        await measure(r === 0 ? before : after);
        await apply();
        await measure(patched);
        await undo();
      }
      await measure(after);
      const unpatched = [...before, ...after];
      const ns = (x: number) => x.toFixed(1);
      console.log();
      console.log(
        `getcpu(2), ns per call: ${CALLS.toLocaleString("en-US")} calls per run; ${ROUNDS} rounds of (${RUNS_PER_PHASE} runs, apply, ${RUNS_PER_PHASE} runs, undo), ${RUNS_PER_PHASE} runs after`,
      );
      table(
        ["phase", "runs", "median", "min", "max"],
        [
          [
            "unpatched, before the first apply",
            String(before.length),
            ns(median(before)),
            ns(min(before)),
            ns(max(before)),
          ],
          [
            "patched (jump to the update)",
            String(patched.length),
            ns(median(patched)),
            ns(min(patched)),
            ns(max(patched)),
          ],
          [
            "unpatched, after an undo",
            String(after.length),
            ns(median(after)),
            ns(min(after)),
            ns(max(after)),
          ],
        ],
      );
      console.log(
        `patched − unpatched: ${ns(median(patched) - median(unpatched))} ns per call (medians), ${ns(min(patched) - min(unpatched))} ns (minimums)`,
      );
      console.log(
        "target: the cost of one direct jump, a few ns on hardware. These are TCG (emulated) times, not hardware times; a difference within the run-to-run spread is noise.",
      );
    },
    { paths: lab, withPaths: [work], smp: 2 },
  );
  noteOtherGuests("at the end");
} finally {
  rmSync(work, { recursive: true, force: true });
}

function us(ns: number): string {
  return (ns / 1000).toFixed(1);
}

/** sh runs a shell command in the guest and returns its stdout; a failure throws with its output. */
async function sh(vm: LabVM, cmd: string): Promise<string> {
  const r = await vm.exec(["sh", "-c", cmd], { timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`in the guest, '${cmd}' exited ${r.code}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** startSleepers starts the sleepers program with n threads in the background; returns its pid once all exist. */
async function startSleepers(vm: LabVM, bin: string, n: number): Promise<number> {
  const out = `/tmp/sleepers-${n}.out`;
  const pid = Number((await sh(vm, `${bin} ${n} >${out} 2>&1 </dev/null & echo $!`)).trim());
  await sh(vm, `for i in $(seq 600); do grep -q ready ${out} && exit 0; sleep 0.1; done; cat ${out}; exit 1`);
  return pid;
}
