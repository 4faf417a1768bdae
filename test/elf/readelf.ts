// Parses what `readelf -SsrW` prints, so the reader and writer tests can compare against binutils.
import { run } from "../helpers/compile.js";

/** ReadelfSection is one row of `readelf -SW`. */
export interface ReadelfSection {
  index: number;
  name: string;
  type: string;
  offset: bigint;
  size: bigint;
  entsize: bigint;
  flags: string;
  link: number;
  info: number;
  align: bigint;
}

/** ReadelfSymbol is one row of `readelf -sW`. */
export interface ReadelfSymbol {
  index: number;
  value: bigint;
  size: bigint;
  type: string;
  bind: string;
  ndx: string;
  name: string;
}

/** ReadelfRela is one row of `readelf -rW`, with the relocation section it came from. */
export interface ReadelfRela {
  section: string;
  offset: bigint;
  sym: number;
  type: string;
}

/** readelfSections runs `readelf -SW`. */
export function readelfSections(path: string): ReadelfSection[] {
  const out: ReadelfSection[] = [];
  const re =
    /^\s*\[\s*(\d+)\]\s+(\S*)\s+(\S+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+(\S*)\s+(\d+)\s+(\d+)\s+(\d+)$/;
  for (const line of run("readelf", ["-SW", path]).split("\n")) {
    const m = re.exec(line);
    if (!m) continue;
    out.push({
      index: Number(m[1]),
      name: m[2],
      type: m[3],
      offset: BigInt(`0x${m[4]}`),
      size: BigInt(`0x${m[5]}`),
      entsize: BigInt(`0x${m[6]}`),
      flags: m[7],
      link: Number(m[8]),
      info: Number(m[9]),
      align: BigInt(m[10]),
    });
  }
  return out;
}

/** readelfSymbols runs `readelf -sW` and returns the .symtab rows. */
export function readelfSymbols(path: string): ReadelfSymbol[] {
  const out: ReadelfSymbol[] = [];
  const re = /^\s*(\d+):\s+([0-9a-f]+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s?(.*)$/;
  for (const line of run("readelf", ["-sW", path]).split("\n")) {
    const m = re.exec(line);
    if (!m) continue;
    out.push({
      index: Number(m[1]),
      value: BigInt(`0x${m[2]}`),
      size: BigInt(m[3]),
      type: m[4],
      bind: m[5],
      ndx: m[7],
      name: m[8],
    });
  }
  return out;
}

/** readelfRelocs runs `readelf -rW`. */
export function readelfRelocs(path: string): ReadelfRela[] {
  const out: ReadelfRela[] = [];
  let section = "";
  for (const line of run("readelf", ["-rW", path]).split("\n")) {
    const h = /^Relocation section '([^']+)'/.exec(line);
    if (h) {
      section = h[1];
      continue;
    }
    const m = /^([0-9a-f]{16})\s+([0-9a-f]{16})\s+(\S+)/.exec(line);
    if (!m) continue;
    out.push({ section, offset: BigInt(`0x${m[1]}`), sym: Number(BigInt(`0x${m[2]}`) >> 32n), type: m[3] });
  }
  return out;
}
