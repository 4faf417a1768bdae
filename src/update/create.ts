// Folder src/update: `create`, from a patch to an update package (classify, hooks, extract,
// the update module). Writes the package through src/package; must not import src/kernel,
// src/runpre, src/live (the running kernel is apply's) or src/lab.
//
// `create`: from a prepared kernel tree and a patch, build an update package. The driver is
// a straight list of named, timed passes:
//   check tree → read patches → pick objects → build pre (kernel flags, for run-pre matching)
//   → build pre and post with one section per symbol (for diffing and extraction) → diff and
//   classify → extract replacement code → build the update module → write the package.
// The source tree is never written: builds happen in an overlay view (kbuild/build.ts).
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { checksum } from "../diff/correlate.js";
import { correlate, diffObjects, ObjectUnits, type Unit } from "../diff/index.js";
import { ElfFile } from "../elf/reader.js";
import { UserError } from "../errors.js";
import { BuildView, SECTION_FLAGS } from "../kbuild/build.js";
import { changedLines, codeLines } from "../kbuild/lines.js";
import { pickObjects } from "../kbuild/objects.js";
import { parsePatch } from "../kbuild/patch.js";
import { type KernelTree, openTree } from "../kbuild/tree.js";
import {
  ID_RULE_TEXT,
  isValidId,
  moduleName,
  newId,
  packageDirName,
  packageFileName,
} from "../package/id.js";
import { type KernelIdentity, kernelIdentity } from "../package/identity.js";
import { FORMAT_VERSION, type Manifest } from "../package/manifest.js";
import { writePackage } from "../package/package.js";
import { classify, type Ignored, type ObjectPlan, type Refusal } from "./classify.js";
import { type Extraction, extractObject } from "./extract.js";
import { CORE_EXPORTS, kspliceHeader } from "./hooks.js";
import { checkLayouts, declaredChanges, type LayoutCheck, touchesBodies } from "./layouts.js";
import { buildUpdateModule, loadExports } from "./module.js";
import { alignToPlain } from "./plain.js";

/** CreateOptions are the inputs of one `create` run. */
export interface CreateOptions {
  src: string;
  patches: string[];
  applied: string[];
  id?: string;
  outputDir: string;
  description?: string;
  headersDir?: string;
  vmlinux?: string;
  /** A prebuilt core module to ship in the package (see kernel/core.ts). */
  coreModule?: (headersDir: string, workDir: string) => Promise<string | undefined>;
  log: (line: string) => void;
  signal: AbortSignal;
}

/** CreateResult is the package made and how long each pass took. */
export interface CreateResult {
  id: string;
  path: string;
  manifest: Manifest;
  timings: Array<{ pass: string; ms: number }>;
}

const sha256 = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");

function findHeaders(tree: KernelTree, given?: string): string {
  const release = tree.release;
  const candidates = given
    ? [given]
    : [
        ...(tree.headersDir ? [tree.headersDir] : []),
        `/usr/src/linux-headers-${release}`,
        `/lib/modules/${release}/build`,
      ];
  for (const c of candidates) {
    const uts = join(c, "include/generated/utsrelease.h");
    if (!existsSync(join(c, "Module.symvers"))) continue;
    const theirs = existsSync(uts) ? /UTS_RELEASE "([^"]+)"/.exec(readFileSync(uts, "utf8"))?.[1] : undefined;
    if (theirs && theirs !== release)
      throw new UserError(`headers in ${c} are for ${theirs}, but the tree is ${release}`, {
        code: "wrong_kernel",
      });
    return resolve(c);
  }
  throw new UserError(
    `no kernel headers with Module.symvers for ${release} (looked in ${candidates.join(", ")}); pass --headers DIR (for a lab tree, run 'ksplice lab prepare' again: it records where they are)`,
    { code: "bad_tree" },
  );
}

