// SPDX-License-Identifier: GPL-2.0
/*
 * ksplice core: executes an update plan that user space computed, and verifies everything it is
 * told before acting on it.
 *
 * User space (src/kernel/core.ts) matches the running code, computes every address and writes the
 * plan as text commands to /sys/kernel/ksplice/control:
 *
 *   new ID MODNAME                 start an update whose code lives in module MODNAME (ksplice_*)
 *   ID pin ADDR                    hold the loadable module whose __this_module is ADDR loaded
 *                                  while the update exists (needed before patching or
 *                                  referring to it)
 *   ID reloc DEST TYPE S A         fill a relocation in that module (while preparing)
 *   ID patch SITE NEW FSTART FSIZE NSTART NSIZE EXPECTED NAME
 *                                  at apply, write "jmp NEW" at SITE (FSTART or FSTART+5)
 *   ID hook KIND ADDR              call ADDR at the Ksplice hook point KIND
 *   ID target PART NAME            the update replaces function NAME of PART ("vmlinux" or a
 *                                  loadable module's name); every patch belongs to a part
 *   ID pending PART                PART's module is not loaded: its jumps are made when it loads
 *   ID description TEXT
 *   delete ID
 *   helper PATH [ARG]...           the program run when a module with pending parts loads
 *   bench_stop_machine N [write] [cold]
 *                                  (only with bench=1) median of N stop_machine calls, empty, or
 *                                  writing 5 bytes of code (the same bytes) through an alias as
 *                                  an apply does; cold: 20 ms apart instead of back to back
 *
 * Modules loaded later. When a module with a pending part of an applied update loads, the
 * module notifier (MODULE_STATE_COMING: relocated, alternatives applied, read-only, its init not
 * yet called) runs the helper "PATH [ARG]... MODULE" and waits for it. The helper proves, as
 * apply does, that the module's code is the update's pre code, and sends the part's plan:
 *
 *   ID part MODULE pin ADDR | reloc DEST TYPE S A | patch SITE ... NAME
 *   ID part MODULE apply           write the part's jumps under stop_machine: the part is live
 *   ID part MODULE fail REASON     the module runs unpatched; the part is failed
 *
 * Whatever the helper does, the module loads: a part the helper did not make live is failed,
 * and the kernel log says why. A module with a live part is held loaded (rmmod fails); one
 * removed anyway (rmmod -f, or its init failing) has its part's jumps forgotten with its
 * memory, and the part is pending again. A module that loads or goes while an update is being
 * prepared makes that apply abort with "module_changed" (user space plans again).
 *
 * Writing "applied" or "reversed" to /sys/kernel/ksplice/ID/stage applies or undoes the update.
 * The jumps are written under stop_machine, once no task has a return address (or interrupted
 * instruction pointer) inside the code being replaced; otherwise it sleeps and retries, then
 * aborts with "code_busy" naming the tasks. Code is written through a vmap() alias of its pages,
 * since kernel and module text are mapped read-only and text_poke() is not exported.
 *
 * The pause does not grow with the number of tasks. Every stack is walked before stop_machine,
 * with the machine running, while a sched_switch probe records every task switched in; the
 * tasks recorded are walked once more, still outside; inside, only the tasks that ran since
 * (or could not be cleared outside) are unwound. The probe is registered once, when the core
 * loads, and only reads one pointer when no update is being applied: an apply patches no
 * scheduler code (registering a probe per apply rewrote __schedule's static call each time).
 * The safety argument is at precheck(). Should the probe be missing or a record overflow,
 * every task is checked inside, skipping unwinds for tasks whose switch count has not moved.
 *
 * One mutex (ks_mutex) covers every update, the list of known update modules and last_error.
 * Shadow data (shadow.c) has its own lock; its accounting is the root's "shadows" file.
 */
#define pr_fmt(fmt) "ksplice: " fmt

#include <linux/bsearch.h>
#include <linux/ctype.h>
#include <linux/hash.h>
#include <linux/kallsyms.h>
#include <linux/delay.h>
#include <linux/kernel.h>
#include <linux/kobject.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched/signal.h>
#include <linux/sched/task_stack.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/stop_machine.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/timekeeping.h>
#include <linux/tracepoint.h>
#include <linux/umh.h>
#include <linux/vmalloc.h>
#include <asm/sync_core.h>
#include <asm/unaligned.h>
#include <asm/unwind.h>
#include "shadow.h"

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ksplice core: rebootless kernel updates from a user-space plan");

static unsigned int retries = 5;
module_param(retries, uint, 0644);
MODULE_PARM_DESC(retries, "stop_machine attempts before an apply or undo aborts as code_busy");
static unsigned int retry_interval_ms = 1000;
module_param(retry_interval_ms, uint, 0644);
MODULE_PARM_DESC(retry_interval_ms, "sleep between attempts, in milliseconds");
static bool bench;
module_param(bench, bool, 0444);
MODULE_PARM_DESC(bench, "enable the bench_stop_machine control command (debugging only)");

#define JMP_LEN 5
#define MAX_NAME 128
#define MAX_ARGS 12
#define MAX_HELPER_ARGS 4
#define KSPLICE_PROTOCOL 2		/* 2: parts (modules loaded later), "version" */
#define NO_PART UINT_MAX

enum stage { STAGE_PREPARING, STAGE_APPLIED, STAGE_REVERSED };
static const char *const stage_names[] = { "preparing", "applied", "reversed" };

enum hook_kind {
	PRE_APPLY, CHECK_APPLY, APPLY, POST_APPLY, FAIL_APPLY,
	PRE_REVERSE, CHECK_REVERSE, REVERSE, POST_REVERSE, FAIL_REVERSE, NR_HOOKS
};
static const char *const hook_names[NR_HOOKS] = {
	"pre_apply", "check_apply", "apply", "post_apply", "fail_apply",
	"pre_reverse", "check_reverse", "reverse", "post_reverse", "fail_reverse",
};

struct ks_patch {
	unsigned long site, new, fstart, fsize, nstart, nsize;
	u8 expected[JMP_LEN], jump[JMP_LEN];
	char name[MAX_NAME];
	char module[MODULE_NAME_LEN];	/* the module FSTART is in, "vmlinux" for the kernel image */
	unsigned int part;		/* index in the update's parts */
	bool live;			/* the jump is written */
};

enum part_state { PART_LIVE, PART_PENDING, PART_COMING, PART_FAILED };
static const char *const part_state_names[] = { "live", "pending", "coming", "failed" };

/* The targets of an update in one image: the kernel ("vmlinux") or one loadable module. */
struct ks_part {
	char module[MODULE_NAME_LEN];
	enum part_state state;
	char *names;			/* its target functions, space-separated */
	char *why;			/* why it failed, while failed */
};

/* A loadable module an update holds loaded, and the part that took it (NO_PART: the plan). */
struct ks_pin {
	struct module *mod;
	unsigned int part;
};

struct ks_update {
	struct kobject kobj;
	struct list_head list;
	char id[17];
	struct module *mod;
	enum stage stage;
	const char *abort_cause;
	char *conflicts;		/* PAGE_SIZE buffer, filled inside stop_machine */
	size_t conflicts_len;
	u64 pause_ns;
	unsigned int stack_checks;	/* tasks unwound inside the last stop_machine */
	u64 stack_check_ns;		/* time the last stop_machine spent checking stacks */
	u64 write_ns;			/* ... writing the jumps (or the old bytes) */
	u64 splice_ns;			/* ... in the core's own function, from entry to exit */
	unsigned int tries;
	time64_t applied_at;
	char *description;
	struct ks_patch *patches;
	unsigned int npatches;
	unsigned long *targets;		/* symbol values of the relocations written */
	struct ks_pin *pins;		/* loadable modules it patches or refers to, held loaded */
	unsigned int npins;
	unsigned int ntargets;
	struct ks_part *parts;
	unsigned int nparts;
	unsigned long *hooks[NR_HOOKS];
	unsigned int nhooks[NR_HOOKS];
	bool deleted;
	bool stale;			/* a module of one of its parts came or went while preparing */
};

/* An update module seen by the module notifier, still live. */
struct ks_mod {
	struct list_head list;
	struct module *mod;
};

static DEFINE_MUTEX(ks_mutex);
static LIST_HEAD(ks_updates);
static LIST_HEAD(ks_mods);
static struct kobject *ks_root;
static char last_error[256] = "none";
static u64 bench_ns;
static char *helper_argv[MAX_HELPER_ARGS + 1];	/* kstrdup'd; NULL-terminated */

/* set_error records why a command failed, for /sys/kernel/ksplice/last_error. */
static __printf(1, 2) int set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vscnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* ---- addresses ---- */

static bool span_has(unsigned long addr, unsigned long len, unsigned long base, unsigned long size)
{
	return addr >= base && len <= size && addr - base <= size - len;
}

/* in_module: [addr, addr+len) lies in the module's core layout (text only if text_only). */
static bool in_module(struct module *mod, unsigned long addr, unsigned long len, bool text_only)
{
	return span_has(addr, len, (unsigned long)mod->core_layout.base,
			text_only ? mod->core_layout.text_size : mod->core_layout.size);
}

static struct ks_mod *find_mod(const char *name)
{
	struct ks_mod *m;

	list_for_each_entry(m, &ks_mods, list)
		if (!strcmp(m->mod->name, name))
			return m;
	return NULL;
}

static struct module *ksplice_module_of(unsigned long addr)
{
	struct ks_mod *m;

	list_for_each_entry(m, &ks_mods, list)
		if (in_module(m->mod, addr, 1, true))
			return m->mod;
	return NULL;
}

static struct ks_update *find_update(const char *id)
{
	struct ks_update *u;

	list_for_each_entry(u, &ks_updates, list)
		if (!strcmp(u->id, id))
			return u;
	return NULL;
}

/* ---- writing code and data through a writable alias ---- */

static struct page *page_of(unsigned long addr)
{
	if (addr >= MODULES_VADDR && addr < MODULES_END)
		return vmalloc_to_page((void *)addr);
	return virt_to_page((void *)addr);
}

