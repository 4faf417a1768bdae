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
import { diffObjects, type Unit } from "../diff/index.js";
import { ElfFile } from "../elf/reader.js";
import { UserError } from "../errors.js";
import { BuildView, SECTION_FLAGS } from "../kbuild/build.js";
import { changedLines, codeLines } from "../kbuild/lines.js";
import { dependentsFromCmdFiles, ObjectMap, objectFor, sourcesIncluding } from "../kbuild/objects.js";
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
import { kernelIdentity } from "../package/identity.js";
import { FORMAT_VERSION, type Manifest } from "../package/manifest.js";
import { writePackage } from "../package/package.js";
import { classify, type Ignored, type ObjectPlan, type Refusal } from "./classify.js";
import { type Extraction, extractObject } from "./extract.js";
import { KSPLICE_PATCH_H } from "./hooks.js";
import { buildUpdateModule, loadExports } from "./module.js";

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
    `no kernel headers with Module.symvers for ${release} (looked in ${candidates.join(", ")}); pass --headers DIR`,
    { code: "bad_tree" },
  );
}

/** createUpdate runs the whole pipeline and returns the package path. */
export async function createUpdate(o: CreateOptions): Promise<CreateResult> {
  const timings: CreateResult["timings"] = [];
  const pass = async <T>(name: string, fn: () => T | Promise<T>): Promise<T> => {
    const t0 = performance.now();
    o.log(`${name}...`);
    try {
      return await fn();
    } finally {
      timings.push({ pass: name, ms: Math.round(performance.now() - t0) });
    }
  };
  const id = o.id ?? newId();
  if (!isValidId(id))
    throw new UserError(`update id '${id}' must be ${ID_RULE_TEXT}`, {
      code: "usage",
    });

  const tree = await pass("check tree", () => openTree(resolve(o.src)));
  const headersDir = findHeaders(tree, o.headersDir);
  const identity = kernelIdentity(tree.release, o.vmlinux ?? tree.vmlinux);

  const patches = await pass("read patches", () =>
    [...o.applied.map((f) => ({ f, applied: true })), ...o.patches.map((f) => ({ f, applied: false }))].map(
      ({ f, applied }) => {
        let text: string;
        try {
          text = readFileSync(f, "utf8");
        } catch (e) {
          throw new UserError(`cannot read patch ${f}: ${(e as Error).message}`, { code: "bad_patch" });
        }
        return { file: resolve(f), name: basename(f), text, applied, files: parsePatch(text, f) };
      },
    ),
  );

  const objects = await pass("pick objects", () =>
    pickObjects(
      tree.dir,
      tree.config,
      patches.filter((p) => !p.applied).flatMap((p) => p.files.map((x) => x.path)),
    ),
  );

  const work = mkdtempSync(join(tmpdir(), `ksplice-create-${id}-`));
  const views: BuildView[] = [];
  try {
    const fresh = patches.filter((x) => !x.applied);
    const pre = await pass("open build view", () => {
      const v = BuildView.open(tree, o.log);
      views.push(v);
      // Patches with hooks include it; nothing in the kernel does, so the pre builds are unchanged.
      v.writeFile("include/linux/ksplice-patch.h", KSPLICE_PATCH_H);
      for (const p of patches.filter((x) => x.applied)) v.applyPatch(p.file, p.name);
      for (const p of fresh) v.checkPatch(p.file, p.name); // refuse a patch that does not apply before building
      return v;
    });
    const copy = (v: BuildView, dir: string) => {
      for (const obj of objects) v.copyOut(obj, join(work, dir, obj));
    };
    await pass("build pre", async () => {
      await pre.make(objects, "", o.signal);
      copy(pre, "pre");
    });
    // The diffed builds, unpatched and patched, at once in two views, with kbuild's commands.
    await pass("build pre and post (sections)", async () => {
      const post = BuildView.open(tree, o.log, pre);
      views.push(post);
      for (const p of fresh) post.applyPatch(p.file, p.name);
      for (const v of [pre, post]) v.overrideJumpLabels();
      await Promise.all([
        pre.compile(objects, SECTION_FLAGS, o.signal, 1).then(() => copy(pre, "prefs")),
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
          .then(() => copy(post, "post")),
      ]);
    });

    const load = (dir: string, obj: string) => {
      const path = join(work, dir, obj);
      return ElfFile.parse(readFileSync(path), `${dir}/${obj}`);
    };
    const plans = await pass("diff", () =>
      objects.map((obj) =>
        classify(obj, diffObjects(load("prefs", obj), load("post", obj)), {
          memoryHotplug: tree.config.get("CONFIG_MEMORY_HOTPLUG") === "y",
        }),
      ),
    );
    const refusals: Refusal[] = plans.flatMap((p) => p.refusals);
    if (refusals.length) throw refusalError(refusals);
    const ignored = plans.flatMap((p) => p.ignored);
    const useful = plans.filter((p) => p.replaced.length || p.added.length || p.addedData.length);
    if (useful.length === 0) {
      const why = await whyNoChange(views[0], views[1], objects, fresh, ignored, o.signal);
      throw new UserError(
        `the patch changes nothing in the running kernel's code (${objects.join(", ")}): ${why}; nothing to do`,
        { code: "no_change" },
      );
    }
    for (const v of views.splice(0)) v.close();
    for (const i of ignored) o.log(`left out: ${i.object}: ${i.symbol}: ${i.reason}`);
    for (const p of plans) for (const n of p.notes) o.log(`${p.object}: ${n}`);
    const exports = loadExports(join(headersDir, "Module.symvers"));
    const usedNames = new Set<string>();
    // Globals new in one object may be called from another object of the update.
    const updateGlobals = new Set(
      useful.flatMap((p) => [...p.added, ...p.addedData].filter((u) => u.global).map((u) => u.name)),
    );
    const extracted = await pass("extract", () =>
      useful.map((plan) => ({
        plan,
        ext: extractPlan(plan, exports, updateGlobals, usedNames, load("pre", plan.object)),
      })),
    );
    const extractRefusals = extracted.flatMap((e) => e.ext.extraction.refusals);
    if (extractRefusals.length) throw refusalError(extractRefusals);
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

    const description = o.description ?? describePatches(patches.filter((p) => !p.applied));
    const pkgDir = join(work, packageDirName(id));
    mkdirSync(pkgDir);
    const ko = await pass("build module", () =>
      buildUpdateModule({
        id,
        description,
        headersDir,
        makeArgs: [`CC=${tree.cc}`],
        dir: join(work, "module"),
        objects: extracted.map((e) => e.ext.extraction.bytes),
        namespaces: [
          ...new Set(extracted.flatMap((e) => e.ext.extraction.imports.map((n) => exports.get(n) ?? ""))),
        ]
          .filter(Boolean)
          .sort(),
        signal: o.signal,
      }),
    );
    const core = o.coreModule
      ? await pass("build core module", () => o.coreModule!(headersDir, join(work, "core")))
      : undefined;

    const manifest = await pass("package", async () => {
      const files: Array<{ path: string; bytes: Uint8Array }> = [];
      const modFile = `${moduleName(id)}.ko`;
      files.push({ path: modFile, bytes: readFileSync(ko) });
      if (core) files.push({ path: "ksplice.ko", bytes: readFileSync(core) });
      for (const e of extracted)
        files.push({ path: `pre/${e.plan.object}`, bytes: readFileSync(join(work, "pre", e.plan.object)) });
      for (const [i, p] of patches.entries())
        files.push({ path: `patches/${String(i).padStart(2, "0")}-${p.name}`, bytes: Buffer.from(p.text) });
      const m: Manifest = {
        format: "ksplice-update",
        formatVersion: FORMAT_VERSION,
        id,
        description,
        createdAt: new Date().toISOString(),
        tool: "ksplice 0.1.0",
        kernel: identity,
        patches: patches
          .filter((p) => !p.applied)
          .map((p) => ({ name: p.name, sha256: sha256(p.text), text: p.text })),
        applied: patches.filter((p) => p.applied).map((p) => ({ name: p.name, sha256: sha256(p.text) })),
        module: { name: moduleName(id), file: modFile },
        core: core ? { file: "ksplice.ko" } : null,
        objects: extracted.map((e) => ({ path: e.plan.object, pre: `pre/${e.plan.object}` })),
        targets: extracted.flatMap((e) => e.ext.targets),
        newFunctions: extracted.flatMap((e) =>
          e.ext.extraction.functions
            .filter((f) => !f.replaces)
            .map((f) => ({ name: f.name, object: e.plan.object, section: f.section, size: f.size })),
        ),
        newData: extracted.flatMap((e) =>
          e.ext.extraction.data.map((d) => ({ ...d, object: e.plan.object })),
        ),
        relocations: extracted.flatMap((e) => e.ext.extraction.relocs),
        ignored,
        hooks: extracted.flatMap((e) =>
          e.plan.hooks.map((h) => {
            const f = e.ext.extraction.functions.find((x) => x.name === h.fn.name)!;
            return { kind: h.kind, symbol: h.fn.name, section: f.section, offset: h.fn.start };
          }),
        ),
        files: files.map((f) => ({ path: f.path, sha256: sha256(f.bytes), size: f.bytes.length })),
      };
      const out = join(resolve(o.outputDir), packageFileName(id));
      mkdirSync(dirname(out), { recursive: true });
      await writePackage(out, packageDirName(id), m, files);
      return { m, out };
    });
    return { id, path: manifest.out, manifest: manifest.m, timings };
  } finally {
    for (const v of views) v.close();
    rmSync(work, { recursive: true, force: true });
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

/** pickObjects maps changed files to the built-in objects to compile, refusing what cannot be patched. */
export function pickObjects(
  root: string,
  config: import("../kbuild/tree.js").KernelConfig,
  files: string[],
): string[] {
  const map = new ObjectMap(root, config);
  const objects = new Set<string>();
  const ignored: string[] = [];
  for (const f of files) {
    if (f.endsWith(".c")) {
      const objs = map.objectsOf(f);
      for (const o of objs) if (o.state === "y") objects.add(o.object);
      if (objs.some((o) => o.state === "m") && !objs.some((o) => o.state === "y"))
        throw new UserError(
          `${f} is built as a loadable module (=m in .config); patching modules is not supported yet`,
          { code: "module_patch" },
        );
      if (!objs.some((o) => o.state === "y")) ignored.push(f);
    } else if (f.endsWith(".h")) {
      const deps =
        dependentsFromCmdFiles(root, f) ??
        sourcesIncluding(root, f)
          .filter((c) => map.sourceState(c) === "y")
          .map(objectFor);
      for (const d of deps) objects.add(d);
      if (deps.length === 0) ignored.push(f);
    } else if (/\.(S|s)$/.test(f)) {
      const st = map.sourceState(f.replace(/\.[Ss]$/, ".c"));
      if (
        map.objectState(dirname(f) === "." ? "" : dirname(f), basename(f).replace(/\.[Ss]$/, ".o")) !== "n" ||
        st !== "n"
      )
        throw new UserError(`${f} is an assembly file: changes to assembly code are not supported`, {
          code: "unsupported_change",
        });
      ignored.push(f);
    } else if (/(^|\/)(Makefile|Kbuild|Kconfig[^/]*)$/.test(f)) {
      throw new UserError(`${f} changes the build configuration: not supported in a live update`, {
        code: "unsupported_change",
      });
    } else ignored.push(f);
  }
  if (objects.size === 0)
    throw new UserError(
      `the patch changes nothing that is compiled into this kernel (${ignored.join(", ")})`,
      { code: "not_compiled" },
    );
  if (objects.size > 64)
    throw new UserError(
      `the patch affects ${objects.size} objects (a widely included header?): too many for one update`,
      { code: "unsupported_change" },
    );
  return [...objects].sort();
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
  const plainPairing = diffObjects(prePlain, plan.diff.pre.elf).pairing;
  const plainOf = (u: Unit) => plainPairing.partner.get(u) ?? u;
  const preNameOf = (u: Unit) => {
    const pre = plan.diff.pairing.partner.get(u);
    return pre ? plainOf(pre).name : undefined;
  };
  const extraction: Extraction = extractObject({
    object: plan.object,
    post: plan.diff.post,
    replaced: plan.replaced.map((r) => ({ post: r.post, preName: plainOf(r.pre).name })),
    added: plan.added,
    addedData: plan.addedData,
    preNameOf,
    pre: plan.diff.pre,
    exported: (n) => exports.has(n),
    updateGlobals,
    usedNames,
  });
  const targets = plan.replaced.map((r) => {
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
  return { extraction, targets };
}
