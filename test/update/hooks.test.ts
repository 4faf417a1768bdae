// Hooks in `create`: pre and post builds of a small C file that uses <linux/ksplice-patch.h>
// (the header create installs), diffed and classified as create does. New hook functions
// become hooks of the plan and are copied into the module; their pointers are not; a hook that
// is not a new function, or of an unknown kind, is refused with its name.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { diffObjects } from "../../src/diff/index.js";
import { ElfFile } from "../../src/elf/reader.js";
import { repoKmodDir } from "../../src/kbuild/module.js";
import { HOOK_KINDS } from "../../src/package/manifest.js";
import { classify } from "../../src/update/classify.js";
import { extractObject } from "../../src/update/extract.js";
import { CORE_EXPORTS, INT_HOOKS, kspliceHeader } from "../../src/update/hooks.js";
import { compileC, FIXTURE_CFLAGS, tempDir } from "../helpers/compile.js";

/** plan builds pre and post against the real header (with a stand-in linux/compiler.h). */
function plan(pre: string, post: string) {
  const dir = tempDir();
  mkdirSync(join(dir, "include", "linux"), { recursive: true });
  writeFileSync(join(dir, "include", "linux", "ksplice-patch.h"), kspliceHeader());
  writeFileSync(
    join(dir, "include", "linux", "compiler.h"),
    `#define __used __attribute__((__used__))
#define __section(s) __attribute__((__section__(s)))
#define __aligned(n) __attribute__((__aligned__(n)))
`,
  );
  writeFileSync(
    join(dir, "include", "linux", "types.h"),
    "typedef unsigned long size_t;\ntypedef unsigned int gfp_t;\n",
  );
  const flags = [...FIXTURE_CFLAGS, `-I${join(dir, "include")}`];
  const load = (p: string) => ElfFile.parse(readFileSync(p), p);
  const a = load(compileC(dir, "pre", pre, flags));
  const b = load(compileC(dir, "post", post, flags));
  return classify("fs/demo.o", diffObjects(a, b));
}

const BASE = `
#include <linux/ksplice-patch.h>
int limit = 40;
int read_limit(void) { return limit; }
`;

test("new hook functions become hooks and are copied; their pointers are not", () => {
  const post = `${BASE}
static int saved;
static void raise_limit(void) { saved = limit; limit = 80; }
ksplice_apply(raise_limit);
static void restore_limit(void) { limit = saved; }
ksplice_reverse(restore_limit);
static int limit_ok(void) { return limit < 100 ? 0 : -1; }
ksplice_check_apply(limit_ok);
`;
  const p = plan(BASE, post);
  assert.deepEqual(p.refusals, []);
  assert.deepEqual(p.hooks.map((h) => [h.kind, h.fn.name]).sort(), [
    ["apply", "raise_limit"],
    ["check_apply", "limit_ok"],
    ["reverse", "restore_limit"],
  ]);
  assert.deepEqual(
    p.addedData.map((u) => u.name),
    ["saved"],
  );
  const ext = extractObject({
    object: p.object,
    post: p.diff.post,
    replaced: [],
    added: p.added,
    addedData: p.addedData,
    preNameOf: (u) => p.diff.pairing.partner.get(u)?.name,
    exported: () => false,
    updateGlobals: new Set(),
    usedNames: new Set(),
  });
  assert.deepEqual(ext.refusals, []);
  assert.deepEqual(ext.functions.map((f) => f.name).sort(), ["limit_ok", "raise_limit", "restore_limit"]);
  const out = ElfFile.parse(ext.bytes, "extracted");
  assert.ok(!out.sections.some((s) => s.name.startsWith(".ksplice_hook")), "hook pointers were copied");
  // limit stays in the kernel: the hooks' references to it are resolved at apply time.
  assert.ok(ext.relocs.some((r) => r.symbol === "limit" && r.section === ".text.raise_limit"));
});

test("a hook that is not a new function of the patch is refused, naming it", () => {
  const pre2 = `${BASE}\nvoid touch(void) { limit++; }\n`;
  const post2 = `${pre2}ksplice_post_apply(touch);\n`;
  const r = plan(pre2, post2).refusals;
  assert.equal(r.length, 1);
  assert.equal(r[0].symbol, "touch");
  assert.match(r[0].reason, /is a post_apply hook but not a new function of the patch/);
});

test("a hook section of an unknown kind is refused", () => {
  const post = `${BASE}
static void later(void) { limit = 1; }
static void (*bogus)(void) __attribute__((used, section(".ksplice_hook.someday"))) = later;
`;
  const r = plan(BASE, post).refusals;
  assert.equal(r.length, 1);
  assert.match(r[0].reason, /unknown hook kind someday \(\.ksplice_hook\.someday\)/);
});

test("the header, the core and the manifest agree: hook kinds, and the functions the core exports", () => {
  const header = kspliceHeader();
  // One macro per hook kind, typed as the core calls it.
  const macros = [...header.matchAll(/^#define ksplice_(\w+)\(fn\) __ksplice_hook\((\w+), (\w+), fn\)$/gm)];
  assert.deepEqual(
    macros.map((m) => m[1]),
    [...HOOK_KINDS],
  );
  for (const m of macros) {
    assert.equal(m[2], m[1]);
    assert.equal(m[3], INT_HOOKS.has(m[1] as never) ? "ksplice_int_hook_t" : "ksplice_void_hook_t", m[1]);
  }
  // Every function the header declares is exported by the core, and is a CORE_EXPORT.
  const declared = [...header.matchAll(/^(?:void|void \*)\s*(ksplice_\w+)\(/gm)].map((m) => m[1]);
  assert.deepEqual(new Set(declared), CORE_EXPORTS);
  const kmod = ["core.c", "shadow.c"].map((f) => readFileSync(join(repoKmodDir(), f), "utf8")).join("\n");
  for (const n of CORE_EXPORTS) assert.match(kmod, new RegExp(`^EXPORT_SYMBOL_GPL\\(${n}\\);$`, "m"), n);
});
