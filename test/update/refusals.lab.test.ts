// What `ksplice create` says about real fixes it cannot or need not turn into an update: each
// case is a one-file fix of Debian's stable delta (src/lab/corpus.ts), built against the lab's
// prepared tree (no VM). Each refusal must name its cause, not a guess. Also: the object map
// on the real tree finds the objects of the fixes that it once missed.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { UserError } from "../../src/errors.js";
import { ObjectMap } from "../../src/kbuild/objects.js";
import { parseConfig } from "../../src/kbuild/tree.js";
import { PINNED_CORPUS, prepareCorpus } from "../../src/lab/corpus.js";
import { prepareLab } from "../../src/lab/index.js";
import { tempDir } from "../helpers/compile.js";
import { updateMaker } from "../helpers/updates.js";

const TIMEOUT = 20 * 60_000;

test("the object map finds the objects of fixes it once missed, on the real tree", {
  timeout: TIMEOUT,
}, async () => {
  const lab = await prepareLab();
  const map = new ObjectMap(lab.sourceDir, parseConfig(readFileSync(join(lab.sourceDir, ".config"), "utf8")));
  const of = (f: string) => map.objectsOf(f).map((o) => `${o.object}:${o.state}`);
  assert.deepEqual(of("kernel/sched/cpufreq_schedutil.c"), ["kernel/sched/build_utility.o:y"]);
  assert.deepEqual(of("security/selinux/ss/conditional.c"), ["security/selinux/ss/conditional.o:y"]);
  assert.deepEqual(of("drivers/char/tpm/eventlog/tpm1.c"), ["drivers/char/tpm/eventlog/tpm1.o:y"]);
  assert.deepEqual(of("net/ipv6/inet6_hashtables.c"), ["net/ipv6/inet6_hashtables.o:y"]);
  assert.deepEqual(of("kernel/bpf/bpf_lsm.c"), ["kernel/bpf/bpf_lsm.o:y"]);
  assert.deepEqual(of("arch/x86/pci/fixup.c"), ["arch/x86/pci/fixup.o:y"]);
  assert.deepEqual(of("mm/madvise.c"), ["mm/madvise.o:y"]);
  assert.deepEqual(of("tools/lib/bpf/relo_core.c"), ["kernel/bpf/relo_core.o:y"]);
  assert.deepEqual(of("fs/overlayfs/super.c"), ["fs/overlayfs/super.o:m"]);
  assert.deepEqual(of("drivers/gpu/drm/i915/i915_drv.c"), []);
});

test("create refuses real fixes that cannot or need not be applied live, naming the cause", {
  timeout: TIMEOUT,
}, async () => {
  const lab = await prepareLab();
  const corpus = await prepareCorpus(lab, { prefer: PINNED_CORPUS });
  const make = updateMaker(lab, tempDir(), join(tempDir(), "core"));
  const cases: Array<[file: string, code: string, message: RegExp]> = [
    // Only __init/__exit code: it ran at boot, or never runs in built-in code.
    [
      "block/bdev.c",
      "no_change",
      /bdev_cache_init changes __init code or data \(\.init\.text\), which ran at boot/,
    ],
    ["crypto/rng.c", "no_change", /rng_exit adds __exit code or data \(\.exit\.text\), which never runs/],
    // A .c file #included only under an #ifdef that is off for this kernel.
    ["mm/percpu-km.c", "no_change", /never reaches the compiler in this kernel's configuration/],
    // Code under #ifdef CONFIG_PREEMPT_RT, which this kernel is not.
    ["kernel/futex/requeue.c", "no_change", /never reaches the compiler in this kernel's configuration/],
    // EXPORT_SYMBOL_GPL(free_uid): the running kernel's exports cannot grow.
    ["kernel/user.c", "no_change", /free_uid adds an export \(EXPORT_SYMBOL_GPL\)/],
    // READ_ONCE of a pointer the compiler already read once: the same code.
    ["drivers/dax/super.c", "no_change", /its changes compile to the same code/],
    ["drivers/acpi/resource.c", "no_change", /changes only comments or whitespace/],
    // A new exported function that nothing built in calls.
    [
      "arch/x86/platform/efi/quirks.c",
      "no_change",
      /nothing in the running kernel uses: efivar_reserved_space/,
    ],
    // A const table that other data points to: a copy would not reach those pointers.
    [
      "net/ipv6/seg6.c",
      "unsupported_change",
      /seg6_genl_policy: changes initialised data .*read-only .* is referred to by data \(seg6_genl_family\)/,
    ],
    // Writable data: its value in the running kernel may have changed since boot.
    [
      "kernel/trace/trace_mmiotrace.c",
      "unsupported_change",
      /mmio_tracer: changes initialised data .*ksplice_apply hook/,
    ],
    // New fields of structures whose instances exist: the old layout would meet the new code.
    [
      "net/sched/cls_route.c",
      "unsupported_change",
      /struct route4_bucket: changes the layout of struct route4_bucket \(280 → 288 bytes; adds filters_ref at \+264; moves rcu to \+272\).*shadow.*ksplice_layout_change\(route4_bucket\)(.|\n)*struct route4_filter: changes the layout of struct route4_filter \(adds dying at \+68\)/,
    ],
    // New PCI quirks: entries of tables the kernel built at boot.
    ["arch/x86/pci/fixup.c", "unsupported_change", /adds or changes entries of \.pci_fixup_final/],
    // The same upstream commit changed a header.
    [
      "security/selinux/ss/services.c",
      "does_not_compile",
      /the patched source does not compile.*\n(.|\n)*conflicting types for .security_get_classes/,
    ],
  ];
  for (const [file, code, message] of cases) {
    const fix = corpus.fixes.find((f) => f.file === file);
    assert.ok(fix, `the corpus has no fix of ${file}`);
    await assert.rejects(make(`rf${cases.findIndex((c) => c[0] === file)}`, fix.patch), (e: unknown) => {
      assert.ok(e instanceof UserError, `${file}: ${e instanceof Error ? e.stack : e}`);
      assert.equal(e.code, code, `${file}: ${e.message}`);
      assert.match(e.message, message, file);
      return true;
    });
  }
});