/* map_alias returns a writable alias of [addr, addr+len) (len <= PAGE_SIZE); unmap_alias it. */
static void *map_alias(unsigned long addr, size_t len)
{
	struct page *pages[2];
	unsigned int n = offset_in_page(addr) + len > PAGE_SIZE ? 2 : 1;
	void *base;

	pages[0] = page_of(addr);
	if (n == 2)
		pages[1] = page_of((addr & PAGE_MASK) + PAGE_SIZE);
	if (!pages[0] || !pages[n - 1])
		return NULL;
	base = vmap(pages, n, VM_MAP, PAGE_KERNEL);
	return base ? base + offset_in_page(addr) : NULL;
}

static void unmap_alias(void *alias)
{
	if (alias)
		vunmap((void *)((unsigned long)alias & PAGE_MASK));
}

static int write_alias(unsigned long addr, const void *src, size_t len)
{
	void *alias = map_alias(addr, len);

	if (!alias)
		return -ENOMEM;
	memcpy(alias, src, len);
	unmap_alias(alias);
	return 0;
}

static void do_sync_core(void *unused)
{
	sync_core();
}

/* ---- parsing ---- */

static int parse_hex(const char *s, unsigned long *v)
{
	return kstrtoul(s, 16, v);
}

static int parse_bytes(const char *s, u8 *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return -EINVAL;
	return hex2bin(out, s, n);
}

static bool valid_id(const char *id)
{
	size_t i, n = strlen(id);

	if (n < 1 || n > 16)
		return false;
	for (i = 0; i < n; i++)
		if (!islower(id[i]) && !isdigit(id[i]))
			return false;
	return true;
}

/* grow makes room for one more element in a kmalloc'd array. */
static int grow(void **arr, unsigned int n, size_t elem)
{
	void *p = krealloc(*arr, (n + 1) * elem, GFP_KERNEL);

	if (!p)
		return -ENOMEM;
	*arr = p;
	return 0;
}

/* ---- commands ---- */

static void update_release(struct kobject *kobj)
{
	struct ks_update *u = container_of(kobj, struct ks_update, kobj);
	int i;

	for (i = 0; i < NR_HOOKS; i++)
		kfree(u->hooks[i]);
	for (i = 0; i < u->nparts; i++) {
		kfree(u->parts[i].names);
		kfree(u->parts[i].why);
	}
	kfree(u->parts);
	kfree(u->targets);
	kfree(u->pins);
	kfree(u->patches);
	kfree(u->description);
	kfree(u->conflicts);
	kfree(u);
}

static const struct attribute_group *update_groups[];
static struct kobj_type update_ktype = {
	.release = update_release,
	.sysfs_ops = &kobj_sysfs_ops,
	.default_groups = update_groups,
};

static int cmd_new(const char *id, const char *modname)
{
	struct ks_update *u;
	struct ks_mod *m;
	int ret;

	if (!valid_id(id))
		return set_error("new %s: the id must be 1 to 16 characters from [a-z0-9]", id);
	if (find_update(id))
		return set_error("new %s: an update with this id exists", id);
	m = find_mod(modname);
	if (!m)
		return set_error("new %s: %s is not a live ksplice_ module loaded after the core", id, modname);
	u = kzalloc(sizeof(*u), GFP_KERNEL);
	if (!u)
		return -ENOMEM;
	u->conflicts = kzalloc(PAGE_SIZE, GFP_KERNEL);
	if (!u->conflicts) {
		kfree(u);
		return -ENOMEM;
	}
	strscpy(u->id, id, sizeof(u->id));
	u->abort_cause = "none";
	if (!try_module_get(m->mod)) {
		kfree(u->conflicts);
		kfree(u);
		return set_error("new %s: module %s is going away", id, modname);
	}
	u->mod = m->mod;
	ret = kobject_init_and_add(&u->kobj, &update_ktype, ks_root, "%s", id);
	if (ret) {
		kobject_put(&u->kobj);
		module_put(m->mod);
		return set_error("new %s: cannot create its sysfs directory (%d)", id, ret);
	}
	list_add_tail(&u->list, &ks_updates);
	return 0;
}

/* pinned: the module called NAME that u holds loaded (see cmd_pin), or NULL. */
static struct module *pinned(struct ks_update *u, const char *name)
{
	unsigned int i;

	for (i = 0; i < u->npins; i++)
		if (!strcmp(u->pins[i].mod->name, name))
			return u->pins[i].mod;
	return NULL;
}

/* unpin releases the pins for which drop(pin) is true. */
static void unpin(struct ks_update *u, bool (*drop)(struct ks_pin *, const void *), const void *arg)
{
	unsigned int i, n = 0;

	for (i = 0; i < u->npins; i++) {
		if (drop(&u->pins[i], arg))
			module_put(u->pins[i].mod);
		else
			u->pins[n++] = u->pins[i];
	}
	u->npins = n;
}

static bool pin_any(struct ks_pin *p, const void *arg)
{
	return true;
}

static bool pin_of_part(struct ks_pin *p, const void *part)
{
	return p->part == *(const unsigned int *)part;
}

static bool pin_of_module(struct ks_pin *p, const void *mod)
{
	return p->mod == mod;
}

/* find_part: the index of u's part for image NAME, or NO_PART. */
static unsigned int find_part(struct ks_update *u, const char *name)
{
	unsigned int i;

	for (i = 0; i < u->nparts; i++)
		if (!strcmp(u->parts[i].module, name))
			return i;
	return NO_PART;
}

/* drop_part_patches forgets the jumps of part k (not written, or gone with their module). */
static void drop_part_patches(struct ks_update *u, unsigned int k)
{
	unsigned int i, n = 0;

	for (i = 0; i < u->npatches; i++)
		if (u->patches[i].part != k)
			u->patches[n++] = u->patches[i];
	u->npatches = n;
}

/*
 * module_named: the module kallsyms names for ADDR ("sym+off/size [mod]"), copied into BUF, or
 * NULL for the kernel image. Callers hold preempt off or a reference, so the name stays valid.
 */
static char *module_named(unsigned long addr, char *buf)
{
	char *mod;

	sprint_symbol(buf, addr);
	mod = strstr(buf, " [");
	if (!mod)
		return NULL;
	mod += 2;
	mod[strcspn(mod, "] ")] = '\0';
	return mod;
}

/*
 * cmd_pin: "ID pin ADDR" holds the loadable module whose struct module is at ADDR (its
 * __this_module, as kallsyms lists it) loaded for as long as update ID exists, so no jump ever
 * points out of, or into, a module that was unloaded: rmmod of a pinned module fails ("in
 * use"). Every module that a patch site or a relocation of the update lies in must be pinned
 * first. Preemption stays off from the kallsyms check to the reference: a module's memory is
 * freed only after an RCU grace period.
 */
static int cmd_pin(struct ks_update *u, char **argv, unsigned int part)
{
	char sym[KSYM_SYMBOL_LEN], *name;
	struct module *m;
	unsigned long addr;
	int ret;

	if (parse_hex(argv[0], &addr))
		return set_error("%s pin: expected ADDR (hex), a module's __this_module", u->id);
	preempt_disable();
	name = module_named(addr, sym);
	m = (struct module *)addr;
	if (!name || strncmp(sym, "__this_module+0x0/", 18) || strcmp(m->name, name)) {
		preempt_enable();
		return set_error("%s pin: %lx is not a module's __this_module (kallsyms says %s)",
				 u->id, addr, sym);
	}
	if (m == u->mod || m == THIS_MODULE || ksplice_module_of((unsigned long)m->core_layout.base) ||
	    pinned(u, name)) {
		preempt_enable();
		return 0;
	}
	if (!try_module_get(m)) {
		preempt_enable();
		return set_error("%s pin: module %s is going away", u->id, name);
	}
	preempt_enable();
	ret = grow((void **)&u->pins, u->npins, sizeof(*u->pins));
	if (ret) {
		module_put(m);
		return ret;
	}
	u->pins[u->npins++] = (struct ks_pin){ .mod = m, .part = part };
	return 0;
}

/* check_pinned: S, a relocation's symbol value, is in the kernel, a ksplice_ module or a pinned one. */
static int check_pinned(struct ks_update *u, unsigned long s, unsigned long dest)
{
	char sym[KSYM_SYMBOL_LEN], *name;

	name = module_named(s, sym);
	if (!name || ksplice_module_of(s) || !strcmp(name, u->mod->name))
		return 0;
	if (!pinned(u, name))
		return set_error("%s reloc at %lx: %lx (%s) is in module %s, which the update has not pinned",
				 u->id, dest, s, sym, name);
	return 0;
}

static int cmd_reloc(struct ks_update *u, char **argv)
{
	unsigned long dest, type, s;
	s64 a, val;
	union { u64 q; u32 l; } buf;
	size_t len;
	int ret;

	if (parse_hex(argv[0], &dest) || kstrtoul(argv[1], 10, &type) ||
	    parse_hex(argv[2], &s) || kstrtos64(argv[3], 10, &a))
		return set_error("%s reloc: expected DEST(hex) TYPE(number) S(hex) A(decimal)", u->id);
	val = (s64)s + a;
	switch (type) {
	case 1:		/* R_X86_64_64 */
		len = 8;
		buf.q = val;
		break;
	case 2:		/* R_X86_64_PC32 */
	case 4:		/* R_X86_64_PLT32 */
		val -= (s64)dest;
		fallthrough;
	case 11:	/* R_X86_64_32S */
		if (val != (s32)val)
			return set_error("%s reloc at %lx: value %llx overflows a signed 32-bit field",
					 u->id, dest, val);
		len = 4;
		buf.l = (u32)val;
		break;
	case 10:	/* R_X86_64_32 */
		if (val != (u32)val)
			return set_error("%s reloc at %lx: value %llx overflows an unsigned 32-bit field",
					 u->id, dest, val);
		len = 4;
		buf.l = (u32)val;
		break;
	default:
		return set_error("%s reloc: unsupported type %lu (1, 2, 4, 10, 11 are)", u->id, type);
	}
	if (!in_module(u->mod, dest, len, false))
		return set_error("%s reloc: %lx is outside module %s", u->id, dest, u->mod->name);
	ret = grow((void **)&u->targets, u->ntargets, sizeof(*u->targets));
	if (ret)
		return ret;
	ret = check_pinned(u, s, dest);
	if (ret)
		return ret;
	ret = write_alias(dest, &buf, len);
	if (ret)
		return set_error("%s reloc at %lx: cannot map the page (%d)", u->id, dest, ret);
	u->targets[u->ntargets++] = s;
	return 0;
}

