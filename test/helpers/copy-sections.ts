// copySections: a new object holding chosen sections of an existing one, through the writer's
// public API. The writer tests use it for round trips (readelf, objdump, ld -r, eu-elflint);
// the product builds its objects in src/update/extract.ts.
import { relocInfo, SHF, SHN, SHT, STB, STT, sectionTypeName } from "../../src/elf/constants.js";
import {
  ElfFile,
  type ElfSection,
  type ElfSymbol,
  type SectionIndex,
  type SymbolIndex,
} from "../../src/elf/reader.js";
import {
  ElfWriteError,
  type NewSymbol,
  ObjectWriter,
  type SectionRef,
  type SpecialSection,
  type SymbolRef,
  WRITER_OWNED,
} from "../../src/elf/writer.js";

/** CopyResult is what copySections made: the writer (more can still be added) and the mappings. */
export interface CopyResult {
  writer: ObjectWriter;
  /** Output handle of each kept input section. */
  sections: Map<SectionIndex, SectionRef>;
  /** Output handle of each input symbol that was copied or turned into an undefined symbol. */
  symbols: Map<SymbolIndex, SymbolRef>;
  /**
   * Names of symbols that were defined in a dropped section and are now undefined in the copy;
   * `wasLocal` marks the ones that were local (they become global so a linker can resolve them).
   */
  externalized: { name: string; wasLocal: boolean }[];
}

/** CopyOptions tunes copySections. */
export interface CopyOptions {
  /** Also copy global SHN_ABS symbols (e.g. `.set` constants) even when no relocation uses them. */
  keepAbsolute?: boolean;
}

/**
 * copySections starts a new object holding the chosen sections of `elf`: their contents, the
 * symbols defined in them, their relocations and the groups they belong to (trimmed to the kept
 * members). A relocation against something in a dropped section is redirected to an undefined
 * symbol of the same name; one through a section symbol is redirected to the named symbol that
 * covers its target in that section, with the addend adjusted. A reference that has no name to
 * fall back on is an ElfWriteError.
 */
