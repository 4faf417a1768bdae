// The kbuild Makefile reader (src/kbuild/make.ts) and the object map (src/kbuild/objects.ts),
// on Makefile text and on a small fake tree laid out like the kernel's. Each case is a form the
// real tree uses (see the comments); the whole-tree check against Debian's debug vmlinux is in
// the coverage benchmark's notes, not here.
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { UserError } from "../../src/errors.js";
import { MakeEval } from "../../src/kbuild/make.js";
import { evalMakefile, ObjectMap, pickObjects } from "../../src/kbuild/objects.js";
import { tempDir } from "../helpers/compile.js";

const config = new Map([
  ["CONFIG_NET", "y"],
  ["CONFIG_IPV6", "y"],
  ["CONFIG_BPF_LSM", "y"],
  ["CONFIG_PCI", "y"],
  ["CONFIG_SECURITY_SELINUX", "y"],
  ["CONFIG_TCG_TPM", "y"],
  ["CONFIG_OVERLAY_FS", "m"],
  ["CONFIG_ADVISE_SYSCALLS", "y"],
  ["CONFIG_MMU", "y"],
  ["CONFIG_NAME", "cloud"],
]);

test("assignments in both reference spellings, subst and substitution references", () => {
  const v = evalMakefile(
    [
      "obj-y := a.o",
      // biome-ignore lint/suspicious/noTemplateCurlyInString: make's ${VAR}, as kernel/bpf/Makefile spells it
      "obj-${CONFIG_BPF_LSM} += bpf_lsm.o",
      "obj-$(subst m,y,$(CONFIG_IPV6)) += inet6_hashtables.o", // net/ipv6/Makefile
      "obj-$(CONFIG_OVERLAY_FS:m=y) += ovl.o",
      "obj-$(CONFIG_MISSING) += never.o",
      "obj-y += $(addprefix sub/,x.o y.o) $(patsubst %.c,%.o,z.c) $(filter-out q.o,q.o w.o)",
      "name := $(CONFIG_NAME)-$(if $(CONFIG_MMU),mmu,nommu)",
    ].join("\n"),
    config,
  );
  assert.deepEqual(v.get("obj-y"), [
    "a.o",
    "bpf_lsm.o",
    "inet6_hashtables.o",
    "ovl.o",
    "sub/x.o",
    "sub/y.o",
    "z.o",
    "w.o",
  ]);
  assert.deepEqual(v.get("obj-"), ["never.o"]);
  assert.deepEqual(v.get("name"), ["cloud-mmu"]);
});

test("conditionals, tab-indented lines outside rules, rules, recipes and define blocks", () => {
  const v = evalMakefile(
    [
      "ifdef CONFIG_MMU",
      "\tobj-$(CONFIG_ADVISE_SYSCALLS)\t+= madvise.o", // mm/Makefile indents inside ifdef
      "else",
      "\tobj-y += nommu.o",
      "endif",
      "ifeq ($(CONFIG_NET),y)",
      "obj-y += net.o",
      "else ifeq ($(CONFIG_NET),m)",
      "obj-y += netmod.o",
      "endif",
      'ifneq "$(CONFIG_PCI)" "y"',
      "obj-y += nopci.o",
      "endif",
      "ifndef CONFIG_MISSING",
      "obj-y += missing.o",
      "endif",
      "$(obj)/gen.h: $(src)/gen.txt FORCE",
      "\tobj-y += recipe-line-not-an-assignment.o",
      "define filechk_x",
      "obj-y += in-define.o",
      "endef",
      "CFLAGS_a.o += -DX # a comment",
    ].join("\n"),
    config,
  );
  assert.deepEqual(v.get("obj-y"), ["madvise.o", "net.o", "missing.o"]);
  assert.deepEqual(v.get("CFLAGS_a.o"), ["-DX"]);
});

test("MakeEval: ?= keeps a value, += appends, $$ is a dollar, foreach and sort", () => {
  const ev = new MakeEval((n) => (n === "PRESET" ? "p" : undefined)).evaluate(
    ["PRESET ?= other", "x = 1", "x += 2", "y := $$(z)", "w := $(sort $(foreach i,b a b,$(i)))"].join("\n"),
  );
  assert.equal(ev.get("PRESET"), "p");
  assert.equal(ev.get("x"), "1 2");
  assert.equal(ev.get("y"), "$(z)");
  assert.equal(ev.get("w"), "a b");
});