/* applied_overlap finds an applied update, other than u, with a patch site overlapping site. */
static struct ks_update *applied_overlap(struct ks_update *u, unsigned long site)
{
	struct ks_update *o;
	unsigned int i;

	list_for_each_entry(o, &ks_updates, list) {
		if (o == u || o->stage != STAGE_APPLIED)
			continue;
		for (i = 0; i < o->npatches; i++)
			if (o->patches[i].live && site < o->patches[i].site + JMP_LEN &&
			    o->patches[i].site < site + JMP_LEN)
				return o;
	}
	return NULL;
}

/*
 * check_function: FSTART must be the start of a FSIZE-byte symbol of the kernel, of a loadable
 * module's core text, or of a ksplice_ module (a stacked update patches an earlier replacement),
 * as kallsyms says.
 */
static int check_function(struct ks_update *u, const char *name, unsigned long fstart,
			  unsigned long fsize, char *module)
{
	char sym[KSYM_SYMBOL_LEN], *plus, *mod;
	unsigned long size;
	bool stacked;

	sprint_symbol(sym, fstart);
	plus = strstr(sym, "+0x0/0x");
	if (!plus)
		return set_error("%s patch %s: %lx is not the start of a symbol (kallsyms says %s)",
				 u->id, name, fstart, sym);
	mod = strchr(plus, ' ');
	if (mod) {
		*mod++ = '\0';
		/* "[name]", or "[name buildid]" with CONFIG_STACKTRACE_BUILD_ID */
		if (*mod == '[')
			mod++;
		mod[strcspn(mod, "] ")] = '\0';
	}
	strscpy(module, mod ? mod : "vmlinux", MODULE_NAME_LEN);
	stacked = mod && ksplice_module_of(fstart);
	if (mod && !stacked) {
		struct module *m = pinned(u, mod);

		if (!m)
			return set_error("%s patch %s: %s is in module %s, which the update has not pinned",
					 u->id, name, sym, mod);
		if (!in_module(m, fstart, fsize, true))
			return set_error("%s patch %s: %s is not in the text of module %s", u->id, name, sym, mod);
	}
	/*
	 * FSIZE is the function's length as matched: at most kallsyms' size, which runs on to the
	 * next symbol (past padding; for a module's last function, past the end of its text).
	 */
	if (kstrtoul(plus + strlen("+0x0/0x"), 16, &size) || fsize > size)
		return set_error("%s patch %s: size %lx is more than kallsyms says: %s", u->id, name, fsize, sym);
	return 0;
}

/* add_part returns the index of u's part for image NAME, made (live, no names) if new. */
static int add_part(struct ks_update *u, const char *name, unsigned int *k)
{
	int ret;

	*k = find_part(u, name);
	if (*k != NO_PART)
		return 0;
	if (strlen(name) >= MODULE_NAME_LEN)
		return set_error("%s: %s is not a module name", u->id, name);
	ret = grow((void **)&u->parts, u->nparts, sizeof(*u->parts));
	if (ret)
		return ret;
	u->parts[u->nparts] = (struct ks_part){ .state = PART_LIVE };
	strscpy(u->parts[u->nparts].module, name, MODULE_NAME_LEN);
	*k = u->nparts++;
	return 0;
}

/* cmd_target: "ID target PART NAME" names a function the update replaces in PART. */
static int cmd_target(struct ks_update *u, char **argv)
{
	struct ks_part *part;
	size_t old, add = strlen(argv[1]);
	unsigned int k;
	char *names;
	int ret;

	ret = add_part(u, argv[0], &k);
	if (ret)
		return ret;
	part = &u->parts[k];
	old = part->names ? strlen(part->names) : 0;
	names = krealloc(part->names, old + add + 2, GFP_KERNEL);
	if (!names)
		return -ENOMEM;
	if (old)
		names[old++] = ' ';
	memcpy(names + old, argv[1], add + 1);
	part->names = names;
	return 0;
}

/* cmd_pending: "ID pending PART": PART's module is not loaded; its jumps come when it loads. */
static int cmd_pending(struct ks_update *u, const char *name)
{
	unsigned int i, k;
	int ret;

	if (!strcmp(name, "vmlinux") || !strncmp(name, "ksplice_", strlen("ksplice_")))
		return set_error("%s pending %s: only a loadable module's part can wait for it to load",
				 u->id, name);
	ret = add_part(u, name, &k);
	if (ret)
		return ret;
	for (i = 0; i < u->npatches; i++)
		if (u->patches[i].part == k)
			return set_error("%s pending %s: the update already has jumps in it", u->id, name);
	u->parts[k].state = PART_PENDING;
	return 0;
}

static int cmd_patch(struct ks_update *u, char **argv, unsigned int part)
{
	struct ks_patch p = { .part = part };
	struct ks_update *o;
	unsigned int i;
	s64 rel;
	int ret;

	if (parse_hex(argv[0], &p.site) || parse_hex(argv[1], &p.new) ||
	    parse_hex(argv[2], &p.fstart) || parse_hex(argv[3], &p.fsize) ||
	    parse_hex(argv[4], &p.nstart) || parse_hex(argv[5], &p.nsize) ||
	    parse_bytes(argv[6], p.expected, JMP_LEN))
		return set_error("%s patch: expected SITE NEW FSTART FSIZE NSTART NSIZE (hex) EXPECTED (10 hex digits) NAME",
				 u->id);
	strscpy(p.name, argv[7], sizeof(p.name));
	if (p.site != p.fstart && p.site != p.fstart + JMP_LEN)
		return set_error("%s patch %s: site %lx is neither FSTART nor FSTART+5", u->id, p.name, p.site);
	if (p.fsize < p.site - p.fstart + JMP_LEN)
		return set_error("%s patch %s: function too small (%lx bytes) for a jump at %lx",
				 u->id, p.name, p.fsize, p.site);
	ret = check_function(u, p.name, p.fstart, p.fsize, p.module);
	if (ret)
		return ret;
	if (u->parts[part].state == PART_PENDING)
		return set_error("%s patch %s: part %s is pending", u->id, p.name, u->parts[part].module);
	/* A stacked update's jump is in an earlier update's module; any other is in its part. */
	if (strcmp(p.module, u->parts[part].module) && !ksplice_module_of(p.fstart))
		return set_error("%s patch %s: %lx is in %s, not in part %s", u->id, p.name, p.fstart,
				 p.module, u->parts[part].module);
	if (!in_module(u->mod, p.nstart, p.nsize, true) || !span_has(p.new, 1, p.nstart, p.nsize))
		return set_error("%s patch %s: replacement %lx (%lx+%lx) is not in the text of %s",
				 u->id, p.name, p.new, p.nstart, p.nsize, u->mod->name);
	rel = (s64)p.new - (s64)(p.site + JMP_LEN);
	if (rel != (s32)rel)
		return set_error("%s patch %s: %lx is out of jump range of %lx", u->id, p.name, p.new, p.site);
	for (i = 0; i < u->npatches; i++)
		if (p.site < u->patches[i].site + JMP_LEN && u->patches[i].site < p.site + JMP_LEN)
			return set_error("%s patch %s: site overlaps patch %s", u->id, p.name, u->patches[i].name);
	o = applied_overlap(u, p.site);
	if (o)
		return set_error("already_patched: %s patch %s: site %lx is patched by applied update %s",
				 u->id, p.name, p.site, o->id);
	p.jump[0] = 0xe9;
	put_unaligned((s32)rel, (s32 *)&p.jump[1]);
	ret = grow((void **)&u->patches, u->npatches, sizeof(p));
	if (ret)
		return ret;
	u->patches[u->npatches++] = p;
	return 0;
}

static int cmd_hook(struct ks_update *u, char **argv)
{
	unsigned long addr;
	int kind, ret;

	kind = match_string(hook_names, NR_HOOKS, argv[0]);
	if (kind < 0)
		return set_error("%s hook: unknown kind %s", u->id, argv[0]);
	if (parse_hex(argv[1], &addr) || !in_module(u->mod, addr, 1, true))
		return set_error("%s hook %s: %s is not an address in the text of %s",
				 u->id, argv[0], argv[1], u->mod->name);
	ret = grow((void **)&u->hooks[kind], u->nhooks[kind], sizeof(addr));
	if (ret)
		return ret;
	u->hooks[kind][u->nhooks[kind]++] = addr;
	return 0;
}

static void delete_update(struct ks_update *u)
{
	list_del(&u->list);
	u->deleted = true;
	unpin(u, pin_any, NULL);
	module_put(u->mod);
}

static int cmd_delete(const char *id, struct ks_update **gone)
{
	struct ks_update *u = find_update(id);

	if (!u)
		return set_error("delete %s: no such update", id);
	if (u->stage == STAGE_APPLIED)
		return set_error("delete %s: the update is applied; reverse it first", id);
	delete_update(u);
	*gone = u;
	return 0;
}

