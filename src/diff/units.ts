// The units of comparison in one relocatable object: each defined function and data object,
// with its bytes and the relocations that fall inside it. A relocation's target is resolved
// to something that survives recompilation: a symbol (through its unit), the contents of a
// merged string or constant, or an anonymous section's contents. Offsets inside a unit are
// unit-relative numbers; sections with several symbols (no -ffunction-sections) work too.
import { createHash } from "node:crypto";
import { relocInfo, SHF, SHN, SHT, STB, STT } from "../elf/constants.js";
import type { ElfFile, ElfRela, ElfSection, ElfSymbol } from "../elf/reader.js";
import { decode } from "../x86/decode.js";
import { canonicalDataName, canonicalFunctionName, numberedStatic } from "./names.js";

/** UnitKind tells code from data. */
export type UnitKind = "func" | "data";

/** Target is what a relocation refers to, in terms that do not depend on layout. */
export type Target =
  /** A unit of this object; `delta` is the addend relative to the unit's start. */
  | { kind: "unit"; unit: Unit; delta: bigint }
  /** A symbol defined elsewhere (or global): by name and addend. */
  | { kind: "symbol"; name: string; addend: bigint }
  /** A merged string, by its characters; `delta` is the addend relative to its first one. */
  | { kind: "string"; text: string; delta: bigint }
  /** A merged constant (SHF_MERGE with an entry size), by its bytes in hex. */
  | { kind: "constant"; hex: string; delta: bigint }
  /** An anonymous section (a jump table), by its name and a hash of its bytes and relocations. */
  | { kind: "section"; section: string; hash: string; delta: bigint };

/** ContentTarget is a target named by what is there rather than by a symbol. */
export type ContentTarget = Extract<Target, { kind: "string" | "constant" | "section" }>;

/** contentKey names a content target in one line (stable: pre checksums are computed from it). */
export function contentKey(t: ContentTarget): string {
  switch (t.kind) {
    case "string":
      return `string ${JSON.stringify(t.text)}`;
    case "constant":
      return `constant ${t.hex}`;
    case "section":
      return `section ${t.section} ${t.hash}`;
  }
}

/** UnitReloc is one relocation inside a unit, at a unit-relative offset. */
export interface UnitReloc {
  offset: number;
  type: number;
  size: number;
  addend: bigint;
  /** The raw symbol the relocation names, for tools that need it. */
  symbol: ElfSymbol;
  target: Target;
}

/** Unit is one function or data object of an object file. */
export interface Unit {
  kind: UnitKind;
  name: string;
  /** Name with compiler numbering replaced; static locals also carry their owners. */
  canon: string;
  symbol: ElfSymbol;
  section: ElfSection;
  start: number;
  size: number;
  bytes: Uint8Array;
  relocs: UnitReloc[];
  global: boolean;
  /** Canonical names of the functions that refer to this unit (filled for data). */
  referrers: Set<string>;
  /** Other symbols naming exactly these bytes (SYSCALL_DEFINE0 makes three names for one body). */
  aliases: string[];
  /**
   * Branches to another function of the same section that the assembler resolved (no
   * relocation): in a section shared by several functions (__sched's .sched.text) their
   * displacement depends on the layout, so they compare by target instead.
   */
  branches: ResolvedBranch[];
}

/** ResolvedBranch is a relative branch field with no relocation that leaves its function. */
export interface ResolvedBranch {
  /** Offset of the displacement field in the unit, and its size (1 or 4). */
  offset: number;
  size: number;
  target: Unit;
  /** Where in the target unit the branch lands. */
  delta: bigint;
}

/** unitRange is the part of its section a unit covers: a zero-size unit (a label) covers one byte. */
export function unitRange(u: Unit): { start: number; end: number } {
  return { start: u.start, end: u.start + Math.max(u.size, 1) };
}

/** unitAt finds the unit of `units` (one section's) whose range holds `offset`. */
export function unitAt(units: readonly Unit[], offset: number | bigint): Unit | undefined {
  return units.find((u) => {
    const { start, end } = unitRange(u);
    return start <= offset && offset < end;
  });
}

/** Distances from a PC-relative field to the end of its instruction: 4, or more when an immediate follows. */
const PC_ADJUSTS = [4n, 5n, 6n, 8n, 12n];

