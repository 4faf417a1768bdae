// Measures `ksplice create` (createUpdate, as the CLI calls it, with the cached core module):
// wall time of 3 runs each for three one-file patches against the prepared lab tree, per patch
// and overall, with the median of the slow passes. Prints figures next to a target; asserts nothing.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildCore } from "../src/kbuild/module.js";
import { cacheRoot, prepareLab } from "../src/lab/index.js";
import { createUpdate } from "../src/update/create.js";
import { max, median, min, noteOtherGuests, REPO, secs, table } from "./common.js";

const RUNS = 3;
const PATCHES = [
  "examples/proc-version-banner.patch",
  "test/update/fixtures/cmdline-a.patch",
  "test/update/fixtures/uname-syscall.patch",
];
const PASSES = ["build pre", "build pre and post (sections)", "build module"];

noteOtherGuests("at the start");
const lab = await prepareLab();
const coreModule = (headers: string) => buildCore(headers, join(cacheRoot(), "modules"));
await coreModule(lab.headersDir); // build (or find) the cached core once, outside the timings

const out = mkdtempSync(join(tmpdir(), "ksplice-bench-create-"));
const rows: string[][] = [];
const passRows: string[][] = [];
const all: number[] = [];
try {
  for (const patch of PATCHES) {
    const wall: number[] = [];
    const passMs = new Map<string, number[]>();
    let object = "";
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      const res = await createUpdate({
        src: lab.sourceDir,
        patches: [join(REPO, patch)],
        applied: [],
        outputDir: out,
        coreModule,
        log: () => {},
        signal: new AbortController().signal,
      });
      wall.push(performance.now() - t0);
      object = [...new Set(res.manifest.targets.map((t) => t.object))].join(", ");
      for (const t of res.timings) passMs.set(t.pass, [...(passMs.get(t.pass) ?? []), t.ms]);
    }
    all.push(...wall);
    const name = patch.split("/").pop() ?? patch;
    rows.push([name, object, secs(median(wall)), secs(min(wall)), secs(max(wall))]);
    passRows.push([name, ...PASSES.map((p) => secs(median(passMs.get(p) ?? [0])))]);
    console.log(`${name}: ${wall.map(secs).join(", ")}`);
  }
  noteOtherGuests("at the end");
} finally {
  rmSync(out, { recursive: true, force: true });
}

console.log();
table(["patch", "object", `median of ${RUNS}`, "min", "max"], rows);
console.log();
table(["patch (pass medians)", ...PASSES], passRows);
console.log();
table(
  ["measure", "median", "min", "max", "target"],
  [[`create, all ${all.length} runs`, secs(median(all)), secs(min(all)), secs(max(all)), "< 30 s"]],
);