static int nop_stop(void *unused)
{
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

/* write_stop rewrites the first bytes of nop_stop with themselves, as splice() writes a jump. */
static int write_stop(void *alias)
{
	memcpy(alias, (void *)nop_stop, JMP_LEN);
	return 0;
}

static int cmd_bench(const char *arg, bool write, bool cold)
{
	unsigned int n, i;
	void *alias = NULL;
	u64 *t;

	if (!bench)
		return set_error("bench_stop_machine: load the core with bench=1 to enable it");
	if (kstrtouint(arg, 10, &n) || n < 1 || n > 10000)
		return set_error("bench_stop_machine: N must be 1..10000");
	t = kmalloc_array(n, sizeof(*t), GFP_KERNEL);
	if (write)
		alias = map_alias((unsigned long)nop_stop, JMP_LEN);
	if (!t || (write && !alias)) {
		kfree(t);
		unmap_alias(alias);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		ktime_t t0;

		if (cold)
			msleep(20);
		t0 = ktime_get();
		stop_machine(write ? write_stop : nop_stop, alias, NULL);
		t[i] = ktime_to_ns(ktime_sub(ktime_get(), t0));
	}
	unmap_alias(alias);
	sort(t, n, sizeof(*t), cmp_u64, NULL);
	bench_ns = t[n / 2];
	kfree(t);
	return 0;
}

static int transition_part(struct ks_update *u, unsigned int k);
static void fail_part(struct ks_update *u, unsigned int k, const char *why);

/* cmd_helper: "helper PATH [ARG]..." sets the program run when a module with pending parts loads. */
static int cmd_helper(char **argv, int argc)
{
	char *copy[MAX_HELPER_ARGS + 1] = {};
	int i;

	if (argc < 1 || argc > MAX_HELPER_ARGS || argv[0][0] != '/')
		return set_error("usage: helper PATH [ARG]... (an absolute path, at most %d words)",
				 MAX_HELPER_ARGS);
	for (i = 0; i < argc; i++) {
		copy[i] = kstrdup(argv[i], GFP_KERNEL);
		if (!copy[i]) {
			while (i--)
				kfree(copy[i]);
			return -ENOMEM;
		}
	}
	for (i = 0; helper_argv[i]; i++)
		kfree(helper_argv[i]);
	memcpy(helper_argv, copy, sizeof(copy));
	return 0;
}

/*
 * cmd_part runs "ID part MODULE VERB ..." from the helper, while MODULE is loading (its part
 * is coming): the plan of that part, then apply or fail.
 */
static int cmd_part(struct ks_update *u, char **argv, int argc, const char *reason)
{
	unsigned int k = find_part(u, argv[0]);
	const char *verb = argv[1];

	if (k == NO_PART)
		return set_error("%s part %s: the update has no part in %s", u->id, argv[0], argv[0]);
	if (u->stage != STAGE_APPLIED || u->parts[k].state != PART_COMING)
		return set_error("%s part %s: the part is %s and the update %s; a part's plan is taken only while its module loads",
				 u->id, argv[0], part_state_names[u->parts[k].state], stage_names[u->stage]);
	if (!strcmp(verb, "pin") && argc == 3)
		return cmd_pin(u, argv + 2, k);
	if (!strcmp(verb, "reloc") && argc == 6)
		return cmd_reloc(u, argv + 2);
	if (!strcmp(verb, "patch") && argc == 10)
		return cmd_patch(u, argv + 2, k);
	if (!strcmp(verb, "apply") && argc == 2)
		return transition_part(u, k);
	if (!strcmp(verb, "fail") && reason) {
		fail_part(u, k, *reason ? reason : "the helper gave no reason");
		return 0;
	}
	return set_error("usage: ID part MODULE pin ADDR | reloc DEST TYPE S A | patch SITE NEW FSTART FSIZE NSTART NSIZE EXPECTED NAME | apply | fail REASON");
}

/* rest_of_line: after words like "ID description" or "ID part MODULE fail", the text is one argument. */
static bool rest_of_line(char **argv, int argc)
{
	return (argc == 2 && !strcmp(argv[1], "description")) ||
	       (argc == 4 && !strcmp(argv[1], "part") && !strcmp(argv[3], "fail"));
}

/* run_line executes one command; an update deleted by it is returned in *gone for kobject_put. */
static int run_line(char *line, struct ks_update **gone)
{
	char *argv[MAX_ARGS], *rest = line, *text = NULL;
	struct ks_update *u;
	unsigned int k;
	int argc = 0, ret;

	while (argc < MAX_ARGS && (argv[argc] = strsep(&rest, " \t"))) {
		if (!*argv[argc])
			continue;
		argc++;
		if (rest_of_line(argv, argc)) {
			text = rest ? strim(rest) : "";
			break;
		}
	}
	if (rest && !text && *strim(rest))
		return set_error("too many words in command: %s", line);
	if (argc == 0)
		return 0;
	if (!strcmp(argv[0], "new"))
		return argc == 3 ? cmd_new(argv[1], argv[2]) : set_error("usage: new ID MODNAME");
	if (!strcmp(argv[0], "delete"))
		return argc == 2 ? cmd_delete(argv[1], gone) : set_error("usage: delete ID");
	if (!strcmp(argv[0], "helper"))
		return cmd_helper(argv + 1, argc - 1);
	if (!strcmp(argv[0], "bench_stop_machine")) {
		bool write = false, cold = false;
		int i;

		for (i = 2; i < argc; i++) {
			if (!strcmp(argv[i], "write"))
				write = true;
			else if (!strcmp(argv[i], "cold"))
				cold = true;
			else
				argc = 0;
		}
		return argc >= 2 ? cmd_bench(argv[1], write, cold) :
				   set_error("usage: bench_stop_machine N [write] [cold]");
	}
	if (argc < 2)
		return set_error("unknown command %s", argv[0]);
	u = find_update(argv[0]);
	if (!u)
		return set_error("%s %s: no such update (create it with: new ID MODNAME)", argv[0], argv[1]);
	if (!strcmp(argv[1], "description")) {
		char *d = kstrdup(text, GFP_KERNEL);

		if (!d)
			return -ENOMEM;
		kfree(u->description);
		u->description = d;
		return 0;
	}
	if (!strcmp(argv[1], "part"))
		return argc >= 4 ? cmd_part(u, argv + 2, argc - 2, text) :
			set_error("usage: ID part MODULE VERB ...");
	if (u->stage != STAGE_PREPARING)
		return set_error("%s %s: the update is %s; plans change only while preparing",
				 u->id, argv[1], stage_names[u->stage]);
	if (!strcmp(argv[1], "pin"))
		return argc == 3 ? cmd_pin(u, argv + 2, NO_PART) : set_error("usage: ID pin ADDR");
	if (!strcmp(argv[1], "reloc"))
		return argc == 6 ? cmd_reloc(u, argv + 2) : set_error("usage: ID reloc DEST TYPE S A");
	if (!strcmp(argv[1], "patch")) {
		if (argc != 10 && argc != 11)
			return set_error("usage: ID patch SITE NEW FSTART FSIZE NSTART NSIZE EXPECTED NAME [PART]");
		ret = add_part(u, argc == 11 ? argv[10] : "vmlinux", &k);
		return ret ? ret : cmd_patch(u, argv + 2, k);
	}
	if (!strcmp(argv[1], "hook"))
		return argc == 4 ? cmd_hook(u, argv + 2) : set_error("usage: ID hook KIND ADDR");
	if (!strcmp(argv[1], "target"))
		return argc == 4 ? cmd_target(u, argv + 2) : set_error("usage: ID target PART NAME");
	if (!strcmp(argv[1], "pending"))
		return argc == 3 ? cmd_pending(u, argv[2]) : set_error("usage: ID pending PART");
	return set_error("%s: unknown command %s", u->id, argv[1]);
}

static ssize_t control_store(struct kobject *kobj, struct kobj_attribute *attr,
			     const char *buf, size_t count)
{
	struct ks_update *gone = NULL;
	char *copy, *rest, *line;
	int ret = 0, n = 0;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	copy = kmemdup_nul(buf, count, GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	mutex_lock(&ks_mutex);
	rest = copy;
	while (!ret && (line = strsep(&rest, "\n"))) {
		n++;
		ret = run_line(line, &gone);
		if (gone) {
			/* kobject_put waits for readers of its files: drop ks_mutex first. */
			mutex_unlock(&ks_mutex);
			kobject_put(&gone->kobj);
			gone = NULL;
			mutex_lock(&ks_mutex);
		}
	}
	if (!ret)
		strscpy(last_error, "none", sizeof(last_error));
	mutex_unlock(&ks_mutex);
	kfree(copy);
	return ret ? ret : count;
}

static ssize_t last_error_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	ssize_t n;

	mutex_lock(&ks_mutex);
	n = sysfs_emit(buf, "%s\n", last_error);
	mutex_unlock(&ks_mutex);
	return n;
}

static ssize_t bench_ns_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n", bench_ns);
}

/* coming: "ID MODULE" for each part whose module is loading now, in the order of the updates. */
static ssize_t coming_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	struct ks_update *u;
	unsigned int i;
	int n = 0;

	mutex_lock(&ks_mutex);
	list_for_each_entry(u, &ks_updates, list)
		for (i = 0; i < u->nparts; i++)
			if (u->parts[i].state == PART_COMING)
				n += sysfs_emit_at(buf, n, "%s %s\n", u->id, u->parts[i].module);
	mutex_unlock(&ks_mutex);
	return n;
}

/* shadows: "ID COUNT BYTES" (hex id) for each id with shadows (ksplice-patch.h, shadow.c). */
static ssize_t shadows_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	const unsigned int max = 128;
	struct ks_shadow_count *c = kmalloc_array(max, sizeof(*c), GFP_KERNEL);
	unsigned int i, n;
	int len = 0;

	if (!c)
		return -ENOMEM;
	n = shadow_accounting(c, max);
	for (i = 0; i < n && i < max; i++)
		len += sysfs_emit_at(buf, len, "%lx %lu %zu\n", c[i].id, c[i].count, c[i].bytes);
	if (n > max)
		len += sysfs_emit_at(buf, len, "... more ids\n");
	kfree(c);
	return len;
}

/* version: the protocol this core speaks (user space checks it before talking to a loaded core). */
static ssize_t version_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", KSPLICE_PROTOCOL);
}

/* ---- apply and undo ---- */

/* A task whose stack was found clear before stop_machine, and how often it had been switched. */
struct ks_seen {
	struct task_struct *t;
	u64 start_time;
	unsigned long switches;
};

/*
 * The tasks switched in on one CPU while an apply is tracking, each held by a reference: an
 * open-addressing set of task pointers, written only by that CPU's scheduler (IRQs off).
 */
#define RAN_BITS 11
#define RAN_SLOTS (1U << RAN_BITS)
struct ks_ran {
	unsigned int n;
	bool full;			/* more tasks ran than it holds: check every task */
	struct task_struct *slot[RAN_SLOTS];
};

/* One apply attempt's record of the tasks that ran: a set per possible CPU. */
struct ks_track {
	struct rcu_head rcu;
	struct ks_ran *cpu[];
};