/** Patch is one patch file of the run: applied (already live) or fresh (this update's). */
interface Patch {
  file: string;
  name: string;
  text: string;
  applied: boolean;
  files: ReturnType<typeof parsePatch>;
}

/** Extracted is one object's extraction with the manifest targets it replaces. */
type Extracted = { plan: ObjectPlan; ext: ReturnType<typeof extractPlan> };

/** Run is what one create's passes share: its inputs, the tree, the work directory, the build views. */
class Run {
  readonly views: BuildView[] = [];
  constructor(
    readonly timings: CreateResult["timings"],
    readonly o: CreateOptions,
    readonly id: string,
    readonly tree: KernelTree,
    readonly patches: Patch[],
    readonly objects: string[],
    /** The loadable module of each object built as part of one (vmlinux objects are absent). */
    readonly modules: Map<string, string>,
    readonly work: string,
  ) {}

  get fresh(): Patch[] {
    return this.patches.filter((p) => !p.applied);
  }

  /** load parses one built object of a build (pre, prefs, post). */
  load(build: string, obj: string): ElfFile {
    return ElfFile.parse(readFileSync(join(this.work, build, obj)), `${build}/${obj}`);
  }

  /** copyOut copies the objects built in a view to work/DIR. */
  copyOut(v: BuildView, build: string): void {
    for (const obj of this.objects) v.copyOut(obj, join(this.work, build, obj));
  }
}

/** timed runs one pass, logging its name and recording how long it took. */
async function timed<T>(
  timings: CreateResult["timings"],
  log: (l: string) => void,
  name: string,
  fn: () => T | Promise<T>,
): Promise<T> {
  const t0 = performance.now();
  log(`${name}...`);
  try {
    return await fn();
  } finally {
    timings.push({ pass: name, ms: Math.round(performance.now() - t0) });
  }
}

/** Pass: read the patch files (fresh ones and those already applied by earlier updates). */
function readPatches(o: CreateOptions): Patch[] {
  const all = [
    ...o.applied.map((f) => ({ f, applied: true })),
    ...o.patches.map((f) => ({ f, applied: false })),
  ];
  return all.map(({ f, applied }) => {
    let text: string;
    try {
      text = readFileSync(f, "utf8");
    } catch (e) {
      throw new UserError(`cannot read patch ${f}: ${(e as Error).message}`, { code: "bad_patch" });
    }
    return { file: resolve(f), name: basename(f), text, applied, files: parsePatch(text, f) };
  });
}

/** Pass: the first build view, with the applied patches in and the fresh ones checked to apply. */
function openPreView(run: Run): BuildView {
  const v = BuildView.open(run.tree, run.o.log);
  run.views.push(v);
  // Patches with hooks include it; nothing in the kernel does, so the pre builds are unchanged.
  v.writeFile("include/linux/ksplice-patch.h", kspliceHeader());
  for (const p of run.patches.filter((x) => x.applied)) v.applyPatch(p.file, p.name);
  for (const p of run.fresh) v.checkPatch(p.file, p.name); // refuse a patch that does not apply before building
  return v;
}

/** Pass: the pre objects as the kernel's own build makes them (what run-pre matches). */
async function buildPre(run: Run, pre: BuildView): Promise<void> {
  await pre.make(run.objects, "", run.o.signal);
  run.copyOut(pre, "pre");
}

/** Pass: the diffed builds, unpatched and patched, at once in two views, with kbuild's commands. */
async function buildDiffed(run: Run, pre: BuildView): Promise<void> {
  const post = BuildView.open(run.tree, run.o.log, pre);
  run.views.push(post);
  for (const p of run.fresh) post.applyPatch(p.file, p.name);
  for (const v of [pre, post]) v.overrideJumpLabels();
  const { objects, o } = run;
  await Promise.all([
    pre.compile(objects, SECTION_FLAGS, o.signal, 1).then(() => run.copyOut(pre, "prefs")),
    post
      .compile(objects, SECTION_FLAGS, o.signal, 1)
      .catch((e) => {
        // The same objects built without the patch: the patched source is at fault.
        if (e instanceof UserError && e.code === "build_failed")
          throw new UserError(
            `the patched source does not compile. A fix that also changes a header or another file must carry that change too.\n${e.message}`,
            { code: "does_not_compile" },
          );
        throw e;
      })
      .then(() => run.copyOut(post, "post")),
  ]);
}

