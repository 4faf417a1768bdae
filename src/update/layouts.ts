// Changed structure layouts. A patch that gives a structure a field (or moves one) changes the
// code of every function using the fields after it; create would replace them all, and the new
// code would then meet the instances the running kernel made with the old layout. So create
// compares the layout of every structure and union a patched object's translation unit
// defines, pre against post, as the compiler lays them out (kbuild/layouts.ts), and refuses a
// change, naming the structure and the objects, unless the patch's author says it is safe with
// ksplice_layout_change(NAME): every instance that can reach the new code is made by it (one
// that lives only on a stack, say). The usual way out is a shadow (ksplice-patch.h): the new
// field lives beside the old objects instead of in them.
import { join } from "node:path";
import { ElfFile } from "../elf/reader.js";
import type { BuildView } from "../kbuild/build.js";
import {
  bodiesTouched,
  type Definition,
  definitionsOf,
  type Layout,
  layoutChange,
  layoutOf,
  probeSource,
} from "../kbuild/layouts.js";
import { changedLines } from "../kbuild/lines.js";
import type { Refusal } from "./refusal.js";

/** LAYOUT_SECTION is where ksplice_layout_change(NAME) leaves NAME (ksplice-patch.h). */
export const LAYOUT_SECTION = ".ksplice_layout";

/** LayoutCheck is what checkLayouts found: refusals, and the changes the patch vouched for. */
export interface LayoutCheck {
  refusals: Refusal[];
  declared: Array<{ object: string; key: string; change: string }>;
}

/** declaredChanges reads the names a patch gave ksplice_layout_change in its post objects. */
export function declaredChanges(posts: ElfFile[]): Set<string> {
  const out = new Set<string>();
  for (const elf of posts) {
    const sec = elf.sectionByName(LAYOUT_SECTION);
    if (!sec) continue;
    for (const s of Buffer.from(elf.sectionData(sec)).toString("latin1").split("\0")) if (s) out.add(s);
  }
  return out;
}

/** touchesBodies tells whether a patch changes a line inside a structure or union (a quick test). */
export function touchesBodies(
  patches: Array<{ text: string }>,
  read: { pre: (rel: string) => string | undefined; post: (rel: string) => string | undefined },
): boolean {
  for (const p of patches)
    for (const [rel, lines] of changedLines(p.text)) {
      const pre = read.pre(rel);
      const post = read.post(rel);
      if ((pre && bodiesTouched(pre, lines.removed)) || (post && bodiesTouched(post, lines.added)))
        return true;
    }
  return false;
}

/**
 * checkLayouts compares, for each object, the layouts of the definitions whose text the patch
 * changed, in the pre and post views; declared: the names the patch vouched for.
 */
export async function checkLayouts(opts: {
  objects: string[];
  pre: BuildView;
  post: BuildView;
  declared: Set<string>;
  work: string;
  signal: AbortSignal;
}): Promise<LayoutCheck> {
  const out: LayoutCheck = { refusals: [], declared: [] };
  for (const object of opts.objects) {
    const [a, b] = await Promise.all([
      opts.pre.preprocess(object, opts.signal),
      opts.post.preprocess(object, opts.signal),
    ]);
    const before = definitionsOf(a);
    const after = definitionsOf(b);
    const changed = [...after.values()].filter((d) => {
      const old = before.get(d.key);
      return old && old.body !== d.body;
    });
    if (!changed.length) continue;
    const olds = changed.map((d) => before.get(d.key)!);
    const [preLayouts, postLayouts] = await Promise.all([
      probe(opts.pre, object, olds, join(opts.work, "layout-pre.o"), opts.signal),
      probe(opts.post, object, changed, join(opts.work, "layout-post.o"), opts.signal),
    ]);
    changed.forEach((d, i) => {
      const change = layoutChange(preLayouts[i], postLayouts[i]);
      if (!change) return;
      const what = d.key.startsWith("typedef ") ? d.name : d.key;
      if (opts.declared.has(d.name)) {
        out.declared.push({ object, key: what, change });
        return;
      }
      out.refusals.push({
        object,
        symbol: what,
        reason: `changes the layout of ${what} (${change}): instances the running kernel made with the old layout would meet code that expects the new one. Keep the new data in a shadow instead (README: Changes to data); or, if no instance made before the update can reach the new code (one that lives only on a stack, say), say so in the patch with ksplice_layout_change(${d.name})`,
      });
    });
  }
  return out;
}

/**
 * probe has the compiler lay out each definition, appended to the object's translation unit.
 * When a member this parser named is not one (a macro it could not see through), the probe is
 * made again with sizes only.
 */
async function probe(
  view: BuildView,
  object: string,
  defs: Definition[],
  dest: string,
  signal: AbortSignal,
): Promise<Layout[]> {
  try {
    await view.compileProbe(object, probeSource(defs), dest, signal);
  } catch {
    defs = defs.map((d) => ({ ...d, members: [] }));
    await view.compileProbe(object, probeSource(defs), dest, signal);
  }
  const elf = ElfFile.open(dest);
  try {
    return defs.map((d, n) => {
      const name = `ksplice_layout_probe_${n}`;
      const sym = elf.symbols.find((s) => s.name === name);
      if (!sym) throw new Error(`the layout probe of ${object} has no ${name}`);
      const data = Buffer.from(elf.sectionData(elf.sections[sym.shndx]));
      const values: bigint[] = [];
      for (let k = 0; k < Number(sym.size) / 8; k++)
        values.push(data.readBigUInt64LE(Number(sym.value) + 8 * k));
      return layoutOf(d, values);
    });
  } finally {
    elf.close();
  }
}
