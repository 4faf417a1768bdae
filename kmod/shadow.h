/* SPDX-License-Identifier: GPL-2.0 */
/* Between shadow.c (the shadow table) and core.c (its sysfs accounting and unload). */
#ifndef KSPLICE_SHADOW_H
#define KSPLICE_SHADOW_H

/* How many shadows of one id exist, and the bytes of their data. */
struct ks_shadow_count {
	unsigned long id;
	unsigned long count;
	size_t bytes;
};

unsigned int shadow_accounting(struct ks_shadow_count *out, unsigned int max);
unsigned long shadow_free_everything(void);

#endif
