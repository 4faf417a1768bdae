// Decides what an object's diff means for a live update: which functions are replaced, which
// are new, which data is new, and which changes cannot be made by replacing code. Those are
// refused, naming the symbol and the reason. Changes that cannot reach a running kernel
// (__init/__exit code and data, which ran at boot or never runs; exports) are left out, named.
// Hook pointers (update/hooks.ts) are taken out of the new data and listed as hooks.

import type { ObjectDiff, ObjectUnits, Unit } from "../diff/index.js";
import { SHF } from "../elf/constants.js";
import { findHooks, type Hook, isHookData } from "./hooks.js";
import type { Ignored, Refusal } from "./refusal.js";

export type { Ignored, Refusal } from "./refusal.js";

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
  /** Changes that cannot reach the running kernel: left out, and said so. */
  ignored: Ignored[];
  /** What the plan does that a user should know (changed const data copied). */
  notes: string[];
}

// Sections the kernel frees after boot or never keeps in built-in code: __init/__exit code and
// data, the initcall and exitcall tables. (.ref.text is ordinary text. __meminit code stays
// when memory hotplug is configured, as on Debian's kernels: it is init code only without.)
const INIT_SECTIONS = /^\.(init|exit)\.|^\.(initcall|exitcall|con_initcall)[^/]*$/;
const MEMINIT_SECTIONS = /^\.meminit\./;
// __exit code and data, and the exitcall table: a loadable module keeps and runs them at rmmod.
const EXIT_SECTIONS = /^\.exit(call)?\./;

/** ClassifyOptions are the facts of the kernel's configuration that classify needs. */
export interface ClassifyOptions {
  /** CONFIG_MEMORY_HOTPLUG: __meminit code and data are kept after boot. */
  memoryHotplug: boolean;
  /** The loadable module the object is part of, if any (its __exit code runs at unload). */
  module?: string;
}
// Sections whose code must not be patched: it runs where a jump cannot be trusted.
const NO_PATCH_SECTIONS = /^\.(noinstr|entry)\.text|^\.cpuidle\.text|^\.head\.text|^\.static_call\.text/;
// Data that is per-call-site bookkeeping, copied with the code that uses it: a change is not refused.
const COPIED_DATA_SECTIONS = /^__dyndbg|^\.rodata\.__func__|^__tracepoint_str|^\.data\.once$/;

// Sections that never reach the running kernel: build-time markers the linker script throws away
// (.discard.addressable), module information, which vmlinux keeps out of its image, and the
// layout changes a patch vouches for (update/layouts.ts), which only create reads.
const DISCARDED = /^\.discard|^\.modinfo$|^\.ksplice_layout$/;

/** initReason says why a change in an __init/__exit section cannot reach the running kernel. */
function initReason(section: string, what: "changes" | "adds", module?: string): string {
  if (module)
    return `${what} __init code or data (${section}) of module ${module}, which ran when the module was loaded and was freed`;
  return EXIT_SECTIONS.test(section)
    ? `${what} __exit code or data (${section}), which never runs in code built into the kernel`
    : `${what} __init code or data (${section}), which ran at boot and was freed`;
}

function isWritable(u: Unit): boolean {
  return (u.section.flags & BigInt(SHF.WRITE)) !== 0n;
}

