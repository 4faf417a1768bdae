// What a patch may use of ksplice: <linux/ksplice-patch.h> (kmod/ksplice-patch.h, installed in
// the build view by create): hooks and shadow data. Hooks are functions of a patch that run
// when its update is applied or reversed, for changes that replacing code alone cannot make
// (initialising new data, converting old structures). A patch names its hook functions with
// the macros there; each macro leaves a pointer to the function in a section named
// .ksplice_hook.KIND, which create turns into manifest entries and leaves out of the update
// module. The core calls hooks in Ksplice's order (see kmod/core.c). The shadow functions are
// exports of the core (CORE_EXPORTS).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { ObjectDiff, Unit } from "../diff/index.js";
import { repoKmodDir } from "../kbuild/module.js";
import { HOOK_KINDS, type HookKind } from "../package/manifest.js";
import type { Refusal } from "./refusal.js";

/** HOOK_SECTION matches the sections the header's macros use. */
export const HOOK_SECTION = /^\.ksplice_hook\.([a-z_]+)$/;

/** INT_HOOKS are the hooks whose return value counts: non-zero aborts the transition. */
export const INT_HOOKS: ReadonlySet<HookKind> = new Set<HookKind>([
  "pre_apply",
  "check_apply",
  "pre_reverse",
  "check_reverse",
]);

/**
 * CORE_EXPORTS are the functions the core module exports to updates (the shadow API of
 * ksplice-patch.h): the update module imports them, and the module loader resolves them in the
 * core, loaded first.
 */
export const CORE_EXPORTS: ReadonlySet<string> = new Set([
  "ksplice_shadow_get",
  "ksplice_shadow_alloc",
  "ksplice_shadow_get_or_alloc",
  "ksplice_shadow_free",
  "ksplice_shadow_free_all",
]);

/** kspliceHeader is include/linux/ksplice-patch.h as a patch sees it: kmod/ksplice-patch.h. */
export function kspliceHeader(): string {
  return readFileSync(join(repoKmodDir(), "ksplice-patch.h"), "utf8");
}

/** Hook is one hook of an object: its kind and the (new) function it calls. */
export interface Hook {
  kind: HookKind;
  fn: Unit;
}

/** isHookData tells whether a unit is a hook pointer left by the header's macros. */
export function isHookData(u: Unit): boolean {
  return HOOK_SECTION.test(u.section.name);
}

/** findHooks reads the hook pointers the patch added to one object. */
export function findHooks(object: string, diff: ObjectDiff): { hooks: Hook[]; refusals: Refusal[] } {
  const hooks: Hook[] = [];
  const refusals: Refusal[] = [];
  // Only new pointers: a hook of an update this one is built on (an applied patch) is not its own.
  for (const u of diff.addedData.filter(isHookData)) {
    const kind = HOOK_SECTION.exec(u.section.name)![1] as HookKind;
    const r = u.relocs.find((x) => x.offset === 0);
    // A global function is referred to by name, a static one by its unit.
    const t = r?.target;
    const fn =
      t?.kind === "unit" && t.delta === 0n
        ? t.unit
        : t?.kind === "symbol" && t.addend === 0n
          ? diff.post.units.find((x) => x.name === t.name && x.kind === "func")
          : undefined;
    if (!HOOK_KINDS.includes(kind)) {
      refusals.push({ object, symbol: u.name, reason: `unknown hook kind ${kind} (${u.section.name})` });
    } else if (u.size !== 8 || !fn || fn.kind !== "func") {
      refusals.push({
        object,
        symbol: u.name,
        reason: `a ${kind} hook must point to a function defined in ${object} by the patch`,
      });
    } else if (!diff.added.includes(fn)) {
      refusals.push({
        object,
        symbol: fn.name,
        reason: `is a ${kind} hook but not a new function of the patch (hooks must be added by the patch)`,
      });
    } else hooks.push({ kind, fn });
  }
  return { hooks, refusals };
}
