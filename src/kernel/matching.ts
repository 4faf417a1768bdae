// What run-pre matching proves about an update's targets in some of the running images (the
// kernel and loaded modules), and the plan made from it: the relocations the core writes into
// the update module and the jumps it writes into the running code. apply matches the images
// loaded now; the helper the core runs when a module with a pending part loads matches that
// module alone. One home for both.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ElfFile } from "../elf/reader.js";
import { UserError } from "../errors.js";
import type { Kallsyms } from "../live/kallsyms.js";
import { kcoreMemory, type LiveMemory } from "../live/memory.js";
import { isUpdateModule } from "../package/id.js";
import type { Manifest, ManifestTarget } from "../package/manifest.js";
import { type MatchedFunction, RunPre } from "../runpre/match.js";
import { type CoreHost, moduleSection, type Patch, type Reloc, VMLINUX } from "./core.js";
import { planPatch } from "./plan.js";

/** Scope says which images a matching covers: the kernel (undefined) or a module by name. */
export type Scope = (module: string | undefined) => boolean;

/** MatchedTarget is a target of the update with where it runs now and its first bytes there. */
export interface MatchedTarget {
  target: ManifestTarget;
  fn: MatchedFunction;
  head: Uint8Array;
}

/** Matching is what run-pre proved in a scope: targets found, those left out, what the module needs. */
export interface Matching {
  matched: MatchedTarget[];
  skipped: Array<{ name: string; object: string; reason: string }>;
  /** The manifest's relocations in the scope (by index) with their symbol's address. */
  relocs: Array<{ index: number; symbol: bigint }>;
  /** __this_module of each loadable module the scope patches or refers to: the core pins them. */
  pins: bigint[];
}

/** partName is the part a target belongs to: its module, or the kernel image. */
export function partName(module: string | undefined): string {
  return module ?? VMLINUX;
}

/**
 * matchTargets run-pre matches every target of the manifest in the scope against the running
 * code, and resolves every relocation of the scope's objects. With `partial`, targets whose
 * running code differs are left out, as long as one matches. It reads live code through
 * `memory` when given (the caller's /proc/kcore, read once), else opens /proc/kcore itself.
 */
export function matchTargets(
  m: Manifest,
  dir: string,
  opts: { partial: boolean; scope: Scope; kallsyms: Kallsyms; memory?: LiveMemory },
): Matching {
  const { kallsyms, scope } = opts;
  const objects = m.objects.filter((o) => scope(o.module));
  const inScope = new Set(objects.map((o) => o.path));
  const targets = m.targets.filter((t) => inScope.has(t.object));
  const own = opts.memory ? undefined : kcoreMemory();
  const mem = opts.memory ?? own!;
  try {
    // Names asked besides the objects' symbols (see Kallsyms.expect).
    kallsyms.expect(["__this_module", ...m.relocations.map((r) => r.preSymbol)]);
    const runpre = new RunPre(kallsyms, mem);
    for (const o of objects)
      runpre.addObject(o.path, ElfFile.parse(readFileSync(join(dir, o.pre)), o.pre), o.module);
    const matched: MatchedTarget[] = [];
    const skipped: Matching["skipped"] = [];
    for (const target of targets) {
      try {
        const fn = runpre.matchFunction(target.object, target.name);
        matched.push({ target, fn, head: mem.read(fn.addr, 10) });
      } catch (e) {
        const differs = e instanceof UserError && (e.code === "no_match" || e.code === "failed_to_find");
        if (!opts.partial || !differs) throw e;
        skipped.push({ name: target.name, object: target.object, reason: e.message });
      }
    }
    if (matched.length === 0 && targets.length > 0)
      throw new UserError(
        `no function of update ${m.id} matches the running kernel:\n${skipped.map((x) => x.reason).join("\n")}`,
        { code: "no_match" },
      );
    const relocs = m.relocations.flatMap((r, index) =>
      inScope.has(r.object) ? [{ index, symbol: runpre.addressOf(r.object, r.preSymbol, r.local) }] : [],
    );
    const modules = new Set(objects.flatMap((o) => (o.module ? [o.module] : [])));
    for (const { symbol } of relocs)
      for (const e of kallsyms.modulesAt(symbol)) if (!isUpdateModule(e.module)) modules.add(e.module!);
    const pins = [...modules].sort().map((mod) => kallsyms.one("__this_module", mod));
    return { matched, skipped, relocs, pins };
  } finally {
    own?.close();
  }
}

/** ModuleSections reads (once each) where a loaded module's sections are. */
export class ModuleSections {
  private readonly cache = new Map<string, bigint>();
  constructor(
    private readonly module: string,
    private readonly host: CoreHost,
  ) {}
  async addr(section: string): Promise<bigint> {
    let v = this.cache.get(section);
    if (v === undefined) {
      v = await moduleSection(this.module, section, this.host);
      this.cache.set(section, v);
    }
    return v;
  }
}

/** planRelocs says where each matched relocation's field is in the loaded update module. */
export async function planRelocs(
  m: Manifest,
  relocs: Matching["relocs"],
  sections: ModuleSections,
): Promise<Reloc[]> {
  const out: Reloc[] = [];
  for (const { index, symbol } of relocs) {
    const r = m.relocations[index];
    out.push({
      dest: (await sections.addr(r.section)) + BigInt(r.offset),
      type: r.type,
      symbol,
      addend: BigInt(r.addend),
    });
  }
  return out;
}

/** planJumps makes the jump for each matched target, to its replacement in the loaded module. */
export async function planJumps(matched: MatchedTarget[], sections: ModuleSections): Promise<Patch[]> {
  const out: Patch[] = [];
  for (const { target, fn, head } of matched) {
    const addr = await sections.addr(target.replacement.section);
    out.push({
      ...planPatch(fn, head, { addr, size: BigInt(target.replacement.size) }),
      part: partName(target.module),
    });
  }
  return out;
}
