// Hooks: functions of a patch that run when its update is applied or reversed, for changes
// that replacing code alone cannot make (initialising new data, converting old structures).
// A patch includes <linux/ksplice-patch.h> (installed in the build view by create) and names
// its hook functions with the macros there; each macro leaves a pointer to the function in a
// section named .ksplice_hook.KIND, which create turns into manifest entries and leaves out
// of the update module. The core calls hooks in Ksplice's order (see kmod/ksplice.c).
import type { ObjectDiff, Unit } from "../diff/index.js";
import { HOOK_KINDS, type HookKind } from "../package/manifest.js";
import type { Refusal } from "./refusal.js";

/** Hooks whose return value counts: non-zero aborts the transition. */
const INT_HOOKS = new Set<HookKind>(["pre_apply", "check_apply", "pre_reverse", "check_reverse"]);

/** HOOK_SECTION matches the sections the header's macros use. */
export const HOOK_SECTION = /^\.ksplice_hook\.([a-z_]+)$/;

/** KSPLICE_PATCH_H is include/linux/ksplice-patch.h as seen by a patch being built. */
export const KSPLICE_PATCH_H = `/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ksplice hooks, for patches turned into live updates by \`ksplice create\`:
 *
 *	#include <linux/ksplice-patch.h>
 *	static int refuse_if_busy(void) { return in_use ? -EBUSY : 0; }
 *	ksplice_check_apply(refuse_if_busy);
 *
 * pre_* and check_* hooks return int: non-zero aborts the apply or undo, and the fail_* hooks
 * run. check_*, apply and reverse hooks run under stop_machine (interrupts off): they must not
 * sleep. pre_*, post_* and fail_* hooks run in process context. Hooks must be new functions
 * of the patch. In an ordinary kernel build (without ksplice) the macros compile to nothing
 * more than an unused pointer in a section the kernel never reads.
 */
#ifndef _LINUX_KSPLICE_PATCH_H
#define _LINUX_KSPLICE_PATCH_H
#include <linux/compiler.h>

typedef int (*ksplice_int_hook_t)(void);
typedef void (*ksplice_void_hook_t)(void);

#define __ksplice_hook(kind, type, fn)					\\
	static type __ksplice_hook_##kind##_##fn			\\
	__used __section(".ksplice_hook." #kind) __aligned(8) = fn

${HOOK_KINDS.map(
  (k) =>
    `#define ksplice_${k}(fn) __ksplice_hook(${k}, ${INT_HOOKS.has(k) ? "ksplice_int_hook_t" : "ksplice_void_hook_t"}, fn)`,
).join("\n")}

#endif
`;

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