/**
 * unitReferredTo finds the unit of `units` (the target section's) that a relocation against
 * `symbol` refers to, `rel` being the symbol's value plus the addend: the symbol's own unit, else
 * the one holding where the reference lands (for a PC-relative field, the end of its instruction),
 * else the section's only unit.
 */
export function unitReferredTo(
  units: readonly Unit[],
  symbol: ElfSymbol,
  rel: bigint,
  pcRelative: boolean,
): Unit | undefined {
  if (symbol.type === STT.FUNC || symbol.type === STT.OBJECT) {
    const own = units.find((x) => x.symbol.index === symbol.index);
    if (own) return own;
  }
  for (const adj of pcRelative ? PC_ADJUSTS : [0n]) {
    const u = unitAt(units, rel + adj);
    if (u) return u;
  }
  return units.length === 1 ? units[0] : undefined;
}

/** ObjectUnits indexes the units of one object file. */
export class ObjectUnits {
  readonly units: Unit[] = [];
  private bySection = new Map<number, Unit[]>();
  private sectionData = new Map<number, Uint8Array>();

  /** With `branches: false` shared sections are not decoded (run-pre matching needs no branches). */
  constructor(
    readonly elf: ElfFile,
    opts: { branches?: boolean } = {},
  ) {
    // Symbols with one section, offset, size and kind are one unit, named by a global name if
    // there is one (the smallest, so pre and post agree whatever the symbol table order).
    const same = new Map<string, Unit>();
    for (const sym of elf.symbols) {
      if (sym.type !== STT.FUNC && sym.type !== STT.OBJECT) continue;
      if (sym.shndx === SHN.UNDEF || sym.shndx >= SHN.LORESERVE) continue;
      const section = elf.section(sym.shndx, `symbol ${sym.name}`);
      if ((section.flags & BigInt(SHF.ALLOC)) === 0n) continue;
      const start = Number(sym.value);
      const size = Number(sym.size);
      const data =
        section.type === SHT.NOBITS ? new Uint8Array(size) : this.data(section).subarray(start, start + size);
      const unit: Unit = {
        kind: sym.type === STT.FUNC ? "func" : "data",
        name: sym.name,
        canon: sym.type === STT.FUNC ? canonicalFunctionName(sym.name) : canonicalDataName(sym.name),
        symbol: sym,
        section,
        start,
        size,
        bytes: data,
        relocs: [],
        global: sym.bind !== STB.LOCAL,
        referrers: new Set(),
        aliases: [],
        branches: [],
      };
      const key = `${section.index}:${start}:${size}:${unit.kind}`;
      const first = same.get(key);
      if (first && size > 0) {
        if ((unit.global && !first.global) || (unit.global === first.global && unit.name < first.name)) {
          first.aliases.push(first.name);
          Object.assign(first, { name: unit.name, canon: unit.canon, symbol: sym, global: true });
        } else first.aliases.push(sym.name);
        continue;
      }
      same.set(key, unit);
      this.units.push(unit);
      const list = this.bySection.get(section.index) ?? [];
      list.push(unit);
      this.bySection.set(section.index, list);
    }
    for (const list of this.bySection.values()) list.sort((a, b) => a.start - b.start || b.size - a.size);
    for (const [secIndex, list] of this.bySection) {
      const section = elf.sections[secIndex];
      for (const r of elf.relocations(section)) {
        const off = Number(r.offset);
        const unit = unitAt(list, off);
        if (!unit) continue;
        unit.relocs.push(this.resolve(unit, r));
      }
    }
    this.nameStatics();
    for (const list of opts.branches === false ? [] : this.bySection.values()) {
      const funcs = list.filter((u) => u.kind === "func" && u.size > 0);
      if (funcs.length > 1 && (funcs[0].section.flags & BigInt(SHF.EXECINSTR)) !== 0n)
        for (const u of funcs) u.branches = resolvedBranches(u, funcs);
    }
  }

  /** unitsIn lists the units of a section, by offset. */
  unitsIn(section: ElfSection): Unit[] {
    return this.bySection.get(section.index) ?? [];
  }

  private data(section: ElfSection): Uint8Array {
    let d = this.sectionData.get(section.index);
    if (!d) {
      d = this.elf.sectionData(section);
      this.sectionData.set(section.index, d);
    }
    return d;
  }

