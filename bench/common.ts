// Helpers shared by the benchmark scripts: medians, aligned tables, and a note about other
// QEMU guests on the host (they share the 2 cores and inflate every lab figure).
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

/** REPO is the checkout's root (this file runs as dist/bench/common.js). */
export const REPO = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export const min = (xs: number[]) => Math.min(...xs);
export const max = (xs: number[]) => Math.max(...xs);
export const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** table prints rows under a header, columns padded; numbers-looking cells are right-aligned. */
export function table(header: string[], rows: string[][]): void {
  const all = [header, ...rows];
  const width = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (/^[-\d.]/.test(c) ? c.padStart(width[i]) : c.padEnd(width[i])))
      .join("  ")
      .trimEnd();
  console.log(line(header));
  console.log(width.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
}

/** noteOtherGuests says how many qemu processes are running (call it while none is ours). */
export function noteOtherGuests(when: string): void {
  let n = 0;
  try {
    n = execFileSync("ps", ["-C", "qemu-system-x86_64", "-o", "pid="], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l.trim()).length;
  } catch {
    // ps exits 1 when nothing matches
  }
  console.log(
    n
      ? `note: ${n} other QEMU guest(s) running on this host ${when}; figures may be inflated`
      : `note: no other QEMU guest running on this host ${when}`,
  );
}