/**
 * Pass: the layouts of the structures whose definitions the patch changes, pre against post
 * (update/layouts.ts); only when it changes a line inside one, as written.
 */
async function checkLayoutsOf(run: Run): Promise<LayoutCheck> {
  const [pre, post] = run.views;
  const read = (v: BuildView) => (rel: string) => (v.exists(rel) ? v.read(rel) : undefined);
  if (!touchesBodies(run.fresh, { pre: read(pre), post: read(post) })) return { refusals: [], declared: [] };
  const check = await checkLayouts({
    objects: run.objects,
    pre,
    post,
    declared: declaredChanges(run.objects.map((o) => run.load("post", o))),
    work: run.work,
    signal: run.o.signal,
  });
  for (const d of check.declared)
    run.o.log(
      `${d.object}: ${d.key}: its layout changes (${d.change}); the patch says no old instance reaches the new code`,
    );
  return check;
}

/** Pass: diff and classify each object; the objects whose change reaches running code. */
async function diffAndClassify(
  run: Run,
  layouts: LayoutCheck,
): Promise<{ useful: ObjectPlan[]; ignored: Ignored[] }> {
  const memoryHotplug = run.tree.config.get("CONFIG_MEMORY_HOTPLUG") === "y";
  const plans = run.objects.map((obj) =>
    classify(obj, diffObjects(run.load("prefs", obj), run.load("post", obj)), {
      memoryHotplug,
      module: run.modules.get(obj),
    }),
  );
  const refusals = [...layouts.refusals, ...plans.flatMap((p) => p.refusals)];
  if (refusals.length) throw refusalError(refusals);
  const ignored = plans.flatMap((p) => p.ignored);
  const useful = plans.filter((p) => p.replaced.length || p.added.length || p.addedData.length);
  if (useful.length === 0) {
    const why = await whyNoChange(run.views[0], run.views[1], run.objects, run.fresh, ignored, run.o.signal);
    throw new UserError(
      `the patch changes nothing in the running kernel's code (${run.objects.join(", ")}): ${why}; nothing to do`,
      { code: "no_change" },
    );
  }
  for (const i of ignored) run.o.log(`left out: ${i.object}: ${i.symbol}: ${i.reason}`);
  for (const p of plans) for (const n of p.notes) run.o.log(`${p.object}: ${n}`);
  return { useful, ignored };
}

/** Pass: extract each object's replacement code; refuse what extraction cannot carry. */
function extractAll(run: Run, useful: ObjectPlan[], exports: Map<string, string>): Extracted[] {
  const usedNames = new Set<string>();
  // Globals new in one object may be called from another object of the update.
  const updateGlobals = new Set(
    useful.flatMap((p) => [...p.added, ...p.addedData].filter((u) => u.global).map((u) => u.name)),
  );
  const extracted = useful.map((plan) => ({
    plan,
    ext: extractPlan(plan, exports, updateGlobals, usedNames, run.load("pre", plan.object)),
  }));
  const refusals = extracted.flatMap((e) => e.ext.extraction.refusals);
  if (refusals.length) throw refusalError(refusals);
  for (const e of extracted) for (const n of e.ext.notes) run.o.log(`${e.plan.object}: ${n}`);
  // After extraction, whose refusals say more (new entries of a kernel table, say).
  if (useful.every((p) => p.replaced.length === 0 && p.hooks.length === 0)) {
    const added = useful.flatMap((p) =>
      [...p.added, ...p.addedData].map((u) => `${u.name} (${u.section.name})`),
    );
    throw new UserError(
      `the patch only adds code or data that nothing in the running kernel uses: ${added.join(", ")}; nothing to replace`,
      { code: "no_change" },
    );
  }
  return extracted;
}