/** A fake tree with the directory forms of the kernel's that the object map must follow. */
function fakeTree(): string {
  const root = tempDir();
  const files: Record<string, string> = {
    Kbuild:
      "obj-y += kernel/ mm/ security/ drivers/\nobj-y += arch/$(SRCARCH)/\nobj-y += $(ARCH_DRIVERS)\nobj-$(CONFIG_NET) += net/\nobj-$(CONFIG_SAMPLES) += samples/\n",
    "arch/x86/Makefile": "drivers-$(CONFIG_PCI) += arch/x86/pci/\ncore-y += arch/x86/\n",
    "arch/x86/Kbuild": "obj-y += mm/\n",
    "arch/x86/mm/Makefile": "obj-y += init_64.o\n",
    "arch/x86/mm/init_64.c": '#include "ident_map.c"\n',
    "arch/x86/mm/ident_map.c": "",
    "arch/x86/pci/Makefile": "obj-y += fixup.o\n",
    "arch/x86/pci/fixup.c": "",
    "kernel/Makefile": "obj-y += sys.o sched/ bpf/\n",
    "kernel/sys.c": "",
    "kernel/sched/Makefile": "obj-y += build_utility.o\n",
    "kernel/sched/build_utility.c": '#include "clock.c"\n# include "cpufreq_schedutil.c"\n',
    "kernel/sched/clock.c": "",
    "kernel/sched/cpufreq_schedutil.c": "",
    "kernel/bpf/Makefile":
      "obj-$(CONFIG_BPF_LSM) += relo_core.o\n$(obj)/relo_core.o: $(srctree)/tools/lib/bpf/relo_core.c FORCE\n\t$(call if_changed_rule,cc_o_c)\n",
    "tools/lib/bpf/relo_core.c": "",
    "mm/Makefile": "mmu-$(CONFIG_MMU) := memory.o\nobj-y := filemap.o $(mmu-y)\n",
    "mm/memory.c": "",
    "mm/filemap.c": "",
    "mm/unused.c": "",
    "security/Makefile": "obj-$(CONFIG_SECURITY_SELINUX) += selinux/\n",
    "security/selinux/Makefile":
      "obj-$(CONFIG_SECURITY_SELINUX) := selinux.o\nselinux-y := hooks.o ss/services.o\n",
    "security/selinux/hooks.c": "",
    "security/selinux/ss/services.c": "",
    "drivers/Makefile": "obj-$(CONFIG_TCG_TPM) += char/\nobj-y += overlay/\n",
    "drivers/char/Makefile": "obj-$(CONFIG_TCG_TPM) += tpm/\n",
    "drivers/char/tpm/Makefile":
      "obj-$(CONFIG_TCG_TPM) += tpm.o\ntpm-y := tpm-interface.o\ntpm-y += eventlog/tpm1.o\n",
    "drivers/char/tpm/eventlog/tpm1.c": "",
    "drivers/overlay/Makefile": "obj-$(CONFIG_OVERLAY_FS) += overlay.o\noverlay-objs := super.o\n",
    "drivers/overlay/super.c": "",
    "net/Makefile": "obj-y += ipv6/\n",
    "net/ipv6/Makefile": "obj-$(subst m,y,$(CONFIG_IPV6)) += inet6_hashtables.o\n",
    "net/ipv6/inet6_hashtables.c": "",
    "samples/Makefile": "obj-y += s.o\n",
    "samples/s.c": "",
  };
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, rel)), { recursive: true });
    writeFileSync(join(root, rel), text);
  }
  return root;
}

