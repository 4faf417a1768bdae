// SPDX-License-Identifier: GPL-2.0
/*
 * Shadow data: extra data attached to an object that already exists, found again by the
 * object's address and an id. An update that gives a structure a new field cannot change the
 * instances the running kernel allocated with the old layout; its code keeps the field in a
 * shadow instead. The semantics are livepatch's shadow variables (<obj, id> pairs, a
 * constructor run before a new shadow is visible, a destructor run as one is freed).
 *
 * One hash table, keyed by the object's address, serves every update, so a later update finds
 * an earlier one's shadows by id. Lookups walk it under RCU; changes take ks_shadow_lock with
 * interrupts off, so every function may be called from any context the caller's gfp_t allows.
 * A freed shadow goes after an RCU grace period, so a reader that found it keeps valid memory.
 *
 * This file owns the table and the shadow API (declared in ksplice-patch.h, the header patches
 * include); core.c shows the table's accounting in sysfs and frees what is left at unload.
 */
#define pr_fmt(fmt) "ksplice: " fmt

#include <linux/hashtable.h>
#include <linux/module.h>
#include <linux/rculist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include "ksplice-patch.h"
#include "shadow.h"

struct ks_shadow {
	struct hlist_node node;
	struct rcu_head rcu;
	void *obj;
	unsigned long id;
	size_t size;
	char data[];
};

static DEFINE_HASHTABLE(ks_shadow_hash, 12);
static DEFINE_SPINLOCK(ks_shadow_lock);

/* find: the shadow <obj, id>; under rcu_read_lock() or ks_shadow_lock. */
static struct ks_shadow *find(void *obj, unsigned long id)
{
	struct ks_shadow *s;

	hash_for_each_possible_rcu(ks_shadow_hash, s, node, (unsigned long)obj)
		if (s->obj == obj && s->id == id)
			return s;
	return NULL;
}

void *ksplice_shadow_get(void *obj, unsigned long id)
{
	struct ks_shadow *s;

	rcu_read_lock();
	s = find(obj, id);
	rcu_read_unlock();
	return s ? s->data : NULL;
}
EXPORT_SYMBOL_GPL(ksplice_shadow_get);

/* get_or_make: the shadow <obj, id>; a new one when there is none (or when exists_ok is false: NULL). */
static void *get_or_make(void *obj, unsigned long id, size_t size, gfp_t gfp,
			 ksplice_shadow_ctor_t ctor, void *ctor_data, bool exists_ok)
{
	struct ks_shadow *s, *made;
	unsigned long flags;
	int err;

	rcu_read_lock();
	s = find(obj, id);
	rcu_read_unlock();
	if (s)
		goto exists;
	/* Allocated outside the lock, with the caller's flags; the check is made again under it. */
	made = kzalloc(struct_size(made, data, size), gfp);
	if (!made)
		return NULL;
	spin_lock_irqsave(&ks_shadow_lock, flags);
	s = find(obj, id);
	if (s) {
		spin_unlock_irqrestore(&ks_shadow_lock, flags);
		kfree(made);
		goto exists;
	}
	made->obj = obj;
	made->id = id;
	made->size = size;
	if (ctor) {
		err = ctor(obj, made->data, ctor_data);
		if (err) {
			spin_unlock_irqrestore(&ks_shadow_lock, flags);
			kfree(made);
			pr_err("shadow <%px, %lx>: its constructor failed (%d)\n", obj, id, err);
			return NULL;
		}
	}
	hash_add_rcu(ks_shadow_hash, &made->node, (unsigned long)obj);
	spin_unlock_irqrestore(&ks_shadow_lock, flags);
	return made->data;
exists:
	if (exists_ok)
		return s->data;
	WARN(1, "ksplice: shadow <%px, %lx> exists already\n", obj, id);
	return NULL;
}

void *ksplice_shadow_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
			   ksplice_shadow_ctor_t ctor, void *ctor_data)
{
	return get_or_make(obj, id, size, gfp, ctor, ctor_data, false);
}
EXPORT_SYMBOL_GPL(ksplice_shadow_alloc);

void *ksplice_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
				  ksplice_shadow_ctor_t ctor, void *ctor_data)
{
	return get_or_make(obj, id, size, gfp, ctor, ctor_data, true);
}
EXPORT_SYMBOL_GPL(ksplice_shadow_get_or_alloc);

/* drop unlinks s (under ks_shadow_lock), runs dtor, and frees it after a grace period. */
static void drop(struct ks_shadow *s, ksplice_shadow_dtor_t dtor)
{
	hash_del_rcu(&s->node);
	if (dtor)
		dtor(s->obj, s->data);
	kfree_rcu(s, rcu);
}

void ksplice_shadow_free(void *obj, unsigned long id, ksplice_shadow_dtor_t dtor)
{
	struct ks_shadow *s;
	unsigned long flags;

	spin_lock_irqsave(&ks_shadow_lock, flags);
	s = find(obj, id);
	if (s)
		drop(s, dtor);
	spin_unlock_irqrestore(&ks_shadow_lock, flags);
}
EXPORT_SYMBOL_GPL(ksplice_shadow_free);

void ksplice_shadow_free_all(unsigned long id, ksplice_shadow_dtor_t dtor)
{
	struct ks_shadow *s;
	struct hlist_node *tmp;
	unsigned long flags;
	int bkt;

	spin_lock_irqsave(&ks_shadow_lock, flags);
	hash_for_each_safe(ks_shadow_hash, bkt, tmp, s, node)
		if (s->id == id)
			drop(s, dtor);
	spin_unlock_irqrestore(&ks_shadow_lock, flags);
}
EXPORT_SYMBOL_GPL(ksplice_shadow_free_all);

/*
 * shadow_accounting fills at most max entries of out with each id's count and bytes (data
 * only), returning how many ids there are (more than max: the rest were not listed).
 */
unsigned int shadow_accounting(struct ks_shadow_count *out, unsigned int max)
{
	struct ks_shadow *s;
	unsigned int n = 0, i;
	int bkt;

	rcu_read_lock();
	hash_for_each_rcu(ks_shadow_hash, bkt, s, node) {
		for (i = 0; i < n && i < max && out[i].id != s->id; i++)
			;
		if (i == n) {
			n++;
			if (i >= max)
				continue;
			out[i] = (struct ks_shadow_count){ .id = s->id };
		} else if (i >= max) {
			continue;
		}
		out[i].count++;
		out[i].bytes += s->size;
	}
	rcu_read_unlock();
	return n;
}

/* shadow_free_everything frees every shadow left (the core is being unloaded); returns how many. */
unsigned long shadow_free_everything(void)
{
	struct ks_shadow *s;
	struct hlist_node *tmp;
	unsigned long flags, n = 0;
	int bkt;

	spin_lock_irqsave(&ks_shadow_lock, flags);
	hash_for_each_safe(ks_shadow_hash, bkt, tmp, s, node) {
		drop(s, NULL);
		n++;
	}
	spin_unlock_irqrestore(&ks_shadow_lock, flags);
	rcu_barrier();	/* the kfree_rcu callbacks run before this module's text goes */
	return n;
}