struct ks_run {
	struct ks_update *u;
	bool undo;
	unsigned int part;		/* apply only this part's jumps; NO_PART: the update's */
	void **alias;			/* writable alias of each patch site */
	const char *cause;		/* set when the attempt must abort */
	bool busy;
	struct ks_range *ranges;	/* the code being replaced (apply) or restored (undo) */
	unsigned int nranges;
	struct ks_seen *seen;		/* sorted by task pointer */
	unsigned int nseen;
	struct ks_track *track;		/* the tasks that ran since tracking began; NULL: none */
	struct task_struct **unclear;	/* tasks the walk could not clear, held */
	unsigned int nunclear;
	bool overflow;			/* the walk saw more tasks than it had room for */
	struct ks_seen *fresh;		/* tasks cleared by recheck(), sorted by task pointer */
	unsigned int nfresh;
	unsigned int checked;		/* tasks unwound inside stop_machine */
};

/* sched_switch, with on_switch() registered on it at load; NULL: every task is checked inside. */
static struct tracepoint *switch_tp;
static struct ks_track __rcu *ks_tracking;

static void find_switch_tp(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, "sched_switch"))
		*(struct tracepoint **)priv = tp;
}

static void record(struct ks_ran *s, struct task_struct *t)
{
	unsigned int h;

	if (s->full)
		return;
	for (h = hash_ptr(t, RAN_BITS); s->slot[h]; h = (h + 1) & (RAN_SLOTS - 1))
		if (s->slot[h] == t)
			return;
	if (s->n >= RAN_SLOTS / 2) {
		s->full = true;
		return;
	}
	get_task_struct(t);
	smp_store_release(&s->slot[h], t);	/* the reference before the pointer */
	s->n++;
}

/*
 * on_switch records prev and next while an apply is tracking (the scheduler calls it with IRQs
 * off): every task on a CPU at any moment since tracking began is then in a set, whether it was
 * switched in since or was running already and has been switched out since.
 */
static void on_switch(void *data, bool preempt, struct task_struct *prev, struct task_struct *next,
		      unsigned int prev_state)
{
	struct ks_track *tr = rcu_dereference_sched(ks_tracking);
	struct ks_ran *s;

	if (likely(!tr))
		return;
	s = tr->cpu[smp_processor_id()];
	record(s, prev);
	record(s, next);
}

static void free_track(struct rcu_head *head)
{
	struct ks_track *tr = container_of(head, struct ks_track, rcu);
	unsigned int cpu, i;

	for_each_possible_cpu(cpu) {
		struct ks_ran *s = tr->cpu[cpu];

		for (i = 0; s && i < RAN_SLOTS; i++)
			if (s->slot[i])
				put_task_struct(s->slot[i]);
		kvfree(s);
	}
	kfree(tr);
}

/*
 * start_tracking makes on_switch() record, from now until stop_tracking(), every task switched
 * in on any CPU. After the grace period no CPU can still be in a sched_switch that read the
 * pointer before it was set (the probe runs with preemption off), so a task missing from the
 * sets has not been switched in since this returned.
 */
static void start_tracking(struct ks_run *r)
{
	struct ks_track *tr;
	unsigned int cpu;

	if (!switch_tp)
		return;
	tr = kzalloc(struct_size(tr, cpu, nr_cpu_ids), GFP_KERNEL);
	if (!tr)
		return;
	for_each_possible_cpu(cpu) {
		tr->cpu[cpu] = kvzalloc(sizeof(struct ks_ran), GFP_KERNEL);
		if (!tr->cpu[cpu]) {
			free_track(&tr->rcu);
			return;
		}
	}
	rcu_assign_pointer(ks_tracking, tr);
	synchronize_rcu();
	r->track = tr;
}

/* stop_tracking: the sets and their references go once no probe can be writing them. */
static void stop_tracking(struct ks_run *r)
{
	unsigned int i;

	if (r->track) {
		RCU_INIT_POINTER(ks_tracking, NULL);
		call_rcu(&r->track->rcu, free_track);
		r->track = NULL;
	}
	for (i = 0; i < r->nunclear; i++)
		put_task_struct(r->unclear[i]);
	kvfree(r->unclear);
	r->unclear = NULL;
	r->nunclear = 0;
	kvfree(r->seen);
	r->seen = NULL;
	r->nseen = 0;
	kvfree(r->fresh);
	r->fresh = NULL;
	r->nfresh = 0;
	r->overflow = false;
}

/* tracked says whether the record of the tasks that ran is complete (nothing overflowed). */
static bool tracked(struct ks_run *r)
{
	unsigned int cpu;

	if (!r->track || !r->unclear || r->overflow)
		return false;
	for_each_possible_cpu(cpu)
		if (r->track->cpu[cpu]->full)
			return false;
	return true;
}

/* The code a run checks stacks against: [start, end), sorted, not overlapping. */
struct ks_range {
	unsigned long start, end;
};

static int cmp_range(const void *a, const void *b)
{
	unsigned long x = ((const struct ks_range *)a)->start, y = ((const struct ks_range *)b)->start;

	return x < y ? -1 : x > y;
}

/* in_run: the run writes (apply) or restores (undo) p. */
static bool in_run(struct ks_run *r, struct ks_patch *p)
{
	if (r->undo)
		return p->live;
	return r->part == NO_PART ? !p->live : p->part == r->part;
}

/* make_ranges sorts and merges the code the run checks stacks against. */
static int make_ranges(struct ks_run *r)
{
	struct ks_update *u = r->u;
	unsigned int i, n = 0;

	r->ranges = kvmalloc_array(max(u->npatches, 1U), sizeof(*r->ranges), GFP_KERNEL);
	if (!r->ranges)
		return -ENOMEM;
	for (i = 0; i < u->npatches; i++) {
		struct ks_patch *p = &u->patches[i];

		if (!in_run(r, p))
			continue;
		r->ranges[n].start = r->undo ? p->nstart : p->fstart;
		r->ranges[n].end = r->ranges[n].start + (r->undo ? p->nsize : p->fsize);
		n++;
	}
	sort(r->ranges, n, sizeof(*r->ranges), cmp_range, NULL);
	for (i = 1, r->nranges = n ? 1 : 0; i < n; i++) {
		struct ks_range *last = &r->ranges[r->nranges - 1];

		if (r->ranges[i].start <= last->end)
			last->end = max(last->end, r->ranges[i].end);
		else
			r->ranges[r->nranges++] = r->ranges[i];
	}
	return 0;
}

