// Pairs the units of a pre and a post object through a funnel, widest level first:
// exact name, then canonical name (compiler numbering ignored), then, among several
// candidates with one canonical name, identical content (checksum), then numbering order;
// last, numbered statics by base name and identical content.
// What stays unpaired is new (post only) or removed (pre only).
import { createHash } from "node:crypto";
import { groupBy } from "../collections.js";
import { canonicalDataName, cloneNumbers, numberedStatic } from "./names.js";
import { contentKey, type ObjectUnits, type Target, type Unit } from "./units.js";

/** Pairing maps each paired unit to its partner. */
export interface Pairing {
  pairs: Array<[pre: Unit, post: Unit]>;
  preOnly: Unit[];
  postOnly: Unit[];
  partner: Map<Unit, Unit>;
}

/** shallowKey names a target without relying on pairing (for checksums). */
export function shallowKey(t: Target): string {
  switch (t.kind) {
    case "unit":
      return `${t.unit.global ? t.unit.name : t.unit.canon}+${t.delta}`;
    case "symbol":
      return `${t.name}+${t.addend}`;
    default:
      return `${contentKey(t)}+${t.delta}`;
  }
}

/** checksum hashes a unit's bytes with relocated fields zeroed, plus its relocation targets. */
export function checksum(u: Unit): string {
  const masked = Uint8Array.from(u.bytes);
  const h = createHash("sha256");
  for (const r of u.relocs) {
    masked.fill(0, r.offset, r.offset + r.size);
    h.update(`${r.offset}:${r.type}:${shallowKey(r.target)};`);
  }
  for (const b of u.branches) {
    masked.fill(0, b.offset, b.offset + b.size);
    h.update(`${b.offset}:branch:${shallowKey({ kind: "unit", unit: b.target, delta: b.delta })};`);
  }
  h.update(masked);
  return `${u.kind}:${u.size}:${h.digest("hex")}`;
}

function byNumbering(a: Unit, b: Unit): number {
  const na = cloneNumbers(a.name);
  const nb = cloneNumbers(b.name);
  for (let i = 0; i < Math.min(na.length, nb.length); i++) if (na[i] !== nb[i]) return na[i] - nb[i];
  return na.length - nb.length || a.name.localeCompare(b.name);
}

/**
 * correlate pairs the units of two objects. With `sameSource` they are two builds of one source
 * that differ only in flags (the running kernel's plain build and the diffed build): there a
 * data name found once on each side names the same object even when it is numbered (a static
 * local's `.N`, `__COUNTER__` in `__UNIQUE_ID_`), since the front end numbers them before any of
 * those flags matter; functions still go through the funnel, as inlining and cloning differ.
 */
export function correlate(pre: ObjectUnits, post: ObjectUnits, opts: { sameSource?: boolean } = {}): Pairing {
  const partner = new Map<Unit, Unit>();
  const pairs: Array<[Unit, Unit]> = [];
  const pair = (a: Unit, b: Unit) => {
    partner.set(a, b);
    partner.set(b, a);
    pairs.push([a, b]);
  };
  const unpaired = (list: Unit[]) => list.filter((u) => !partner.has(u));

  // Level 1: same kind and exact name, when the name is unique on both sides.
  const preByName = groupBy(pre.units, (u) => `${u.kind} ${u.name}`);
  const postByName = groupBy(post.units, (u) => `${u.kind} ${u.name}`);
  for (const [k, a] of preByName) {
    const b = postByName.get(k);
    if (opts.sameSource && b && a.length === 1 && b.length === 1 && a[0].kind === "data") {
      pair(a[0], b[0]);
      continue;
    }
    // Numbered names are not identity when several canonical twins exist: leave those to level 2.
    if (b && a.length === 1 && b.length === 1 && a[0].canon === b[0].canon) {
      const twins =
        pre.units.filter((u) => u.canon === a[0].canon).length +
        post.units.filter((u) => u.canon === b[0].canon).length;
      if (twins === 2) pair(a[0], b[0]);
    }
  }
  // Level 2: canonical name; several candidates are told apart by content, then by numbering.
  const preByCanon = groupBy(unpaired(pre.units), (u) => `${u.kind} ${u.canon}`);
  const postByCanon = groupBy(unpaired(post.units), (u) => `${u.kind} ${u.canon}`);
  for (const [k, as] of preByCanon) {
    const bs = postByCanon.get(k);
    if (!bs) continue;
    if (as.length === 1 && bs.length === 1) {
      pair(as[0], bs[0]);
      continue;
    }
    const sums = new Map<Unit, string>([...as, ...bs].map((u) => [u, checksum(u)]));
    for (const a of as) {
      const same = bs.filter((b) => !partner.has(b) && sums.get(b) === sums.get(a));
      if (same.length === 1 && as.filter((x) => sums.get(x) === sums.get(a)).length === 1) pair(a, same[0]);
    }
    const restA = as.filter((u) => !partner.has(u)).sort(byNumbering);
    const restB = bs.filter((u) => !partner.has(u)).sort(byNumbering);
    for (let i = 0; i < Math.min(restA.length, restB.length); i++) pair(restA[i], restB[i]);
  }
  // Level 3: numbered statics whose users differ between the builds (a switch table, CSWTCH.N,
  // read from a function's hot part in one build and its .cold part in the other): the base
  // name, and identical content found once on each side.
  const base = (u: Unit) => {
    const b = u.kind === "data" && !u.global ? numberedStatic(u.name) : undefined;
    return b === undefined ? undefined : `${u.kind} ${canonicalDataName(b)}`;
  };
  const preByBase = groupBy(
    unpaired(pre.units).filter((u) => base(u)),
    (u) => base(u)!,
  );
  const postByBase = groupBy(
    unpaired(post.units).filter((u) => base(u)),
    (u) => base(u)!,
  );
  for (const [k, as] of preByBase) {
    const bs = postByBase.get(k);
    if (!bs) continue;
    const sums = new Map<Unit, string>([...as, ...bs].map((u) => [u, checksum(u)]));
    for (const a of as) {
      const same = bs.filter((b) => !partner.has(b) && sums.get(b) === sums.get(a));
      if (same.length === 1 && as.filter((x) => sums.get(x) === sums.get(a)).length === 1) pair(a, same[0]);
    }
  }
  return { pairs, preOnly: unpaired(pre.units), postOnly: unpaired(post.units), partner };
}