/** Pass: link the extracted objects into the update module against the kernel's headers. */
function buildModule(
  run: Run,
  extracted: Extracted[],
  opts: { description: string; headersDir: string; exports: Map<string, string>; core?: string },
): Promise<string> {
  const { description, headersDir, exports, core } = opts;
  const imports = extracted.flatMap((e) => e.ext.extraction.imports);
  const namespaces = new Set(imports.map((n) => exports.get(n) ?? ""));
  const fromCore = imports.filter((n) => CORE_EXPORTS.has(n));
  if (fromCore.length && !core)
    throw new Error(
      `the update uses ${fromCore.join(", ")} of the core, but this create builds no core module`,
    );
  return buildUpdateModule({
    id: run.id,
    description,
    headersDir,
    // The core's exports (its Module.symvers) are known to modpost, with their versions.
    makeArgs: [
      `CC=${run.tree.cc}`,
      ...(fromCore.length && core ? [`KBUILD_EXTRA_SYMBOLS=${join(dirname(core), "Module.symvers")}`] : []),
    ],
    dir: join(run.work, "module"),
    objects: extracted.map((e) => e.ext.extraction.bytes),
    namespaces: [...namespaces].filter(Boolean).sort(),
    signal: run.o.signal,
  });
}

/** manifestFor describes the package's contents; `files` are already in it. */
function manifestFor(
  run: Run,
  extracted: Extracted[],
  meta: { description: string; identity: KernelIdentity; ignored: Ignored[]; core: boolean; modFile: string },
  files: Array<{ path: string; bytes: Uint8Array }>,
): Manifest {
  const { id, patches } = run;
  const each = <T>(f: (e: Extracted) => T[]) => extracted.flatMap(f);
  const inModule = (e: Extracted) => {
    const module = run.modules.get(e.plan.object);
    return module ? { module } : {};
  };
  return {
    format: "ksplice-update",
    formatVersion: FORMAT_VERSION,
    id,
    description: meta.description,
    createdAt: new Date().toISOString(),
    tool: "ksplice 0.1.0",
    kernel: meta.identity,
    patches: run.fresh.map((p) => ({ name: p.name, sha256: sha256(p.text), text: p.text })),
    applied: patches.filter((p) => p.applied).map((p) => ({ name: p.name, sha256: sha256(p.text) })),
    module: { name: moduleName(id), file: meta.modFile },
    core: meta.core ? { file: "ksplice.ko" } : null,
    objects: extracted.map((e) => ({ path: e.plan.object, pre: `pre/${e.plan.object}`, ...inModule(e) })),
    targets: each((e) => e.ext.targets.map((t) => ({ ...t, ...inModule(e) }))),
    newFunctions: each((e) =>
      e.ext.extraction.functions
        .filter((f) => !f.replaces)
        .map((f) => ({ name: f.name, object: e.plan.object, section: f.section, size: f.size })),
    ),
    newData: each((e) => e.ext.extraction.data.map((d) => ({ ...d, object: e.plan.object }))),
    relocations: each((e) => e.ext.extraction.relocs),
    ignored: meta.ignored,
    hooks: each((e) =>
      e.plan.hooks.map((h) => {
        const f = e.ext.extraction.functions.find((x) => x.name === h.fn.name)!;
        return { kind: h.kind, symbol: h.fn.name, section: f.section, offset: h.fn.start };
      }),
    ),
    files: files.map((f) => ({ path: f.path, sha256: sha256(f.bytes), size: f.bytes.length })),
  };
}

