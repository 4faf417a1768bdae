/* SPDX-License-Identifier: GPL-2.0 */
/*
 * <linux/ksplice-patch.h>: what a patch turned into a live update by `ksplice create` may use.
 * create installs this file in the patched build; the core module (kmod/) implements the
 * shadow functions and includes it for their declarations.
 *
 * Hooks, for changes that replacing code alone cannot make:
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
 *
 * Shadow data, for a new field of a structure whose instances already exist: data attached to
 * an object and found again by the object's address and an id (livepatch's shadow variables,
 * under ksplice_ names). One table is shared by all updates, so a later update finds the
 * shadows of an earlier one by id; the update that attaches shadows frees them in its reverse
 * hook (ksplice_shadow_free_all). Lookups take RCU, changes a spinlock with interrupts off:
 * usable from any context, with a gfp_t that suits it. A constructor runs under that spinlock
 * and must not sleep; a destructor too.
 *
 *	struct sk_extra { int retries; };
 *	#define SK_EXTRA 0x6b73706c01UL			// an id nobody else uses
 *	struct sk_extra *x = ksplice_shadow_get_or_alloc(sk, SK_EXTRA, sizeof(*x), GFP_ATOMIC,
 *							 NULL, NULL);
 *	static void drop_extra(void) { ksplice_shadow_free_all(SK_EXTRA, NULL); }
 *	ksplice_reverse(drop_extra);
 *
 * Layouts: create refuses a patch that changes the layout of a structure or union (a new field,
 * a moved one), since the running kernel's instances have the old one. When no instance made
 * before the update can reach the new code (it lives only on a stack, or only the new code
 * makes and uses it), the patch says so, naming the tag (or typedef name):
 *
 *	ksplice_layout_change(lb_env);	// on load_balance()'s stack only
 */
#ifndef _LINUX_KSPLICE_PATCH_H
#define _LINUX_KSPLICE_PATCH_H
#include <linux/compiler.h>
#include <linux/types.h>

typedef int (*ksplice_int_hook_t)(void);
typedef void (*ksplice_void_hook_t)(void);

#define __ksplice_hook(kind, type, fn)					\
	static type __ksplice_hook_##kind##_##fn			\
	__used __section(".ksplice_hook." #kind) __aligned(8) = fn

/* The hook points, in the order the core calls them (src/package/manifest.ts HOOK_KINDS). */
#define ksplice_pre_apply(fn) __ksplice_hook(pre_apply, ksplice_int_hook_t, fn)
#define ksplice_check_apply(fn) __ksplice_hook(check_apply, ksplice_int_hook_t, fn)
#define ksplice_apply(fn) __ksplice_hook(apply, ksplice_void_hook_t, fn)
#define ksplice_post_apply(fn) __ksplice_hook(post_apply, ksplice_void_hook_t, fn)
#define ksplice_fail_apply(fn) __ksplice_hook(fail_apply, ksplice_void_hook_t, fn)
#define ksplice_pre_reverse(fn) __ksplice_hook(pre_reverse, ksplice_int_hook_t, fn)
#define ksplice_check_reverse(fn) __ksplice_hook(check_reverse, ksplice_int_hook_t, fn)
#define ksplice_reverse(fn) __ksplice_hook(reverse, ksplice_void_hook_t, fn)
#define ksplice_post_reverse(fn) __ksplice_hook(post_reverse, ksplice_void_hook_t, fn)
#define ksplice_fail_reverse(fn) __ksplice_hook(fail_reverse, ksplice_void_hook_t, fn)

#define ksplice_layout_change(name)						\
	static const char __ksplice_layout_##name[]				\
	__used __section(".ksplice_layout") __aligned(1) = #name

/* ctor fills a new shadow (zeroed) before others can see it; non-zero: no shadow is made. */
typedef int (*ksplice_shadow_ctor_t)(void *obj, void *shadow_data, void *ctor_data);
/* dtor releases what a shadow holds, as it is freed. */
typedef void (*ksplice_shadow_dtor_t)(void *obj, void *shadow_data);

/* The shadow <obj, id>, or NULL. */
void *ksplice_shadow_get(void *obj, unsigned long id);
/* A new shadow <obj, id> of size bytes; NULL (and a warning) if it exists or on failure. */
void *ksplice_shadow_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
			   ksplice_shadow_ctor_t ctor, void *ctor_data);
/* The shadow <obj, id>, made as ksplice_shadow_alloc does if there is none; NULL on failure. */
void *ksplice_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
				  ksplice_shadow_ctor_t ctor, void *ctor_data);
/* Frees the shadow <obj, id>, if any, calling dtor first. */
void ksplice_shadow_free(void *obj, unsigned long id, ksplice_shadow_dtor_t dtor);
/* Frees every shadow of id, calling dtor for each. */
void ksplice_shadow_free_all(unsigned long id, ksplice_shadow_dtor_t dtor);

#endif