/* in_checked_code: a binary search of the ranges, since it runs for every frame of every task. */
static bool in_checked_code(struct ks_run *r, unsigned long addr)
{
	unsigned int lo = 0, hi = r->nranges;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (addr < r->ranges[mid].start)
			hi = mid;
		else if (addr >= r->ranges[mid].end)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

static void note_conflict(struct ks_run *r, struct task_struct *t, unsigned long addr)
{
	struct ks_update *u = r->u;

	r->busy = true;
	u->conflicts_len += scnprintf(u->conflicts + u->conflicts_len, PAGE_SIZE - u->conflicts_len,
				      "%s %d %pS\n", t->comm, task_pid_nr(t), (void *)addr);
}

/* stack_word_in_code: the first word in [sp, end) that is an address inside the code, or 0. */
static unsigned long stack_word_in_code(struct ks_run *r, unsigned long *sp, unsigned long *end)
{
	unsigned long w;

	for (; sp < end; sp++) {
		w = READ_ONCE_NOCHECK(*sp);
		if (in_checked_code(r, w))
			return w;
	}
	return 0;
}

/*
 * task_hit looks for a return address or interrupted instruction pointer of t inside the code
 * being replaced. Every one of them is a word of t's stack between its stack pointer and the
 * top, so when no word there points into the code the task is clear: a scan of those words,
 * much cheaper than unwinding, settles most tasks. Otherwise the ORC unwinder says whether a
 * word found is a return address; where it gives up, the word found counts (conservative).
 * Returns the address found, or 0.
 */
static unsigned long task_hit(struct ks_run *r, struct task_struct *t)
{
	struct unwind_state state;
	unsigned long addr, *sp, *end;

	if (!refcount_read(&t->stack_refcount))
		return 0;
	sp = t == current ? (unsigned long *)current_stack_pointer : (unsigned long *)t->thread.sp;
	end = task_stack_page(t) + THREAD_SIZE;
	if (sp < (unsigned long *)task_stack_page(t) || sp >= end)
		sp = task_stack_page(t);
	if (!stack_word_in_code(r, sp, end))
		return 0;
	for (unwind_start(&state, t, NULL, NULL); !unwind_done(&state); unwind_next_frame(&state)) {
		addr = unwind_get_return_address(&state);
		if (!addr)
			break;
		if (in_checked_code(r, addr))
			return addr;
	}
	if (!unwind_error(&state))
		return 0;
	return stack_word_in_code(r, sp, end);
}

static unsigned long task_switches(struct task_struct *t)
{
	return READ_ONCE(t->nvcsw) + READ_ONCE(t->nivcsw);
}

static int cmp_seen(const void *a, const void *b)
{
	const struct task_struct *x = ((const struct ks_seen *)a)->t, *y = ((const struct ks_seen *)b)->t;

	return x < y ? -1 : x > y;
}

/*
 * precheck walks every task before stop_machine, with the machine running and (tracked) the
 * probe recording; recheck() then walks the tasks recorded so far once more. Inside
 * stop_machine, splice() unwinds only the tasks that may have changed since:
 *
 *  - tracked (the usual case): every task on a CPU at any moment since start_tracking() is in a
 *    set (on_switch records both prev and next). A task in no set has not run since, so its
 *    stack is the one this walk saw: clear (safe), or not (in `unclear`, unwound inside); one
 *    created after the walk that has not run has the stack fork gave it, whose only frame
 *    returns to ret_from_fork. A task in a set or in `unclear` is unwound inside unless
 *    recheck() found it clear while it was off the CPU and its context-switch count has not
 *    moved since: it has not run since that check. No task is left out, so none can keep a
 *    return address into the code, and the work inside depends on the tasks that ran after
 *    recheck() (this writer, the stopper threads, idle tasks, a kworker), not on how many exist.
 *  - untracked (no probe, memory short, a record overflowed): every task is walked inside, but
 *    one whose context-switch count has not moved since this walk (`seen`) is not unwound.
 *
 * A count moves when a task is switched out, and inside stop_machine no task but the stoppers
 * is on a CPU: a task that ran after a check has been switched out since, so its count moved.
 * Task stacks are freed after an RCU grace period (VMAP_STACK), so unwinding a sleeping task
 * under rcu_read_lock() reads mapped memory, whatever the task does meanwhile.
 */
/*
 * clear_outside, with the machine running: whether t is off the CPU with a clear stack; if so,
 * *seen notes it with its context-switch count, read before the stack it describes.
 */
static bool clear_outside(struct ks_run *r, struct task_struct *t, struct ks_seen *seen)
{
	unsigned long switches;

	if (t == current || READ_ONCE(t->on_cpu))
		return false;
	switches = task_switches(t);
	smp_rmb();
	if (READ_ONCE(t->on_cpu) || task_hit(r, t))
		return false;
	*seen = (struct ks_seen){ .t = t, .start_time = t->start_time, .switches = switches };
	return true;
}

static void precheck(struct ks_run *r)
{
	struct task_struct *g, *t;
	unsigned int cap = 64, n = 0;

	rcu_read_lock();
	for_each_process_thread(g, t)
		cap++;
	rcu_read_unlock();
	r->seen = kvmalloc_array(cap, sizeof(*r->seen), GFP_KERNEL);
	r->unclear = kvmalloc_array(cap, sizeof(*r->unclear), GFP_KERNEL);
	if (!r->seen || !r->unclear) {
		kvfree(r->seen);
		kvfree(r->unclear);
		r->seen = NULL;
		r->unclear = NULL;
		return;		/* splice() then checks every task */
	}
	rcu_read_lock();
	for_each_process_thread(g, t) {
		if (n == cap || r->nunclear == cap) {
			r->overflow = true;
			break;
		}
		if (clear_outside(r, t, &r->seen[n])) {
			n++;
			continue;
		}
		get_task_struct(t);
		r->unclear[r->nunclear++] = t;
	}
	rcu_read_unlock();
	sort(r->seen, n, sizeof(*r->seen), cmp_seen, NULL);
	r->nseen = n;
}

/* clear_now notes t in `fresh` when it is off the CPU with a clear stack. */
static void clear_now(struct ks_run *r, struct task_struct *t, unsigned int cap)
{
	if (r->nfresh < cap && clear_outside(r, t, &r->fresh[r->nfresh]))
		r->nfresh++;
}

/*
 * recheck, just before stop_machine, walks the tasks recorded so far (they ran during the walk)
 * and those the walk could not clear, so that inside only those that ran after this are unwound.
 * Every task here is held by a reference (a set's or `unclear`'s).
 */
static void recheck(struct ks_run *r)
{
	unsigned int cpu, i, cap = r->nunclear + 64;

	if (!tracked(r))
		return;
	for_each_possible_cpu(cpu)
		cap += READ_ONCE(r->track->cpu[cpu]->n);
	r->fresh = kvmalloc_array(cap, sizeof(*r->fresh), GFP_KERNEL);
	if (!r->fresh)
		return;
	rcu_read_lock();
	for (i = 0; i < r->nunclear; i++)
		clear_now(r, r->unclear[i], cap);
	for_each_possible_cpu(cpu) {
		struct ks_ran *s = r->track->cpu[cpu];

		for (i = 0; i < RAN_SLOTS; i++) {
			struct task_struct *t = smp_load_acquire(&s->slot[i]);

			if (t)
				clear_now(r, t, cap);
		}
	}
	rcu_read_unlock();
	sort(r->fresh, r->nfresh, sizeof(*r->fresh), cmp_seen, NULL);
}

/* unwind_task, inside stop_machine: notes t as a conflict when its stack is in the code. */
static void unwind_task(struct ks_run *r, struct task_struct *t)
{
	unsigned long addr = task_hit(r, t);

	r->checked++;
	if (addr)
		note_conflict(r, t, addr);
}

/*
 * check_against, inside stop_machine: unwinds t unless `cleared` (sorted, n long) has it with its
 * switch count unchanged, so it has not run since it was found clear. A count moves when a task
 * is switched out: `current`, switched in for this pause, is always unwound.
 */
static void check_against(struct ks_run *r, struct task_struct *t, struct ks_seen *cleared,
			  unsigned int n)
{
	struct ks_seen key = { .t = t }, *seen;

	/* Other CPUs run their stopper threads, spinning; nothing else is on a CPU. */
	if (t != current && READ_ONCE(t->on_cpu))
		return;
	seen = n && t != current ? bsearch(&key, cleared, n, sizeof(key), cmp_seen) : NULL;
	if (seen && seen->start_time == t->start_time && seen->switches == task_switches(t))
		return;
	unwind_task(r, t);
}

/* check_task (untracked): against the walk's record. */
static void check_task(struct ks_run *r, struct task_struct *t)
{
	check_against(r, t, r->seen, r->nseen);
}

/* check_known (tracked): against what recheck() cleared. */
static void check_known(struct ks_run *r, struct task_struct *t)
{
	check_against(r, t, r->fresh, r->nfresh);
}

/* check_tracked, inside stop_machine: the tasks that ran, and those the walk could not clear. */
static void check_tracked(struct ks_run *r)
{
	unsigned int cpu, i;

	check_known(r, current);
	for (i = 0; i < r->nunclear; i++)
		if (r->unclear[i] != current)
			check_known(r, r->unclear[i]);
	for_each_possible_cpu(cpu) {
		struct ks_ran *s = r->track->cpu[cpu];

		for (i = 0; s->n && i < RAN_SLOTS; i++)
			if (s->slot[i] && s->slot[i] != current)
				check_known(r, s->slot[i]);
	}
}

static bool call_int_hooks(struct ks_update *u, enum hook_kind k)
{
	unsigned int i;

	for (i = 0; i < u->nhooks[k]; i++)
		if (((int (*)(void))u->hooks[k][i])())
			return false;
	return true;
}

static void call_void_hooks(struct ks_update *u, enum hook_kind k)
{
	unsigned int i;

	for (i = 0; i < u->nhooks[k]; i++)
		((void (*)(void))u->hooks[k][i])();
}

/* splice runs on one CPU with every other CPU spinning and interrupts off. */
static int splice(void *data)
{
	struct ks_run *r = data;
	struct ks_update *u = r->u;
	bool hooks = r->part == NO_PART;
	struct task_struct *g, *t;
	unsigned int i;
	ktime_t entry = ktime_get(), t0;

	u->write_ns = 0;
	u->splice_ns = 0;
	for (i = 0; i < u->npatches; i++) {
		struct ks_patch *p = &u->patches[i];

		if (in_run(r, p) && memcmp((void *)p->site, r->undo ? p->jump : p->expected, JMP_LEN)) {
			r->cause = "unexpected_code";
			return 0;
		}
	}
	u->conflicts_len = 0;
	u->conflicts[0] = '\0';
	r->checked = 0;
	t0 = ktime_get();
	if (tracked(r)) {
		check_tracked(r);
	} else {
		rcu_read_lock();
		for_each_process_thread(g, t)
			check_task(r, t);
		rcu_read_unlock();
	}
	u->stack_check_ns = ktime_to_ns(ktime_sub(ktime_get(), t0));
	if (r->busy)
		return 0;
	if (hooks && !call_int_hooks(u, r->undo ? CHECK_REVERSE : CHECK_APPLY)) {
		r->cause = "call_failed";
		return 0;
	}
	t0 = ktime_get();
	for (i = 0; i < u->npatches; i++)
		if (r->alias[i])
			memcpy(r->alias[i], r->undo ? u->patches[i].expected : u->patches[i].jump, JMP_LEN);
	u->write_ns = ktime_to_ns(ktime_sub(ktime_get(), t0));
	if (hooks)
		call_void_hooks(u, r->undo ? REVERSE : APPLY);
	u->splice_ns = ktime_to_ns(ktime_sub(ktime_get(), entry));
	return 0;
}

/* stacked_on finds applied updates that patch or refer into u's module; names them in conflicts. */
static bool stacked_on(struct ks_update *u)
{
	struct ks_update *o;
	unsigned int i;
	bool found = false;

	u->conflicts_len = 0;
	u->conflicts[0] = '\0';
	list_for_each_entry(o, &ks_updates, list) {
		bool hit = false;

		if (o == u || o->stage != STAGE_APPLIED)
			continue;
		for (i = 0; i < o->npatches && !hit; i++)
			hit = in_module(u->mod, o->patches[i].site, JMP_LEN, false);
		for (i = 0; i < o->ntargets && !hit; i++)
			hit = in_module(u->mod, o->targets[i], 1, false);
		if (hit) {
			found = true;
			u->conflicts_len += scnprintf(u->conflicts + u->conflicts_len,
						      PAGE_SIZE - u->conflicts_len, "%s\n", o->id);
		}
	}
	return found;
}

/*
 * run_splice writes (or restores) the jumps of run r under stop_machine, retrying while a
 * task is in the code being replaced; the update's own hooks run when r is the whole update.
 * Ksplice's order: pre hooks outside stop_machine; inside it the code check, the stack check,
 * check hooks, the jumps and the apply/reverse hooks; post hooks after. Any abort after the
 * pre hooks runs the fail hooks. Sets r->cause on an abort; returns an errno on a failure.
 */
static int run_splice(struct ks_run *r, u64 *pause)
{
	struct ks_update *u = r->u;
	enum hook_kind base = r->undo ? PRE_REVERSE : PRE_APPLY;
	bool hooks = r->part == NO_PART;
	unsigned int i, tries = max(retries, 1U);
	struct ks_update *o;
	ktime_t t0;
	int ret = 0;

	u->tries = 0;
	for (i = 0; !r->undo && i < u->npatches; i++) {
		if (!in_run(r, &u->patches[i]))
			continue;
		o = applied_overlap(u, u->patches[i].site);
		if (o) {
			u->conflicts_len = scnprintf(u->conflicts, PAGE_SIZE, "%s\n", o->id);
			r->cause = "already_patched";
			return 0;
		}
	}
	r->alias = kcalloc(max(u->npatches, 1U), sizeof(*r->alias), GFP_KERNEL);
	if (!r->alias || make_ranges(r)) {
		kfree(r->alias);
		kvfree(r->ranges);
		return -ENOMEM;
	}
	for (i = 0; i < u->npatches; i++) {
		if (!in_run(r, &u->patches[i]))
			continue;
		r->alias[i] = map_alias(u->patches[i].site, JMP_LEN);
		if (!r->alias[i]) {
			ret = -ENOMEM;
			goto unmap;
		}
	}
	if (hooks && !call_int_hooks(u, base)) {
		r->cause = "call_failed";
		goto fail;
	}
	for (;;) {
		r->busy = false;
		u->tries++;
		start_tracking(r);
		precheck(r);
		recheck(r);
		t0 = ktime_get();
		stop_machine(splice, r, NULL);
		*pause = ktime_to_ns(ktime_sub(ktime_get(), t0));
		stop_tracking(r);
		u->stack_checks = r->checked;
		if (r->cause || !r->busy || u->tries >= tries)
			break;
		msleep_interruptible(retry_interval_ms);
	}
	if (!r->cause && r->busy)
		r->cause = "code_busy";
	if (r->cause)
		goto fail;
	on_each_cpu(do_sync_core, NULL, 1);
	for (i = 0; i < u->npatches; i++)
		if (in_run(r, &u->patches[i]))
			u->patches[i].live = !r->undo;
	if (hooks)
		call_void_hooks(u, base + (POST_APPLY - PRE_APPLY));
	goto unmap;
fail:
	if (hooks)
		call_void_hooks(u, base + (FAIL_APPLY - PRE_APPLY));
unmap:
	for (i = 0; i < u->npatches; i++)
		unmap_alias(r->alias[i]);
	kfree(r->alias);
	kvfree(r->ranges);
	return ret;
}

/* transition applies (undo=false) or reverses u: the jumps of its live parts, and its hooks. */
static int transition(struct ks_update *u, bool undo)
{
	const char *verb = undo ? "reverse" : "apply";
	struct ks_run r = { .u = u, .undo = undo, .part = NO_PART };
	unsigned int i, npending = 0;
	u64 pause = 0;
	int ret;

	if (undo && stacked_on(u)) {
		r.cause = "module_busy";
	} else if (!undo && u->stale) {
		/* Its plan was made when the module was (not) there: user space must plan again. */
		r.cause = "module_changed";
	} else {
		ret = run_splice(&r, &pause);
		if (ret)
			return ret;
	}
	if (r.cause) {
		u->abort_cause = r.cause;
		scnprintf(last_error, sizeof(last_error), "%s: %s aborted: %s", u->id, verb, r.cause);
		pr_info("Update %s %s aborted: %s\n", u->id, verb, r.cause);
		return r.busy || !strcmp(r.cause, "module_busy") ? -EBUSY : -EINVAL;
	}
	u->abort_cause = "none";
	u->pause_ns = pause;
	u->conflicts_len = 0;
	u->conflicts[0] = '\0';
	if (undo) {
		u->stage = STAGE_REVERSED;
		module_put(THIS_MODULE);
	} else {
		u->stage = STAGE_APPLIED;
		u->applied_at = ktime_get_real_seconds();
		__module_get(THIS_MODULE);	/* the core stays while code jumps into updates */
		add_taint(TAINT_LIVEPATCH, LOCKDEP_STILL_OK);
	}
	for (i = 0; i < u->nparts; i++)
		npending += u->parts[i].state == PART_PENDING;
	if (!undo && npending)
		pr_info("Update %s applied successfully; %u module(s) pending until they load\n", u->id, npending);
	else
		pr_info("Update %s %s successfully\n", u->id, undo ? "reversed" : "applied");
	return 0;
}

/* fail_part: part k of u is failed (its module runs unpatched); its plan is forgotten. */
static void fail_part(struct ks_update *u, unsigned int k, const char *why)
{
	struct ks_part *part = &u->parts[k];

	drop_part_patches(u, k);
	unpin(u, pin_of_part, &k);
	kfree(part->why);
	part->why = kstrdup(why, GFP_KERNEL);
	part->state = PART_FAILED;
	pr_warn("Update %s: module %s loaded unpatched: %s\n", u->id, part->module, why);
}

/* transition_part makes part k of u live, its module loading (from the helper, "ID part M apply"). */
static int transition_part(struct ks_update *u, unsigned int k)
{
	struct ks_run r = { .u = u, .part = k };
	unsigned int i, n = 0;
	u64 pause = 0;
	int ret;

	for (i = 0; i < u->npatches; i++)
		n += u->patches[i].part == k;
	if (!n)
		return set_error("%s part %s apply: the helper sent no jumps", u->id, u->parts[k].module);
	ret = run_splice(&r, &pause);
	if (ret)
		return ret;
	if (r.cause) {
		char why[64];

		snprintf(why, sizeof(why), "applying its jumps aborted: %s", r.cause);
		fail_part(u, k, why);
		return set_error("%s part %s: %s", u->id, u->parts[k].module, why);
	}
	u->parts[k].state = PART_LIVE;
	pr_info("Update %s: module %s loaded, %u function(s) patched\n", u->id, u->parts[k].module, n);
	return 0;
}

/* ---- per-update sysfs files ---- */

#define to_update(kobj) container_of(kobj, struct ks_update, kobj)

static ssize_t stage_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	struct ks_update *u = to_update(kobj);
	ssize_t n;

	mutex_lock(&ks_mutex);
	n = sysfs_emit(buf, "%s\n", stage_names[u->stage]);
	mutex_unlock(&ks_mutex);
	return n;
}

