// Decides what an object's diff means for a live update: which functions are replaced, which
// are new, which data is new, and which changes cannot be made by replacing code. Those are
// refused, naming the symbol and the reason. Hook pointers (update/hooks.ts) are taken out of
// the new data and listed as hooks.

import type { ObjectDiff, Unit } from "../diff/index.js";
import { SHF } from "../elf/constants.js";
import { findHooks, type Hook, isHookData } from "./hooks.js";

/** Refusal is one change that replacing code cannot apply. */
export interface Refusal {
  object: string;
  symbol: string;
  reason: string;
}

/** ObjectPlan is what one object contributes to an update. */
export interface ObjectPlan {
  object: string;
  diff: ObjectDiff;
  /** Changed functions: pre unit (diffed build) and post unit (replacement). */
  replaced: Array<{ pre: Unit; post: Unit }>;
  added: Unit[];
  addedData: Unit[];
  /** Functions of the patch the core calls at apply/undo time. */
  hooks: Hook[];
  refusals: Refusal[];
}

const INIT_SECTIONS = /^\.(init|exit)\.(text|data|rodata)|^\.(ref|meminit)\.text/;
// Sections whose code must not be patched: it runs where a jump cannot be trusted.
const NO_PATCH_SECTIONS = /^\.(noinstr|entry)\.text|^\.cpuidle\.text|^\.head\.text|^\.static_call\.text/;
// Data that is per-call-site bookkeeping, copied with the code that uses it: a change is not refused.
const COPIED_DATA_SECTIONS = /^__dyndbg|^\.rodata\.__func__|^__tracepoint_str/;

// Sections the kernel's linker script throws away (build-time markers, e.g. .discard.addressable).
const DISCARDED = /^\.discard/;

function isWritable(u: Unit): boolean {
  return (u.section.flags & BigInt(SHF.WRITE)) !== 0n;
}

/** classify turns an object's diff into a plan, collecting refusals instead of throwing. */
export function classify(object: string, diff: ObjectDiff): ObjectPlan {
  const refusals: Refusal[] = [];
  const refuse = (symbol: string, reason: string) => refusals.push({ object, symbol, reason });
  const replaced: ObjectPlan["replaced"] = [];
  for (const c of diff.changed) {
    const sec = c.pre.section.name;
    if (INIT_SECTIONS.test(sec))
      refuse(c.post.name, `changes __init/__exit code (${sec}), which has run already or is freed`);
    else if (NO_PATCH_SECTIONS.test(sec))
      refuse(c.post.name, `changes code in ${sec}, which cannot be patched safely`);
    else replaced.push({ pre: c.pre, post: c.post });
  }
  for (const c of diff.changedData) {
    const sec = c.post.section.name;
    if (COPIED_DATA_SECTIONS.test(sec) || DISCARDED.test(sec)) continue;
    if (isHookData(c.post)) {
      refuse(c.post.name, "changes a hook of an update this one stacks on: not supported");
      continue;
    }
    if (/^\.data\.\.ro_after_init/.test(sec))
      refuse(c.post.name, `changes __ro_after_init data (${sec}), which is read-only once boot ends`);
    else if (INIT_SECTIONS.test(sec)) refuse(c.post.name, `changes __init data (${sec})`);
    else if (c.pre.size !== c.post.size)
      refuse(
        c.post.name,
        `changes the size of a variable (${c.pre.size} -> ${c.post.size} bytes): its layout in memory would change`,
      );
    else
      refuse(
        c.post.name,
        `changes initialised data (${c.difference.reason} at +0x${c.difference.offset.toString(16)}): the running kernel's value would not change${isWritable(c.post) ? " and may have been modified since boot" : ""}`,
      );
  }
  const exported = (u: Unit) => diff.pre.units.some((x) => x.name === `__ksymtab_${u.name}`);
  for (const u of diff.removed)
    if (u.global && exported(u)) refuse(u.name, "removes an exported symbol that modules may use");
  for (const u of diff.added)
    if (INIT_SECTIONS.test(u.section.name))
      refuse(u.name, `adds __init code (${u.section.name}), which would never run`);
  for (const u of diff.addedData)
    if (/^__ksymtab/.test(u.name))
      refuse(u.name.replace(/^__ksymtab_/, ""), "adds an exported symbol (EXPORT_SYMBOL)");
  const hooks = findHooks(object, diff);
  refusals.push(...hooks.refusals);
  return {
    object,
    diff,
    replaced,
    hooks: hooks.hooks,
    added: diff.added.filter((u) => !INIT_SECTIONS.test(u.section.name)),
    addedData: diff.addedData.filter(
      (u) =>
        !/^__ksymtab|^__kstrtab|^__crc_/.test(u.name) &&
        !INIT_SECTIONS.test(u.section.name) &&
        !DISCARDED.test(u.section.name) &&
        !isHookData(u),
    ),
    refusals,
  };
}