/** Pass: write ksplice-ID.tar.gz: the update module, the core, the pre objects, the patches, the manifest. */
async function writeUpdatePackage(
  run: Run,
  extracted: Extracted[],
  built: { ko: string; core?: string },
  meta: { description: string; identity: KernelIdentity; ignored: Ignored[] },
): Promise<{ manifest: Manifest; path: string }> {
  const modFile = `${moduleName(run.id)}.ko`;
  const files: Array<{ path: string; bytes: Uint8Array }> = [
    { path: modFile, bytes: readFileSync(built.ko) },
  ];
  if (built.core) files.push({ path: "ksplice.ko", bytes: readFileSync(built.core) });
  for (const e of extracted)
    files.push({ path: `pre/${e.plan.object}`, bytes: readFileSync(join(run.work, "pre", e.plan.object)) });
  for (const [i, p] of run.patches.entries())
    files.push({ path: `patches/${String(i).padStart(2, "0")}-${p.name}`, bytes: Buffer.from(p.text) });
  const manifest = manifestFor(run, extracted, { ...meta, core: built.core !== undefined, modFile }, files);
  const path = join(resolve(run.o.outputDir), packageFileName(run.id));
  mkdirSync(dirname(path), { recursive: true });
  await writePackage(path, packageDirName(run.id), manifest, files);
  return { manifest, path };
}

/** createUpdate runs the whole pipeline, pass by pass, and returns the package made. */
export async function createUpdate(o: CreateOptions): Promise<CreateResult> {
  const timings: CreateResult["timings"] = [];
  const pass = <T>(name: string, fn: () => T | Promise<T>) => timed(timings, o.log, name, fn);
  const id = o.id ?? newId();
  if (!isValidId(id)) throw new UserError(`update id '${id}' must be ${ID_RULE_TEXT}`, { code: "usage" });

  const tree = await pass("check tree", () => openTree(resolve(o.src)));
  const headersDir = findHeaders(tree, o.headersDir);
  const identity = kernelIdentity(tree.release, o.vmlinux ?? tree.vmlinux);
  if (identity.buildId === null)
    o.log(
      `no vmlinux with a build id for ${tree.release}: apply will check the release only, not the build (pass --vmlinux)`,
    );
  const patches = await pass("read patches", () => readPatches(o));
  const changed = patches.filter((p) => !p.applied).flatMap((p) => p.files.map((x) => x.path));
  const picked = await pass("pick objects", () => pickObjects(tree.dir, tree.config, changed));
  const objects = picked.map((p) => p.object);
  const modules = new Map(picked.flatMap((p) => (p.module ? [[p.object, p.module] as const] : [])));
  for (const [obj, mod] of modules) o.log(`${obj} is part of module ${mod}`);

  const work = mkdtempSync(join(tmpdir(), `ksplice-create-${id}-`));
  const run = new Run(timings, o, id, tree, patches, objects, modules, work);
  try {
    const pre = await pass("open build view", () => openPreView(run));
    await pass("build pre", () => buildPre(run, pre));
    await pass("build pre and post (sections)", () => buildDiffed(run, pre));
    const layouts = await pass("layouts", () => checkLayoutsOf(run));
    const { useful, ignored } = await pass("diff", () => diffAndClassify(run, layouts));
    for (const v of run.views.splice(0)) v.close();
    // What the update module may import: the kernel's exports, and the core's (shadows).
    const exports = loadExports(join(headersDir, "Module.symvers"));
    for (const n of CORE_EXPORTS) exports.set(n, "");
    const extracted = await pass("extract", () => extractAll(run, useful, exports));
    const description = o.description ?? describePatches(run.fresh);
    const core = o.coreModule
      ? await pass("build core module", () => o.coreModule!(headersDir, join(work, "core")))
      : undefined;
    const ko = await pass("build module", () =>
      buildModule(run, extracted, { description, headersDir, exports, core }),
    );
    const out = await pass("package", () =>
      writeUpdatePackage(run, extracted, { ko, core }, { description, identity, ignored }),
    );
    return { id, path: out.path, manifest: out.manifest, timings };
  } finally {
    for (const v of run.views) v.close();
    if (!process.env.KSPLICE_KEEP_WORK) rmSync(work, { recursive: true, force: true });
  }
}