static ssize_t stage_store(struct kobject *kobj, struct kobj_attribute *attr,
			   const char *buf, size_t count)
{
	struct ks_update *u = to_update(kobj);
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	mutex_lock(&ks_mutex);
	if (u->deleted)
		ret = set_error("%s stage: the update was deleted", u->id);
	else if (sysfs_streq(buf, "applied"))
		ret = u->stage == STAGE_APPLIED ?
			set_error("%s stage: already applied", u->id) : transition(u, false);
	else if (sysfs_streq(buf, "reversed"))
		ret = u->stage != STAGE_APPLIED ?
			set_error("%s stage: not applied", u->id) : transition(u, true);
	else
		ret = set_error("%s stage: write applied or reversed", u->id);
	mutex_unlock(&ks_mutex);
	return ret ? ret : count;
}

#define SHOW(field, fmt, ...)								\
static ssize_t field##_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)	\
{											\
	struct ks_update *u = to_update(kobj);						\
	ssize_t n;									\
											\
	mutex_lock(&ks_mutex);								\
	n = sysfs_emit(buf, fmt, __VA_ARGS__);						\
	mutex_unlock(&ks_mutex);							\
	return n;									\
}
SHOW(abort_cause, "%s\n", u->abort_cause)
SHOW(conflicts, "%s", u->conflicts)
SHOW(pause_ns, "%llu\n", u->pause_ns)
SHOW(stack_checks, "%u\n", u->stack_checks)
SHOW(stack_check_ns, "%llu\n", u->stack_check_ns)
SHOW(write_ns, "%llu\n", u->write_ns)
SHOW(splice_ns, "%llu\n", u->splice_ns)
SHOW(tries, "%u\n", u->tries)
SHOW(applied_at, "%lld\n", (long long)u->applied_at)
SHOW(description, "%s\n", u->description ? u->description : "")

static ssize_t patches_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	struct ks_update *u = to_update(kobj);
	unsigned int i;
	int n = 0;

	mutex_lock(&ks_mutex);
	for (i = 0; i < u->npatches; i++)
		n += sysfs_emit_at(buf, n, "%s %lx %lx %s %s %s\n", u->patches[i].name,
				   u->patches[i].site, u->patches[i].new, u->patches[i].module,
				   u->parts[u->patches[i].part].module,
				   u->patches[i].live ? "live" : "planned");
	mutex_unlock(&ks_mutex);
	return n;
}

/* parts: "MODULE STATE NAME,NAME... [REASON]" per part ("-" when it names no function). */
static ssize_t parts_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	struct ks_update *u = to_update(kobj);
	unsigned int i, j;
	int n = 0;

	mutex_lock(&ks_mutex);
	for (i = 0; i < u->nparts; i++) {
		struct ks_part *p = &u->parts[i];

		n += sysfs_emit_at(buf, n, "%s %s ", p->module, part_state_names[p->state]);
		if (!p->names || !*p->names)
			n += sysfs_emit_at(buf, n, "-");
		for (j = 0; p->names && p->names[j]; j++)
			n += sysfs_emit_at(buf, n, "%c", p->names[j] == ' ' ? ',' : p->names[j]);
		n += sysfs_emit_at(buf, n, p->state == PART_FAILED && p->why ? " %s\n" : "\n",
				   p->why);
	}
	mutex_unlock(&ks_mutex);
	return n;
}

static struct kobj_attribute stage_attr = __ATTR(stage, 0644, stage_show, stage_store);
static struct kobj_attribute abort_cause_attr = __ATTR_RO(abort_cause);
static struct kobj_attribute conflicts_attr = __ATTR_RO(conflicts);
static struct kobj_attribute pause_ns_attr = __ATTR_RO(pause_ns);
static struct kobj_attribute stack_checks_attr = __ATTR_RO(stack_checks);
static struct kobj_attribute stack_check_ns_attr = __ATTR_RO(stack_check_ns);
static struct kobj_attribute write_ns_attr = __ATTR_RO(write_ns);
static struct kobj_attribute splice_ns_attr = __ATTR_RO(splice_ns);
static struct kobj_attribute tries_attr = __ATTR_RO(tries);
static struct kobj_attribute applied_at_attr = __ATTR_RO(applied_at);
static struct kobj_attribute description_attr = __ATTR_RO(description);
static struct kobj_attribute patches_attr = __ATTR_RO(patches);
static struct kobj_attribute parts_attr = __ATTR_RO(parts);

