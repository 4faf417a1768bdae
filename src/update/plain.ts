// The code that runs is the plain build's: the kernel's own flags, as the pre objects shipped for
// run-pre are built. create diffs the diffed builds (-ffunction-sections -fdata-sections), and
// the compiler sometimes inlines differently there: a static function out of line in the diffed
// build can be inlined into its callers in the plain one, so the running kernel has no such
// function. alignToPlain makes an object's plan right for the plain build:
//   - a changed function the running kernel lacks (its callers have it inlined) is copied as a
//     new function, and its callers are replaced instead: their post code calls the copy;
//   - a function the copied code calls that the running kernel lacks is copied too (unchanged);
//   - read-only data likewise; writable data the running kernel lacks cannot be copied (there
//     would be two of it) and is refused, unless it has no bytes: a zero-size object (a lockdep
//     `__key` when lockdep is off) has no state to share, and the plain build cannot be asked
//     which it is, since all of them sit at one offset and its relocations name only that.
import type { Pairing, Unit } from "../diff/index.js";
import { SHF } from "../elf/constants.js";
import type { ObjectPlan } from "./classify.js";
import type { Refusal } from "./refusal.js";

/** Aligned is a plan's copies, made right for the plain build. */
export interface Aligned {
  replaced: Array<{ pre: Unit; post: Unit }>;
  added: Unit[];
  addedData: Unit[];
  refusals: Refusal[];
  notes: string[];
}

/** alignToPlain adjusts plan's copies; plain pairs the plain pre build's units with the diffed pre's. */
export function alignToPlain(plan: ObjectPlan, plain: Pairing): Aligned {
  const prefsOf = (post: Unit) => plan.diff.pairing.partner.get(post);
  const running = (pre: Unit) => plain.partner.has(pre);
  const replaced = new Map(plan.replaced.map((r) => [r.post, r.pre]));
  const added = new Set(plan.added);
  const addedData = new Set(plan.addedData);
  const refusals: Refusal[] = [];
  const notes: string[] = [];
  const post = plan.diff.post.units;
  const callers = (u: Unit) =>
    post.filter(
      (c) => c.kind === "func" && c.relocs.some((r) => r.target.kind === "unit" && r.target.unit === u),
    );

  // Changed functions the running kernel lacks: copy them, replace their callers.
  for (let again = true; again; ) {
    again = false;
    for (const [p, pre] of replaced) {
      if (running(pre)) continue;
      replaced.delete(p);
      added.add(p);
      const via = callers(p).filter((c) => !replaced.has(c) && !added.has(c));
      for (const c of via) {
        const cpre = prefsOf(c);
        if (cpre) replaced.set(c, cpre);
      }
      notes.push(
        `${p.name} is inlined into its callers in the running kernel: it is added, and ${via.length ? via.map((c) => c.name).join(", ") : "its callers"} replaced`,
      );
      again = true;
    }
  }
  // What the copied code uses that the running kernel lacks: copied along.
  const copied = () => [...replaced.keys(), ...added, ...addedData];
  const refused = new Set<Unit>();
  for (let again = true; again; ) {
    again = false;
    for (const u of copied())
      for (const r of u.relocs) {
        if (r.target.kind !== "unit") continue;
        const t = r.target.unit;
        if (replaced.has(t) || added.has(t) || addedData.has(t) || refused.has(t)) continue;
        const tpre = prefsOf(t);
        if (!tpre || running(tpre)) continue;
        if (t.kind === "func") added.add(t);
        else if ((t.section.flags & BigInt(SHF.WRITE)) === 0n || t.size === 0) addedData.add(t);
        else {
          refused.add(t);
          refusals.push({
            object: plan.object,
            symbol: t.name,
            reason: `is data the new code uses that the running kernel's build of ${plan.object} lays out differently (it has no ${t.name}): ksplice cannot tell which data is the running kernel's`,
          });
          continue;
        }
        notes.push(
          t.kind === "data" && t.size === 0
            ? `${t.name}, which the new code uses, has no bytes (no state to share) and the running kernel's build cannot tell it from its neighbours: copied`
            : `${t.name}, which the new code uses, is inlined or folded away in the running kernel: copied`,
        );
        again = true;
      }
  }
  return {
    replaced: [...replaced].map(([p, pre]) => ({ pre, post: p })),
    added: [...added],
    addedData: [...addedData],
    refusals,
    notes,
  };
}
