// Folder src/diff: units of an object, the correlation funnel, comparison modulo relocations.
// Imports only src/elf, src/x86 and src/collections; knows nothing of kernels, builds or packages.
//
// `diff` engine: compares two builds of one source file, function by function and object by
// object, modulo relocations. Used by `ksplice diff` and by `ksplice create`.
import type { ElfFile } from "../elf/reader.js";
import { compareUnits, type Difference } from "./compare.js";
import { correlate, type Pairing } from "./correlate.js";
import { ObjectUnits, type Unit } from "./units.js";

export { correlate, type Pairing } from "./correlate.js";
export { ObjectUnits, type Unit } from "./units.js";

/** ChangedUnit is a pair that differs, with the first difference. */
export interface ChangedUnit {
  pre: Unit;
  post: Unit;
  difference: Difference;
}

/** ObjectDiff is the result of comparing a pre and a post object. */
export interface ObjectDiff {
  pre: ObjectUnits;
  post: ObjectUnits;
  pairing: Pairing;
  changed: ChangedUnit[];
  added: Unit[];
  removed: Unit[];
  changedData: ChangedUnit[];
  addedData: Unit[];
  removedData: Unit[];
}

/** diffObjects compares two relocatable objects built from the same source file. */
export function diffObjects(preElf: ElfFile, postElf: ElfFile): ObjectDiff {
  const pre = new ObjectUnits(preElf);
  const post = new ObjectUnits(postElf);
  const pairing = correlate(pre, post);
  const changed: ChangedUnit[] = [];
  const changedData: ChangedUnit[] = [];
  for (const [a, b] of pairing.pairs) {
    const d = compareUnits(a, b, pairing);
    if (!d) continue;
    (a.kind === "func" ? changed : changedData).push({ pre: a, post: b, difference: d });
  }
  const byName = (x: { name: string }, y: { name: string }) =>
    x.name < y.name ? -1 : x.name > y.name ? 1 : 0;
  const by = <T extends { post: Unit }>(x: T, y: T) => byName(x.post, y.post);
  return {
    pre,
    post,
    pairing,
    changed: changed.sort(by),
    changedData: changedData.sort(by),
    added: pairing.postOnly.filter((u) => u.kind === "func").sort(byName),
    removed: pairing.preOnly.filter((u) => u.kind === "func").sort(byName),
    addedData: pairing.postOnly.filter((u) => u.kind === "data").sort(byName),
    removedData: pairing.preOnly.filter((u) => u.kind === "data").sort(byName),
  };
}

/** DiffReport is the JSON form printed by `ksplice diff --json`. */
export interface DiffReport {
  changed: string[];
  new: string[];
  removed: string[];
  dataChanged: string[];
  newData: string[];
  removedData: string[];
  details: Record<string, { offset: number; reason: string }>;
}

/** report turns a diff into its JSON form (names sorted). */
export function report(d: ObjectDiff): DiffReport {
  const details: DiffReport["details"] = {};
  for (const c of [...d.changed, ...d.changedData]) details[c.post.name] = { ...c.difference };
  return {
    changed: d.changed.map((c) => c.post.name),
    new: d.added.map((u) => u.name),
    removed: d.removed.map((u) => u.name),
    dataChanged: d.changedData.map((c) => c.post.name),
    newData: d.addedData.map((u) => u.name),
    removedData: d.removedData.map((u) => u.name),
    details,
  };
}
