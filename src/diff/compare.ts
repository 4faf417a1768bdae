// Decides whether two paired units are equal modulo relocations: the bytes outside
// relocated fields are equal, and each relocation has the same offset, type and addend and
// refers to the same thing (the paired unit, the same external symbol, the same string
// contents). The first difference is reported with its offset, for the human report.
import { relocTypeName } from "../elf/constants.js";
import type { Pairing } from "./correlate.js";
import { contentKey, type Target, type Unit } from "./units.js";

/** Difference says where and how two units first differ. */
export interface Difference {
  offset: number;
  reason: string;
}

/** targetKey names a target after pairing: paired units share one key. */
export function targetKey(t: Target, pairing: Pairing, side: "pre" | "post"): string {
  switch (t.kind) {
    case "unit": {
      const u = t.unit;
      if (u.global) return `symbol ${u.name}+${t.delta}`;
      const p = pairing.partner.get(u);
      const id = p ? (side === "post" ? u.name : p.name) : `${side}-only ${u.name}`;
      return `${u.kind} ${id}+${t.delta}`;
    }
    case "symbol":
      return `symbol ${t.name}+${t.addend}`;
    default:
      return `${contentKey(t)}+${t.delta}`;
  }
}

function describe(t: Target): string {
  switch (t.kind) {
    case "unit":
      return `${t.unit.name}${t.delta ? `${t.delta > 0n ? "+" : ""}${t.delta}` : ""}`;
    case "symbol":
      return `${t.name}${t.addend ? `${t.addend > 0n ? "+" : ""}${t.addend}` : ""}`;
    default:
      return contentKey(t);
  }
}

/** compareUnits returns undefined when equal modulo relocations, else the first difference. */
export function compareUnits(pre: Unit, post: Unit, pairing: Pairing): Difference | undefined {
  if (pre.size !== post.size)
    return { offset: Math.min(pre.size, post.size), reason: `size ${pre.size} -> ${post.size}` };
  const a = Uint8Array.from(pre.bytes);
  const b = Uint8Array.from(post.bytes);
  const n = Math.max(pre.relocs.length, post.relocs.length);
  let relocDiff: Difference | undefined;
  for (let i = 0; i < n; i++) {
    const ra = pre.relocs[i];
    const rb = post.relocs[i];
    if (!ra || !rb || ra.offset !== rb.offset) {
      const off = Math.min(ra?.offset ?? Infinity, rb?.offset ?? Infinity);
      relocDiff ??= { offset: off, reason: `relocation at 0x${off.toString(16)} present in only one build` };
      break;
    }
    a.fill(0, ra.offset, ra.offset + ra.size);
    b.fill(0, rb.offset, rb.offset + rb.size);
    if (ra.type !== rb.type) {
      relocDiff ??= {
        offset: ra.offset,
        reason: `relocation type ${relocTypeName(ra.type)} -> ${relocTypeName(rb.type)}`,
      };
      continue;
    }
    if (targetKey(ra.target, pairing, "pre") !== targetKey(rb.target, pairing, "post")) {
      relocDiff ??= {
        offset: ra.offset,
        reason: `reference ${describe(ra.target)} -> ${describe(rb.target)}`,
      };
    }
  }
  // Branches into neighbouring functions of a shared section, by target (see units.ts).
  const m = Math.max(pre.branches.length, post.branches.length);
  for (let i = 0; i < m; i++) {
    const ba = pre.branches[i];
    const bb = post.branches[i];
    if (!ba || !bb || ba.offset !== bb.offset || ba.size !== bb.size) {
      const off = Math.min(ba?.offset ?? Infinity, bb?.offset ?? Infinity);
      relocDiff ??= {
        offset: off,
        reason: `branch at 0x${off.toString(16)} leaves the function in only one build`,
      };
      break;
    }
    a.fill(0, ba.offset, ba.offset + ba.size);
    b.fill(0, bb.offset, bb.offset + bb.size);
    const ta: Target = { kind: "unit", unit: ba.target, delta: ba.delta };
    const tb: Target = { kind: "unit", unit: bb.target, delta: bb.delta };
    if (targetKey(ta, pairing, "pre") !== targetKey(tb, pairing, "post"))
      relocDiff ??= { offset: ba.offset, reason: `branch ${describe(ta)} -> ${describe(tb)}` };
  }
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      if (relocDiff && relocDiff.offset < i) return relocDiff;
      return {
        offset: i,
        reason: `byte 0x${a[i].toString(16).padStart(2, "0")} -> 0x${b[i].toString(16).padStart(2, "0")}`,
      };
    }
  }
  return relocDiff;
}
