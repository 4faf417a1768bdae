// Measures the lab: boot-to-first-command latency of a guest (from LabVM.boot() until
// vm.exec("true") returns; 5 boots of an already prepared lab) and a warm prepareLab()
// (median of 3). Prints figures next to targets; asserts nothing.
import { LabVM, prepareLab } from "../src/lab/index.js";
import { max, median, min, noteOtherGuests, secs, table } from "./common.js";

const BOOTS = 5;
const PREPARES = 3;

noteOtherGuests("at the start");
const paths = await prepareLab(); // makes sure the lab is warm; not timed

const prepareMs: number[] = [];
for (let i = 0; i < PREPARES; i++) {
  const t0 = performance.now();
  await prepareLab();
  prepareMs.push(performance.now() - t0);
}

console.log(`guest: ${paths.release}, smp 2, 1024 MB`);
const bootRows: string[][] = [];
const bootMs: number[] = [];
let accel = "";
for (let i = 1; i <= BOOTS; i++) {
  const t0 = performance.now();
  const vm = await LabVM.boot({ paths });
  try {
    await vm.exec("true");
    const ms = performance.now() - t0;
    bootMs.push(ms);
    accel = vm.accel;
    bootRows.push([String(i), secs(ms), secs(vm.bootMs)]);
  } finally {
    await vm.shutdown();
  }
}
noteOtherGuests("at the end");
console.log();
table(["boot", "to first command", "of which qemu start → agent hello"], bootRows);

console.log();
table(
  ["measure", "median", "min", "max", "target"],
  [
    [
      `boot to first command (${accel})`,
      secs(median(bootMs)),
      secs(min(bootMs)),
      secs(max(bootMs)),
      "< 6 s (TCG)",
    ],
    ["warm prepareLab()", secs(median(prepareMs)), secs(min(prepareMs)), secs(max(prepareMs)), "< 2 s"],
  ],
);