export function copySections(elf: ElfFile, keep: Iterable<number>, options: CopyOptions = {}): CopyResult {
  const w = new ObjectWriter();
  const kept = new Set<number>();
  for (const i of keep) {
    const s = elf.section(i, "copySections keep list");
    if (WRITER_OWNED.has(s.type) || s.type === SHT.NULL)
      throw new ElfWriteError(
        `${elf.name}: section ${i} (${s.name}) is a ${sectionTypeName(s.type)}, which the writer rebuilds`,
      );
    kept.add(i);
  }
  const sections = new Map<SectionIndex, SectionRef>();
  const order = [...kept].sort((a, b) => a - b);
  for (const i of order) {
    const s = elf.sections[i];
    let flags = s.flags & ~BigInt(SHF.GROUP | SHF.INFO_LINK);
    const linkOrder = (flags & BigInt(SHF.LINK_ORDER)) !== 0n;
    const link =
      linkOrder && kept.has(s.link) && s.link < i ? sections.get(s.link as SectionIndex) : undefined;
    // An SHF_LINK_ORDER section whose partner is dropped (or placed after it) loses the ordering.
    if (linkOrder && !link) flags &= ~BigInt(SHF.LINK_ORDER);
    const ref = w.addSection({
      name: s.name,
      type: s.type,
      flags,
      data: s.type === SHT.NOBITS ? undefined : elf.sectionData(s),
      size: s.type === SHT.NOBITS ? s.size : undefined,
      addralign: s.addralign === 0n ? 1n : s.addralign,
      entsize: s.entsize,
      link,
    });
    sections.set(i as SectionIndex, ref);
  }

  const symbols = new Map<SymbolIndex, SymbolRef>();
  const undefinedByName = new Map<string, SymbolRef>();
  const externalized: CopyResult["externalized"] = [];
  const syms = elf.symbols;
  // Symbols defined in kept sections, in input order (the writer puts locals first).
  for (const sym of syms) {
    if (sym.index === 0 || sym.type === STT.FILE) continue;
    const sec = elf.sectionOf(sym);
    if (!sec || !kept.has(sec.index)) continue;
    const ref = sections.get(sec.index)!;
    symbols.set(
      sym.index,
      sym.type === STT.SECTION ? w.sectionSymbol(ref) : w.addSymbol({ ...symbolFields(sym), section: ref }),
    );
  }

  if (options.keepAbsolute)
    for (const sym of syms)
      if (sym.shndx === SHN.ABS && !sym.extended && sym.bind !== STB.LOCAL && sym.type !== STT.FILE)
        symbols.set(sym.index, w.addSymbol({ ...symbolFields(sym), section: SHN.ABS }));

  const undefinedSymbol = (name: string, bind: number, type: number): SymbolRef => {
    let ref = undefinedByName.get(name);
    if (!ref) {
      ref = w.addSymbol({ name, bind: bind === STB.LOCAL ? STB.GLOBAL : bind, type, section: SHN.UNDEF });
      undefinedByName.set(name, ref);
    }
    return ref;
  };
  // resolve maps an input symbol to an output one, creating undefined or special symbols on demand.
  const resolve = (sym: ElfSymbol): SymbolRef | undefined => {
    const known = symbols.get(sym.index);
    if (known) return known;
    let ref: SymbolRef | undefined;
    if (sym.shndx === SHN.UNDEF) ref = undefinedSymbol(sym.name, sym.bind, sym.type);
    else if (!sym.extended && (sym.shndx === SHN.ABS || sym.shndx === SHN.COMMON)) {
      ref = w.addSymbol({ ...symbolFields(sym), section: sym.shndx as SpecialSection });
    } else if (sym.type !== STT.SECTION && sym.name !== "") {
      ref = undefinedSymbol(sym.name, sym.bind, sym.type);
      externalized.push({ name: sym.name, wasLocal: sym.bind === STB.LOCAL });
    } else return undefined;
    symbols.set(sym.index, ref);
    return ref;
  };

  for (const i of order) {
    const s = elf.sections[i];
    const dst = sections.get(i as SectionIndex)!;
    for (const r of elf.relocations(s)) {
      const where = `${elf.name}: relocation at ${s.name}+0x${r.offset.toString(16)}`;
      if (r.sym === 0) {
        w.addRelocation(dst, { offset: r.offset, type: r.type, addend: r.addend });
        continue;
      }
      const sym = syms[r.sym];
      const ref = resolve(sym);
      if (ref) {
        w.addRelocation(dst, { offset: r.offset, type: r.type, symbol: ref, addend: r.addend });
        continue;
      }
      // A section symbol of a dropped section: find the named symbol the target lies in.
      const target = elf.sectionOf(sym);
      if (!target) throw new ElfWriteError(`${where} refers to symbol ${sym.index}, which has no section`);
      const info = relocInfo(r.type);
      // A PC-relative field's addend is target - (end of field) in the common case; undo that bias.
      const at = r.addend + (info?.pcRelative ? BigInt(info.size) : 0n);
      const named = coveringSymbol(syms, target, at);
      if (!named)
        throw new ElfWriteError(
          `${where} refers to ${target.name}+0x${at.toString(16)}, which is not kept and has no named symbol there`,
        );
      const nref = resolve(named)!;
      w.addRelocation(dst, { offset: r.offset, type: r.type, symbol: nref, addend: r.addend - named.value });
    }
  }

  for (const g of elf.groups()) {
    const members = g.members.filter((m) => kept.has(m)).map((m) => sections.get(m)!);
    if (members.length === 0) continue;
    const gsyms = elf.symbolsOf(elf.section(g.section.link));
    const sig = gsyms[g.signatureIndex];
    let ref = resolve(sig);
    if (!ref) ref = undefinedSymbol(g.signature, STB.GLOBAL, STT.NOTYPE);
    w.addGroup(ref, members, g.flags);
  }
  return { writer: w, sections, symbols, externalized };
}

/** extractSections is copySections followed by write: the bytes of an object holding just `keep`. */
export function extractSections(elf: ElfFile, keep: Iterable<number>, options: CopyOptions = {}): Uint8Array {
  return copySections(elf, keep, options).writer.write();
}

function symbolFields(sym: ElfSymbol): NewSymbol {
  return {
    name: sym.name,
    value: sym.value,
    size: sym.size,
    bind: sym.bind,
    type: sym.type,
    visibility: sym.visibility,
  };
}

/**
 * coveringSymbol finds the named symbol of a section whose extent holds `at`: globals before
 * locals, and failing that one at offset 0 (a function or object alone in its section).
 */
function coveringSymbol(syms: ElfSymbol[], sec: ElfSection, at: bigint): ElfSymbol | undefined {
  let best: ElfSymbol | undefined;
  let atZero: ElfSymbol | undefined;
  for (const s of syms) {
    if (s.index === 0 || s.name === "" || s.type === STT.SECTION || s.type === STT.FILE) continue;
    if (ElfFile.isSpecialIndex(s) || s.shndx !== sec.index) continue;
    const better = (cur: ElfSymbol | undefined) => !cur || (cur.bind === STB.LOCAL && s.bind !== STB.LOCAL);
    if (s.value <= at && at < s.value + (s.size === 0n ? 1n : s.size) && better(best)) best = s;
    if (s.value === 0n && better(atZero)) atZero = s;
  }
  return best ?? atZero;
}