/** whyNoChange says why a patch that applies and compiles changes no code of the running kernel. */
async function whyNoChange(
  pre: BuildView,
  post: BuildView,
  objects: string[],
  patches: Array<{ text: string }>,
  ignored: Ignored[],
  signal: AbortSignal,
): Promise<string> {
  if (ignored.length)
    return `its only changes cannot reach the running kernel: ${ignored.map((i) => `${i.symbol} ${i.reason}`).join("; ")}`;
  const squash = (s: string) => s.replace(/\s+/g, " ").trim();
  for (const obj of objects)
    if (squash(await pre.preprocess(obj, signal)) !== squash(await post.preprocess(obj, signal)))
      return "its changes compile to the same code (a type spelling, an annotation, or code the compiler leaves out)";
  // The compiler saw the same text: were the changed lines code at all?
  for (const p of patches)
    for (const [file, lines] of changedLines(p.text)) {
      const code = (v: BuildView, at: number[]) =>
        v.exists(file) && at.some((l) => codeLines(v.read(file)).has(l));
      if (code(pre, lines.removed) || code(post, lines.added))
        return "the code it changes never reaches the compiler in this kernel's configuration (#if/#ifdef blocks that are off, or macros nothing uses)";
    }
  return "it changes only comments or whitespace";
}

function refusalError(refusals: Refusal[]): UserError {
  const lines = refusals.map((r) => `  ${r.object}: ${r.symbol}: ${r.reason}`);
  return new UserError(`the patch makes changes that replacing code cannot apply:\n${lines.join("\n")}`, {
    code: "unsupported_change",
  });
}

function describePatches(ps: Array<{ name: string; text: string }>): string {
  const subjects = ps.map((p) => /^Subject:\s*(?:\[[^\]]*\]\s*)?(.+)$/m.exec(p.text)?.[1]?.trim() ?? p.name);
  return subjects.join("; ");
}

/** extractPlan extracts one object's replacement code and describes its targets. */
function extractPlan(
  plan: ObjectPlan,
  exports: Map<string, string>,
  updateGlobals: Set<string>,
  usedNames: Set<string>,
  prePlain: ElfFile,
) {
  // Pair the diffed pre build with the plain one: the plain one is what runs in the kernel.
  // (Against the diffed pre's own units: a pairing maps the Unit objects it was made from.)
  const plainPairing = correlate(new ObjectUnits(prePlain), plan.diff.pre, { sameSource: true });
  const plainOf = (u: Unit) => plainPairing.partner.get(u) ?? u;
  const preNameOf = (u: Unit) => {
    const pre = plan.diff.pairing.partner.get(u);
    return pre ? plainOf(pre).name : undefined;
  };
  const aligned = alignToPlain(plan, plainPairing);
  const extraction: Extraction = extractObject({
    object: plan.object,
    post: plan.diff.post,
    replaced: aligned.replaced.map((r) => ({ post: r.post, preName: plainOf(r.pre).name })),
    added: aligned.added,
    addedData: aligned.addedData,
    preNameOf,
    pre: plan.diff.pre,
    exported: (n) => exports.has(n),
    updateGlobals,
    usedNames,
  });
  extraction.refusals.push(...aligned.refusals);
  const targets = aligned.replaced.map((r) => {
    const plain = plainOf(r.pre);
    const f = extraction.functions.find((x) => x.name === r.post.name)!;
    return {
      name: plain.name,
      object: plan.object,
      size: plain.size,
      preChecksum: checksum(plain),
      replacement: { name: f.name, section: f.section, size: f.size },
    };
  });
  return { extraction, targets, notes: aligned.notes };
}
