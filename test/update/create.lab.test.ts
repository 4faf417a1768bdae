// `ksplice create` against the lab's prepared Debian source: the package made for a patch that
// adds a function and a string, what is in its manifest, that the source tree is left exactly as
// it was, and the clear refusals (initialised data, comment-only, a patch that does not apply,
// an unprepared tree). Applying packages to the running kernel is test/kernel/apply.lab.test.ts.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { UserError } from "../../src/errors.js";
import { buildCore } from "../../src/kbuild/module.js";
import { prepareLab } from "../../src/lab/index.js";
import { openPackage } from "../../src/package/package.js";
import { createUpdate } from "../../src/update/create.js";
import { tempDir } from "../helpers/compile.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url));
const FIX = join(REPO, "test", "update", "fixtures");
const TIMEOUT = 20 * 60_000;

function create(src: string, patches: string[], extra: Partial<Parameters<typeof createUpdate>[0]> = {}) {
  return createUpdate({
    src,
    patches,
    applied: [],
    outputDir: tempDir(),
    log: () => {},
    signal: new AbortController().signal,
    ...extra,
  });
}

/** treeDigest hashes names, sizes and mtimes of a directory's files (the tree must not change). */
function treeDigest(dir: string): string {
  const h = createHash("sha256");
  const walk = (d: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      const st = statSync(p);
      h.update(`${p}:${st.size}:${st.mtimeMs}\n`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return h.digest("hex");
}

test("create packages a patch that adds a function and a string, and leaves the tree as it was", {
  timeout: TIMEOUT,
}, async () => {
  const lab = await prepareLab();
  const watched = join(lab.sourceDir, "fs", "proc");
  const before = treeDigest(watched);
  const source = readFileSync(join(watched, "version.c"));
  const res = await create(lab.sourceDir, [join(REPO, "examples", "proc-version-banner.patch")], {
    id: "vers1234",
    coreModule: (headers) => buildCore(headers, join(tempDir(), "core")),
  });
  assert.equal(treeDigest(watched), before, "fs/proc of the source tree changed");
  assert.deepEqual(readFileSync(join(watched, "version.c")), source);
  assert.match(res.path, /ksplice-vers1234\.tar\.gz$/);

  const pkg = await openPackage(res.path);
  try {
    const m = pkg.manifest;
    assert.equal(m.id, "vers1234");
    assert.equal(m.kernel.release, "6.1.0-50-cloud-amd64");
    assert.match(m.kernel.buildId ?? "", /^[0-9a-f]{40}$/);
    assert.equal(m.description, "proc: say in /proc/version that the kernel was patched live");
    assert.deepEqual(
      m.targets.map((t) => [t.object, t.name, t.replacement.section]),
      [["fs/proc/version.o", "version_proc_show", ".text.version_proc_show"]],
    );
    assert.deepEqual(
      m.newFunctions.map((f) => f.name),
      ["ksplice_demo_note"],
    );
    assert.match(m.patches[0].text, /ksplice_demo_note/);
    // The new code's one non-exported reference is resolved at apply time, not in the .ko.
    assert.deepEqual(
      m.relocations.map((r) => [r.symbol, r.type, r.local]),
      [["linux_proc_banner", "R_X86_64_32S", false]],
    );
    const files = m.files.map((f) => f.path).sort();
    assert.deepEqual(files, [
      "ksplice.ko",
      "ksplice_vers1234.ko",
      "patches/00-proc-version-banner.patch",
      "pre/fs/proc/version.o",
    ]);
    // The module carries the new string and code, built against the kernel's headers.
    const ko = readFileSync(join(pkg.dir, "ksplice_vers1234.ko"));
    assert.ok(ko.includes("ksplice: this kernel was patched live\n"));
    assert.ok(ko.includes("vermagic=6.1.0-50-cloud-amd64 SMP preempt mod_unload modversions"));
  } finally {
    pkg.close();
  }
});

test("create sees a change to an inlined static helper as a change to its caller", {
  timeout: TIMEOUT,
}, async () => {
  const lab = await prepareLab();
  const res = await create(lab.sourceDir, [join(FIX, "meminfo-inlined-helper.patch")]);
  assert.deepEqual(
    res.manifest.targets.map((t) => t.name),
    ["meminfo_proc_show"],
  );
  assert.deepEqual(res.manifest.newFunctions, []);
});

test("create refuses what replacing code cannot do, naming the cause", { timeout: TIMEOUT }, async () => {
  const lab = await prepareLab();
  const refused = async (patches: string[], code: string, re: RegExp, src = lab.sourceDir) => {
    await assert.rejects(create(src, patches), (e: unknown) => {
      assert.ok(e instanceof UserError, String(e));
      assert.equal(e.code, code, e.message);
      assert.match(e.message, re);
      return true;
    });
  };
  await refused(
    [join(FIX, "pipe-max-size-data.patch")],
    "unsupported_change",
    /fs\/pipe\.o: pipe_max_size: changes initialised data/,
  );
  await refused(
    [join(FIX, "comment-only.patch")],
    "no_change",
    /changes nothing in the running kernel's code \(fs\/proc\/cmdline\.o\): it changes only comments or whitespace/,
  );
  const bad = join(tempDir(), "stale.patch");
  writeFileSync(bad, readFileSync(join(FIX, "cmdline-b.patch"))); // needs cmdline-a first
  await refused([bad], "patch_failed", /patch stale\.patch does not apply/);
  await refused(
    [join(FIX, "cmdline-a.patch")],
    "bad_tree",
    /not a kernel source tree|not configured|has not run/,
    tempDir(),
  );
});

test("create replaces a SYSCALL_DEFINE0 body once, whatever its three names", {
  timeout: TIMEOUT,
}, async () => {
  const lab = await prepareLab();
  const res = await create(lab.sourceDir, [join(FIX, "getppid-nop.patch")]);
  assert.deepEqual(
    res.manifest.targets.map((t) => t.name),
    ["__ia32_sys_getppid"],
  );
});