test("objectsOf: the object a changed .c file is built into, and how", () => {
  const map = new ObjectMap(fakeTree(), config);
  const of = (f: string) => map.objectsOf(f).map((o) => `${o.object}:${o.state}`);
  assert.deepEqual(of("kernel/sys.c"), ["kernel/sys.o:y"]);
  assert.deepEqual(of("mm/memory.c"), ["mm/memory.o:y"], "through $(mmu-y)");
  assert.deepEqual(of("mm/unused.c"), []);
  assert.deepEqual(of("arch/x86/pci/fixup.c"), ["arch/x86/pci/fixup.o:y"], "drivers-y of arch/x86/Makefile");
  assert.deepEqual(of("net/ipv6/inet6_hashtables.c"), ["net/ipv6/inet6_hashtables.o:y"]);
  // Members of composite objects, listed by a parent directory's Makefile.
  assert.deepEqual(of("security/selinux/ss/services.c"), ["security/selinux/ss/services.o:y"]);
  assert.deepEqual(of("drivers/char/tpm/eventlog/tpm1.c"), ["drivers/char/tpm/eventlog/tpm1.o:y"]);
  assert.deepEqual(of("drivers/overlay/super.c"), ["drivers/overlay/super.o:m"], "a module's member");
  // .c files #included by other .c files, and one built by a rule of its own.
  assert.deepEqual(of("kernel/sched/cpufreq_schedutil.c"), ["kernel/sched/build_utility.o:y"]);
  assert.deepEqual(of("arch/x86/mm/ident_map.c"), ["arch/x86/mm/init_64.o:y"]);
  assert.deepEqual(of("tools/lib/bpf/relo_core.c"), ["kernel/bpf/relo_core.o:y"]);
  assert.deepEqual(of("samples/s.c"), [], "a directory the configuration leaves out");
});

test("dirState follows the root Kbuild, arch/x86/Makefile and each parent", () => {
  const map = new ObjectMap(fakeTree(), config);
  assert.equal(map.dirState("kernel/sched"), "y");
  assert.equal(map.dirState("arch/x86/pci"), "y");
  assert.equal(map.dirState("arch/x86/mm"), "y");
  assert.equal(map.dirState("security/selinux/ss"), "n", "no Makefile: its objects belong to selinux/");
  assert.equal(map.dirState("samples"), "n");
});

test("pickObjects: the objects a patch's files touch, built in or in a module, and the refusals", () => {
  const root = fakeTree();
  writeFileSync(join(root, "kernel/sys.h"), "");
  writeFileSync(join(root, "kernel/sys.c"), '#include "sys.h"\n');
  const pick = (...files: string[]) => pickObjects(root, config, files);
  assert.deepEqual(pick("kernel/sys.c", "kernel/sched/cpufreq_schedutil.c"), [
    { object: "kernel/sched/build_utility.o" },
    { object: "kernel/sys.o" },
  ]);
  // A header: the built-in objects whose sources include it.
  assert.deepEqual(pick("kernel/sys.h"), [{ object: "kernel/sys.o" }]);
  // Documentation and files the configuration leaves out are ignored next to real changes.
  assert.deepEqual(pick("kernel/sys.c", "Documentation/x.rst", "samples/s.c"), [{ object: "kernel/sys.o" }]);
  // A member of a module (overlay-objs := super.o makes overlay.ko), with vmlinux in the same patch.
  assert.deepEqual(pick("drivers/overlay/super.c", "kernel/sys.c"), [
    { object: "drivers/overlay/super.o", module: "overlay" },
    { object: "kernel/sys.o" },
  ]);
  const refused = (files: string[], code: string, re: RegExp) =>
    assert.throws(
      () => pick(...files),
      (e: unknown) => e instanceof UserError && e.code === code && re.test(e.message),
    );
  refused(
    ["samples/s.c"],
    "not_compiled",
    /changes nothing that is compiled into this kernel \(samples\/s\.c\)/,
  );
  refused(["kernel/Makefile"], "unsupported_change", /kernel\/Makefile changes the build configuration/);
  writeFileSync(join(root, "kernel/entry.S"), "");
  writeFileSync(join(root, "kernel/Makefile"), "obj-y += sys.o sched/ bpf/ entry.o\n");
  refused(["kernel/entry.S"], "unsupported_change", /kernel\/entry\.S is an assembly file/);
});

test("moduleOf: the module an object ends up in, by the kernel's name for it", () => {
  const root = fakeTree();
  writeFileSync(
    join(root, "drivers/char/tpm/Makefile"),
    "obj-m += tpm-tis.o\nobj-$(CONFIG_TCG_TPM) += tpm.o\ntpm-y := tpm-interface.o\n",
  );
  const map = new ObjectMap(root, new Map([...config, ["CONFIG_TCG_TPM", "m"]]));
  assert.equal(map.moduleOf("drivers/overlay/super.o"), "overlay");
  assert.equal(map.moduleOf("drivers/char/tpm/tpm-tis.o"), "tpm_tis");
  assert.equal(map.moduleOf("drivers/char/tpm/tpm-interface.o"), "tpm");
  assert.equal(map.moduleOf("kernel/sys.o"), undefined);
});