  private resolve(unit: Unit, r: ElfRela): UnitReloc {
    const info = relocInfo(r.type);
    const symbol = this.elf.symbols[r.sym];
    const base = {
      offset: Number(r.offset) - unit.start,
      type: r.type,
      size: info?.size ?? 0,
      addend: r.addend,
      symbol,
    };
    const external = (): Target => ({ kind: "symbol", name: symbol.name, addend: r.addend });
    if (symbol.shndx === SHN.UNDEF || symbol.shndx >= SHN.LORESERVE || symbol.index === 0) {
      return { ...base, target: external() };
    }
    // Named function/object symbols stand for themselves; globals by name so that a global
    // defined here and referred to elsewhere keeps its identity.
    if ((symbol.type === STT.FUNC || symbol.type === STT.OBJECT) && symbol.bind !== STB.LOCAL) {
      return { ...base, target: external() };
    }
    const section = this.elf.sections[symbol.shndx];
    const rel = symbol.value + r.addend;
    const pcRelative = info?.pcRelative ?? false;
    const u = unitReferredTo(this.unitsIn(section), symbol, rel, pcRelative);
    if (u) return { ...base, target: { kind: "unit", unit: u, delta: rel - BigInt(u.start) } };
    return { ...base, target: this.contentTarget(section, rel, pcRelative ? PC_ADJUSTS[0] : 0n) };
  }

  /** contentTarget keys a reference into anonymous bytes by what is there. */
  private contentTarget(section: ElfSection, rel: bigint, adj: bigint): Target {
    const data = this.data(section);
    const merge = (section.flags & BigInt(SHF.MERGE)) !== 0n;
    const strings = (section.flags & BigInt(SHF.STRINGS)) !== 0n;
    const at = Number(rel + adj);
    if (merge && strings && at >= 0 && at < data.length) {
      let s = at;
      while (s > 0 && data[s - 1] !== 0) s--;
      let e = at;
      while (e < data.length && data[e] !== 0) e++;
      const text = Buffer.from(data.subarray(s, e)).toString("latin1");
      return { kind: "string", text, delta: rel - BigInt(s) };
    }
    if (merge && section.entsize > 0n && at >= 0 && at < data.length) {
      const es = Number(section.entsize);
      const s = at - (at % es);
      const hex = Buffer.from(data.subarray(s, s + es)).toString("hex");
      return { kind: "constant", hex, delta: rel - BigInt(s) };
    }
    // Anonymous section: identified by its name and contents (bytes and relocation names).
    const h = createHash("sha256").update(data);
    for (const r of this.elf.relocations(section)) {
      const s = this.elf.symbols[r.sym];
      h.update(`${r.offset}:${r.type}:${this.elf.symbolName(s)}:${r.addend};`);
    }
    return { kind: "section", section: section.name, hash: h.digest("hex").slice(0, 16), delta: rel };
  }

  /** nameStatics gives numbered static locals a canonical name carrying the functions using them. */
  private nameStatics(): void {
    for (const u of this.units) {
      if (u.kind !== "func") continue;
      for (const r of u.relocs)
        if (r.target.kind === "unit" && r.target.unit.kind === "data") r.target.unit.referrers.add(u.canon);
    }
    for (const u of this.units) {
      if (u.kind !== "data" || u.global) continue;
      const base = numberedStatic(u.name);
      if (base === undefined) continue;
      const b = canonicalDataName(base);
      u.canon = u.referrers.size ? `${b}.N@${[...u.referrers].sort().join(",")}` : `${b}.N`;
    }
  }
}

/** resolvedBranches finds u's branches into other functions of its section that carry no relocation. */
function resolvedBranches(u: Unit, inSection: Unit[]): ResolvedBranch[] {
  const out: ResolvedBranch[] = [];
  for (const insn of decode(u.bytes)) {
    if (insn.branch === "none" || insn.target === undefined) continue;
    if (insn.target >= 0n && insn.target < BigInt(u.size)) continue;
    const size = insn.length >= 5 ? 4 : 1;
    const offset = insn.offset + insn.length - size;
    if (u.relocs.some((r) => r.offset < offset + size && offset < r.offset + r.size)) continue;
    const at = BigInt(u.start) + insn.target;
    const target = unitAt(inSection, at); // functions with a size: their exact extent
    if (target) out.push({ offset, size, target, delta: at - BigInt(target.start) });
  }
  return out;
}