static struct attribute *update_attrs[] = {
	&stage_attr.attr, &abort_cause_attr.attr, &conflicts_attr.attr, &pause_ns_attr.attr,
	&stack_checks_attr.attr, &stack_check_ns_attr.attr, &write_ns_attr.attr, &splice_ns_attr.attr,
	&tries_attr.attr, &applied_at_attr.attr, &description_attr.attr, &patches_attr.attr,
	&parts_attr.attr, NULL,
};
ATTRIBUTE_GROUPS(update);

static struct kobj_attribute control_attr = __ATTR(control, 0200, NULL, control_store);
static struct kobj_attribute last_error_attr = __ATTR_RO(last_error);
static struct kobj_attribute bench_ns_attr = __ATTR_RO(bench_ns);
static struct kobj_attribute coming_attr = __ATTR_RO(coming);
static struct kobj_attribute version_attr = __ATTR_RO(version);
static struct kobj_attribute shadows_attr = __ATTR_RO(shadows);
static struct attribute *root_attrs[] = {
	&control_attr.attr, &last_error_attr.attr, &bench_ns_attr.attr, &coming_attr.attr,
	&version_attr.attr, &shadows_attr.attr, NULL,
};
static const struct attribute_group root_group = { .attrs = root_attrs };

/* ---- module tracking ---- */

/* helper_failed says why the helper run for a coming module did not make a part live. */
static void helper_failed(char *why, size_t len, const char *path, int ret)
{
	if (!path)
		scnprintf(why, len, "no ksplice helper is set to match it");
	else if (ret < 0)
		scnprintf(why, len, "could not run the ksplice helper %s (error %d)", path, ret);
	else if (ret & 0x7f)
		scnprintf(why, len, "the ksplice helper %s was killed by signal %d", path, ret & 0x7f);
	else if (ret)
		scnprintf(why, len, "the ksplice helper %s exited with status %d", path, (ret >> 8) & 0xff);
	else
		scnprintf(why, len, "the ksplice helper %s ended without applying it", path);
}

/*
 * module_coming: MOD is loading (relocated, alternatives and jump labels in place, read-only,
 * its init not yet called). Every applied update with a pending part in it gets the part
 * made by the helper, which this waits for; ks_mutex is not held meanwhile, since the helper
 * talks to the core. Whatever happens, MOD loads: a part not made live is failed.
 */
static void module_coming(struct module *mod)
{
	static char *envp[] = { "HOME=/", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				NULL };
	char *argv[MAX_HELPER_ARGS + 2] = {}, why[160];
	struct ks_update *u;
	unsigned int k, n = 0;
	int i, nargs = 0, ret = 0;

	mutex_lock(&ks_mutex);
	list_for_each_entry(u, &ks_updates, list) {
		k = find_part(u, mod->name);
		if (k == NO_PART)
			continue;
		if (u->stage == STAGE_PREPARING)
			u->stale = true;
		if (u->stage != STAGE_APPLIED || u->parts[k].state != PART_PENDING)
			continue;
		u->parts[k].state = PART_COMING;
		n++;
	}
	for (nargs = 0; n && helper_argv[nargs]; nargs++) {
		argv[nargs] = kstrdup(helper_argv[nargs], GFP_KERNEL);
		if (!argv[nargs])
			ret = -ENOMEM;
	}
	mutex_unlock(&ks_mutex);
	if (!n)
		return;
	if (argv[0] && !ret) {
		argv[nargs] = mod->name;
		pr_info("module %s is loading with %u pending update part(s): running %s\n", mod->name, n,
			argv[0]);
		ret = call_usermodehelper(argv[0], argv, envp, UMH_WAIT_PROC | UMH_KILLABLE);
	}
	helper_failed(why, sizeof(why), argv[0], ret);
	for (i = 0; i < nargs; i++)
		kfree(argv[i]);
	mutex_lock(&ks_mutex);
	list_for_each_entry(u, &ks_updates, list) {
		k = find_part(u, mod->name);
		if (k != NO_PART && u->parts[k].state == PART_COMING)
			fail_part(u, k, why);
	}
	mutex_unlock(&ks_mutex);
}

struct ks_restore {
	struct ks_patch **patches;
	void **alias;
	unsigned int n;
};

static int restore_sites(void *data)
{
	struct ks_restore *r = data;
	unsigned int i;

	for (i = 0; i < r->n; i++)
		memcpy(r->alias[i], r->patches[i]->expected, JMP_LEN);
	return 0;
}

/*
 * restore_stacked puts back the bytes under the live jumps of part k of u that are not in
 * MOD's own memory: a stacked update's jumps into an earlier update's replacement of MOD's code.
 * MOD is going, so that code is unreachable; it stays in memory, and must be as it was when
 * MOD loads again and the earlier update's part is made anew.
 */
static void restore_stacked(struct ks_update *u, unsigned int k, struct module *mod)
{
	struct ks_restore r = {};
	unsigned int i;

	r.patches = kcalloc(max(u->npatches, 1U), sizeof(*r.patches), GFP_KERNEL);
	r.alias = kcalloc(max(u->npatches, 1U), sizeof(*r.alias), GFP_KERNEL);
	if (!r.patches || !r.alias)
		goto out;
	for (i = 0; i < u->npatches; i++) {
		struct ks_patch *p = &u->patches[i];

		if (p->part != k || !p->live || in_module(mod, p->site, JMP_LEN, false))
			continue;
		r.alias[r.n] = map_alias(p->site, JMP_LEN);
		if (!r.alias[r.n]) {
			pr_err("Update %s: cannot map %lx to take the jump of %s out\n", u->id, p->site, p->name);
			continue;
		}
		r.patches[r.n++] = p;
	}
	if (r.n) {
		stop_machine(restore_sites, &r, NULL);
		on_each_cpu(do_sync_core, NULL, 1);
	}
	for (i = 0; i < r.n; i++)
		unmap_alias(r.alias[i]);
out:
	kfree(r.patches);
	kfree(r.alias);
}

/*
 * module_going: MOD is being freed (rmmod -f, or its init or load failed after it came). Its
 * pins go; a part in it forgets its jumps with the memory they were in (taking out those a
 * stacked update wrote elsewhere) and waits for the module to load again.
 */
static void module_going(struct module *mod)
{
	struct ks_update *u;
	struct ks_part *part;
	unsigned int k;
	bool live;

	mutex_lock(&ks_mutex);
	list_for_each_entry(u, &ks_updates, list) {
		unpin(u, pin_of_module, mod);
		k = find_part(u, mod->name);
		if (k == NO_PART)
			continue;
		if (u->stage == STAGE_PREPARING)
			u->stale = true;
		part = &u->parts[k];
		if (u->stage != STAGE_APPLIED || part->state == PART_PENDING)
			continue;
		live = part->state == PART_LIVE;
		restore_stacked(u, k, mod);
		drop_part_patches(u, k);
		kfree(part->why);
		part->why = NULL;
		part->state = PART_PENDING;
		if (live)
			pr_warn("Update %s: module %s was removed while patched; its part is pending until it loads again\n",
				u->id, mod->name);
	}
	mutex_unlock(&ks_mutex);
}

static int module_event(struct notifier_block *nb, unsigned long event, void *data)
{
	struct module *mod = data;
	struct ks_mod *m;

	if (strncmp(mod->name, "ksplice_", strlen("ksplice_"))) {
		if (event == MODULE_STATE_COMING)
			module_coming(mod);
		else if (event == MODULE_STATE_GOING)
			module_going(mod);
		return NOTIFY_DONE;
	}
	mutex_lock(&ks_mutex);
	if (event == MODULE_STATE_LIVE) {
		m = kzalloc(sizeof(*m), GFP_KERNEL);
		if (m) {
			m->mod = mod;
			list_add(&m->list, &ks_mods);
		}
	} else if (event == MODULE_STATE_GOING) {
		m = find_mod(mod->name);
		if (m) {
			list_del(&m->list);
			kfree(m);
		}
	}
	mutex_unlock(&ks_mutex);
	return NOTIFY_DONE;
}

static struct notifier_block module_nb = { .notifier_call = module_event };

static int __init ksplice_init(void)
{
	int ret;

	ks_root = kobject_create_and_add("ksplice", kernel_kobj);
	if (!ks_root)
		return -ENOMEM;
	ret = sysfs_create_group(ks_root, &root_group);
	if (ret)
		goto put;
	ret = register_module_notifier(&module_nb);
	if (ret)
		goto put;
	/* Once, here: registering rewrites __schedule's static call (see the header). */
	for_each_kernel_tracepoint(find_switch_tp, &switch_tp);
	if (switch_tp && tracepoint_probe_register(switch_tp, on_switch, NULL))
		switch_tp = NULL;
	if (!switch_tp)
		pr_warn("no sched_switch probe: stack checks walk every task inside stop_machine\n");
	return 0;
put:
	kobject_put(ks_root);
	return ret;
}

static void __exit ksplice_exit(void)
{
	struct ks_update *u;
	struct ks_mod *m, *mtmp;
	unsigned long n;
	int i;

	/* Nothing is applied: each applied update holds a reference on this module. */
	unregister_module_notifier(&module_nb);
	if (switch_tp) {
		tracepoint_probe_unregister(switch_tp, on_switch, NULL);
		tracepoint_synchronize_unregister();
	}
	rcu_barrier();	/* free_track() callbacks are this module's code */
	for (;;) {
		mutex_lock(&ks_mutex);
		u = list_first_entry_or_null(&ks_updates, struct ks_update, list);
		if (u)
			delete_update(u);
		mutex_unlock(&ks_mutex);
		if (!u)
			break;
		/* Outside ks_mutex: kobject_put waits for readers of the update's files. */
		kobject_put(&u->kobj);
	}
	mutex_lock(&ks_mutex);
	list_for_each_entry_safe(m, mtmp, &ks_mods, list) {
		list_del(&m->list);
		kfree(m);
	}
	for (i = 0; helper_argv[i]; i++)
		kfree(helper_argv[i]);
	mutex_unlock(&ks_mutex);
	kobject_put(ks_root);
	/* The update modules that used them are gone: what their reverse hooks left is freed. */
	n = shadow_free_everything();
	if (n)
		pr_warn("%lu shadow(s) left by updates freed at unload\n", n);
}

module_init(ksplice_init);
module_exit(ksplice_exit);