/** classify turns an object's diff into a plan, collecting refusals instead of throwing. */
export function classify(
  object: string,
  diff: ObjectDiff,
  opts: ClassifyOptions = { memoryHotplug: true },
): ObjectPlan {
  // A module keeps its __exit code in its text (it runs at rmmod): a change there is replaced like
  // any other, not left out.
  const isExit = (sec: string) => EXIT_SECTIONS.test(sec);
  const isInit = (sec: string) =>
    (INIT_SECTIONS.test(sec) && !(opts.module && isExit(sec))) ||
    (!opts.memoryHotplug && MEMINIT_SECTIONS.test(sec));
  const refusals: Refusal[] = [];
  const refuse = (symbol: string, reason: string) => refusals.push({ object, symbol, reason });
  const ignored: Ignored[] = [];
  const ignore = (symbol: string, reason: string) => ignored.push({ object, symbol, reason });
  const replaced: ObjectPlan["replaced"] = [];
  const copied: Unit[] = [];
  const notes: string[] = [];
  /**
   * copyConst handles changed read-only data (a const table) the way a patch renaming it would:
   * the new contents go into the update as new data, and every function of the object that
   * reads it is replaced, changed or not, by one that reads the new copy. Returns why it cannot.
   */
  const copyConst = (d: Unit): string | undefined => {
    if (d.global) return "global, so other objects may read it";
    const readers = diff.post.units.filter((u) =>
      u.relocs.some((r) => r.target.kind === "unit" && r.target.unit === d),
    );
    const data = readers.find((u) => u.kind === "data");
    if (data) return `is referred to by data (${data.name})`;
    const fns: string[] = [];
    for (const f of readers) {
      if (isInit(f.section.name)) continue; // has run; keeps the old copy
      if (NO_PATCH_SECTIONS.test(f.section.name)) return `is read by ${f.name} in ${f.section.name}`;
      const pre = diff.pairing.partner.get(f);
      if (pre && !replaced.some((r) => r.post === f)) replaced.push({ pre, post: f });
      fns.push(f.name);
    }
    copied.push(d);
    notes.push(
      `${d.name}: its new contents (read-only data) are copied into the update and read by the replaced ${fns.join(", ")}; pointers to the old copy kept elsewhere since boot still see the old contents`,
    );
    return undefined;
  };
  for (const c of diff.changed) {
    const sec = c.pre.section.name;
    if (isInit(sec)) ignore(c.post.name, initReason(sec, "changes", opts.module));
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
    else if (isInit(sec)) ignore(c.post.name, initReason(sec, "changes", opts.module));
    else {
      const what = `changes initialised data (${c.difference.reason} at +0x${c.difference.offset.toString(16)}): replacing code does not change the running kernel's value of ${c.post.name}`;
      const why = isWritable(c.post) ? "writable" : copyConst(c.post);
      if (why === undefined) continue; // copied, its readers replaced
      if (!isWritable(c.post))
        refuse(
          c.post.name,
          `${what}, which is read-only (${sec}) and ${why}; give the new value another name in the patch, so that the code reading it is replaced by code that reads the new copy`,
        );
      else if (c.pre.size !== c.post.size)
        refuse(
          c.post.name,
          `changes the size of a variable (${c.pre.size} -> ${c.post.size} bytes): its layout in memory would change`,
        );
      else
        refuse(
          c.post.name,
          `${what}, which may have been modified since boot; set it from a ksplice_apply hook instead (README: Hooks)`,
        );
    }
  }
  // Exports: EXPORT_SYMBOL makes a section ___ksymtab[_gpl]+NAME (a label, not a unit).
  const exportsOf = (units: ObjectUnits) =>
    new Map(
      units.elf.sections.flatMap((sec) => {
        const m = /^___ksymtab(_gpl)?\+(.+)$/.exec(sec.name);
        return m ? [[m[2], m[1] ? "EXPORT_SYMBOL_GPL" : "EXPORT_SYMBOL"] as const] : [];
      }),
    );
  const preExports = exportsOf(diff.pre);
  const postExports = exportsOf(diff.post);
  for (const [name, how] of postExports)
    if (!preExports.has(name))
      ignore(name, `adds an export (${how}), and the running kernel's table of exports cannot grow`);
  for (const name of preExports.keys())
    if (!postExports.has(name))
      ignore(name, "removes an export, and the running kernel keeps exporting the code it had for modules");
  for (const u of [...diff.added, ...diff.addedData])
    if (isInit(u.section.name)) ignore(u.name, initReason(u.section.name, "adds", opts.module));
  const hooks = findHooks(object, diff);
  refusals.push(...hooks.refusals);
  return {
    object,
    diff,
    replaced,
    hooks: hooks.hooks,
    added: diff.added.filter((u) => !isInit(u.section.name)),
    notes,
    addedData: [...copied, ...diff.addedData].filter(
      (u) =>
        !/^__ksymtab|^__kstrtab|^__crc_/.test(u.name) &&
        !isInit(u.section.name) &&
        !DISCARDED.test(u.section.name) &&
        // pr_debug descriptors and __func__ strings go with the code that uses them.
        !COPIED_DATA_SECTIONS.test(u.section.name) &&
        !isHookData(u),
    ),
    refusals,
    ignored,
  };
}
