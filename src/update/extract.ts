// This file owns extraction: the replacement code of one object, copied into a new relocatable
// object for the update module. The sections of replaced and new functions (and new data) are
// copied; so are the anonymous read-only sections they use (strings, constants). Each
// relocation is sorted:
//   - internal: to something copied into the module: kept, against the copy;
//   - exported: to a symbol the kernel exports: kept as an undefined symbol, so the module
//     loader resolves it (this also keeps ftrace's __fentry__ calls and return thunks valid);
//   - kernel: to anything else (static functions and data of the object, unexported globals):
//     removed from the object and listed for apply time, where run-pre matching has learned
//     the address. The shipped module is never modified; the core module writes these fields.
// Entries of special sections (ftrace, ORC, bug and exception tables, alternatives...; their
// layouts are in elf/kernel-sections.ts) are kept when they describe copied code; an unknown
// section that refers to copied code is refused rather than silently dropped.
// extractObject runs as a linker does: named passes over one ExtractContext.

import type { ObjectUnits, Unit } from "../diff/index.js";
import { unitAt, unitReferredTo } from "../diff/units.js";
import { R_X86_64, relocInfo, relocTypeName, SHF, SHN, SHT, STB, STT } from "../elf/constants.js";
import { KERNEL_SECTIONS, kernelSection, type SectionLayout } from "../elf/kernel-sections.js";
import type { ElfFile, ElfRela, ElfSection, ElfSymbol } from "../elf/reader.js";
import { ObjectWriter, type SectionRef, type SymbolRef } from "../elf/writer.js";
import { isKernelRelocType, type KernelReloc } from "../package/manifest.js";
import type { Refusal } from "./refusal.js";

/** ExtractedFunction maps a function of the module to what it replaces. */
export interface ExtractedFunction {
  name: string;
  section: string;
  size: number;
  replaces?: string;
}

/** Extraction is the new object's bytes plus what apply time needs to know about it. */
export interface Extraction {
  bytes: Uint8Array;
  functions: ExtractedFunction[];
  data: Array<{ name: string; section: string; size: number }>;
  relocs: KernelReloc[];
  refusals: Refusal[];
  /** Kernel exports the object refers to, resolved by the module loader. */
  imports: string[];
}

/** ExtractOptions are the inputs of extractObject. */
interface ExtractOptions {
  object: string;
  post: ObjectUnits;
  /** Post unit of each replaced function, with the pre unit's name. */
  replaced: Array<{ post: Unit; preName: string }>;
  added: Unit[];
  addedData: Unit[];
  /** Pre name of each post unit that has a partner (for kernel relocs). */
  preNameOf: (u: Unit) => string | undefined;
  /** The pre build the post one was diffed against (tables of the kernel are compared with it). */
  pre?: ObjectUnits;
  exported: (name: string) => boolean;
  /** Globals the update adds in any of its objects: linked inside the update module. */
  updateGlobals: Set<string>;
  /** Section names already used by earlier objects of this update. */
  usedNames: Set<string>;
}

// Sections whose entries for copied code are deliberately left out.
const DROPPED =
  /^\.discard|^\.ksplice_hook\.|^\.ksplice_layout$|^\.static_call_sites$|^\.note|^\.comment$|^__ksymtab|^___ksymtab|^__kcrctab|^\.init\.|^\.exit\.|^\.BTF|^\.debug|^\.llvm|^__patchable/;

/** Sections holding alternatives' replacement instructions (.altinstr_replacement). */
const REPLACEMENT_SECTIONS = Object.values(KERNEL_SECTIONS).flatMap((l) =>
  l.replacement ? [l.replacement.section] : [],
);

/** Where a copied unit's bytes start in the module object. */
interface Place {
  ref: SectionRef;
  offset: number;
}

/** extractObject builds the replacement object for one kernel object. */
export function extractObject(opts: ExtractOptions): Extraction {
  const cx = new ExtractContext(opts);
  placeUnits(cx);
  copyParts(cx);
  defineUnitSymbols(cx);
  routePartRelocations(cx);
  routeQueuedSections(cx);
  keepSpecialEntries(cx);
  routeQueuedSections(cx);
  checkAltReplacements(cx);
  copyParallelTables(cx);
  return finish(cx);
}

/** ExtractContext is the state the passes of one extraction share, with the small helpers they use. */
class ExtractContext {
  readonly object: string;
  readonly post: ObjectUnits;
  readonly elf: ElfFile;
  readonly w = new ObjectWriter();
  readonly refusals: Refusal[] = [];
  /** Fields the core writes at apply time. */
  readonly relocs: KernelReloc[] = [];
  readonly functions: ExtractedFunction[] = [];
  readonly data: Extraction["data"] = [];
  /** The units copied: replaced functions, then new functions, then new data. */
  readonly units: Unit[];
  /** Sections copied whole (and special sections' kept entries), by index in the object. */
  readonly outSec = new Map<number, { ref: SectionRef; name: string }>();
  /** Units copied alone out of a section shared with the kernel's own data, by section. */
  readonly parts = new Map<ElfSection, Unit[]>();
  /** Where each unit of `parts` is, and the names of the sections made for them. */
  readonly partOf = new Map<Unit, Place>();
  readonly partNames = new Map<SectionRef, string>();
  /** Undefined symbols of the module object, by name. */
  readonly undefSyms = new Map<string, SymbolRef>();
  /** Sections copied whole, in order; the relocations of the first `routed` are routed. */
  readonly queue: ElfSection[] = [];
  routed = 0;
  /** Kernel references in alternatives' replacements (offsets there): refused only if a kept entry uses them. */
  readonly altKernel: Array<{ symbol: string; offset: number }> = [];
  /** The replacement instructions of kept alternative entries. */
  readonly altRanges: Array<{ start: number; len: number }> = [];
  /** Kept entries of tables with a relocation-less parallel one (.orc_unwind), by its name. */
  readonly parallelKeep = new Map<string, { entry: number; keep: number[] }>();

  constructor(readonly opts: ExtractOptions) {
    this.object = opts.object;
    this.post = opts.post;
    this.elf = opts.post.elf;
    this.units = [...opts.replaced.map((r) => r.post), ...opts.added, ...opts.addedData];
  }

  /** refuse records a change this object's extraction cannot carry. */
  refuse(symbol: string, reason: string): void {
    this.refusals.push({ object: this.object, symbol, reason });
  }

  /** uniqueName makes a section name no earlier object of the update used. */
  uniqueName(name: string): string {
    let n = name;
    for (let i = 1; this.opts.usedNames.has(n); i++) n = `${name}.ksplice${i}`;
    this.opts.usedNames.add(n);
    return n;
  }

  /** include copies a section whole (once), and queues its relocations for routing. */
  include(sec: ElfSection): SectionRef {
    const have = this.outSec.get(sec.index);
    if (have) return have.ref;
    // Merged string and constant sections keep their name so the linker can merge them. A
    // module's __exit code is ordinary text in the update module (not its own exit code).
    const name = hasFlag(sec, SHF.MERGE)
      ? sec.name
      : this.uniqueName(sec.name.replace(/^\.exit\.text/, ".text.ksplice_exit"));
    const nobits = sec.type === SHT.NOBITS;
    const ref = this.w.addSection({
      name,
      type: sec.type,
      flags: copiedFlags(sec),
      data: nobits ? undefined : this.elf.sectionData(sec),
      size: nobits ? sec.size : undefined,
      addralign: sec.addralign || 1n,
      entsize: sec.entsize,
    });
    this.outSec.set(sec.index, { ref, name });
    this.queue.push(sec);
    return ref;
  }

  /** sectionNameOf names a section of the module object. */
  sectionNameOf(ref: SectionRef): string {
    return this.partNames.get(ref) ?? [...this.outSec.values()].find((s) => s.ref === ref)!.name;
  }

  /** isPlaced says whether a unit was copied (a refused one was not). */
  isPlaced(u: Unit): boolean {
    return this.partOf.has(u) || this.outSec.has(u.section.index);
  }

  /** placeOf says where a copied unit's bytes start in the module object. */
  placeOf(u: Unit): Place {
    return this.partOf.get(u) ?? { ref: this.outSec.get(u.section.index)!.ref, offset: u.start };
  }

  /** undef returns the module's undefined symbol for a name, made on first use. */
  undef(name: string): SymbolRef {
    let s = this.undefSyms.get(name);
    if (!s) {
      s = this.w.addSymbol({ name, bind: STB.GLOBAL, section: SHN.UNDEF });
      this.undefSyms.set(name, s);
    }
    return s;
  }

  /** relocate adds a relocation of the module object, against a section of it. */
  relocate(from: SectionRef, offset: number, type: number, to: SectionRef, addend: bigint): void {
    this.w.addRelocation(from, { offset, type, symbol: this.w.sectionSymbol(to), addend });
  }
}

/** placeUnits decides how each unit is copied: with its whole section, or alone (a part). */
function placeUnits(cx: ExtractContext): void {
  for (const u of cx.units) {
    const others = cx.post.unitsIn(u.section).filter((x) => x !== u && !cx.units.includes(x) && x.size > 0);
    // Code in a section of its own name (__sched: .sched.text) shares it with its neighbours,
    // whose calls to each other the assembler resolved: the section is copied whole, and only
    // the changed functions are redirected to it. Per-call-site data (WARN_ONCE flags, pr_debug
    // descriptors) is copied whole too. New data in a section shared with the kernel's own
    // (__read_mostly, __ro_after_init) is copied alone, into a section of its own.
    const whole = hasFlag(u.section, SHF.EXECINSTR) || /^\.data\.once$|^__dyndbg$/.test(u.section.name);
    if (!others.length || whole) cx.include(u.section);
    else if (/^\.data\.\.percpu/.test(u.section.name))
      cx.refuse(
        u.name,
        `is a new per-CPU variable (${u.section.name}); adding per-CPU data in an update is not supported yet`,
      );
    else cx.parts.set(u.section, [...(cx.parts.get(u.section) ?? []), u]);
  }
}

/** copyParts lays the parts taken from each shared data section out in a new section. */
function copyParts(cx: ExtractContext): void {
  for (const [sec, list] of cx.parts) {
    const align = Number(sec.addralign || 1n);
    let size = 0;
    const at = list.map((u) => {
      const off = Math.ceil(size / align) * align;
      size = off + u.size;
      return off;
    });
    const nobits = sec.type === SHT.NOBITS;
    const bytes = new Uint8Array(size);
    if (!nobits) for (const [i, u] of list.entries()) bytes.set(u.bytes, at[i]);
    const name = cx.uniqueName(sec.name);
    const ref = cx.w.addSection({
      name,
      type: sec.type,
      flags: copiedFlags(sec),
      data: nobits ? undefined : bytes,
      size: nobits ? BigInt(size) : undefined,
      addralign: sec.addralign || 1n,
    });
    cx.partNames.set(ref, name);
    for (const [i, u] of list.entries()) cx.partOf.set(u, { ref, offset: at[i] });
  }
}

/**
 * defineUnitSymbols gives each copied unit a symbol and lists it as a function or data. Symbols
 * are local, so that nothing clashes with kernel exports; a global the update adds stays global,
 * for the update's other objects that call it.
 */
function defineUnitSymbols(cx: ExtractContext): void {
  const isNew = new Set([...cx.opts.added, ...cx.opts.addedData]);
  for (const u of cx.units) {
    if (!cx.isPlaced(u)) continue; // refused by placeUnits
    const place = cx.placeOf(u);
    const section = cx.sectionNameOf(place.ref);
    cx.w.addSymbol({
      name: u.name,
      value: place.offset,
      size: u.size,
      bind: u.global && isNew.has(u) && cx.opts.updateGlobals.has(u.name) ? STB.GLOBAL : STB.LOCAL,
      type: u.kind === "func" ? STT.FUNC : STT.OBJECT,
      section: place.ref,
    });
    const rep = cx.opts.replaced.find((r) => r.post === u);
    if (u.kind === "func")
      cx.functions.push({ name: u.name, section, size: u.size, ...(rep ? { replaces: rep.preName } : {}) });
    else cx.data.push({ name: u.name, section, size: u.size });
  }
}

/** routePartRelocations routes the relocations inside the parts copied from shared data sections. */
function routePartRelocations(cx: ExtractContext): void {
  for (const [sec, list] of cx.parts)
    for (const r of cx.elf.relocations(sec)) {
      // Only relocations in the bytes copied, so not unitAt: a zero-size unit has none.
      const off = Number(r.offset);
      const u = list.find((x) => off >= x.start && off < x.start + x.size);
      if (!u) continue;
      const part = cx.partOf.get(u)!;
      route(cx, sec, part.ref, r, part.offset + off - u.start);
    }
}

/** routeQueuedSections routes the relocations of the sections copied whole; routing can copy more. */
function routeQueuedSections(cx: ExtractContext): void {
  for (; cx.routed < cx.queue.length; cx.routed++) {
    const sec = cx.queue[cx.routed];
    const ref = cx.outSec.get(sec.index)!.ref;
    for (const r of cx.elf.relocations(sec)) route(cx, sec, ref, r, Number(r.offset));
  }
}

/** route decides where one relocation of a copied section goes (see the top of the file). */
function route(
  cx: ExtractContext,
  from: ElfSection,
  fromRef: SectionRef,
  r: ElfRela,
  outOffset: number,
): void {
  if (r.type === R_X86_64.NONE) return;
  const info = relocInfo(r.type);
  if (!info) {
    const where = `${from.name}+0x${r.offset.toString(16)}`;
    cx.refuse(from.name, `relocation type ${relocTypeName(r.type)} at ${where} is not supported`);
    return;
  }
  const sym = cx.elf.symbols[r.sym];
  const defined = sym.shndx !== SHN.UNDEF && sym.shndx < SHN.LORESERVE;
  if (!defined || (sym.bind !== STB.LOCAL && sym.type !== STT.SECTION)) {
    routeToGlobal(cx, fromRef, r, sym, outOffset);
    return;
  }
  const target = cx.elf.sections[sym.shndx];
  const have = cx.outSec.get(target.index);
  if (have || isCopyable(cx.post, target)) {
    const ref = have?.ref ?? cx.include(target);
    cx.relocate(fromRef, outOffset, r.type, ref, r.addend + sym.value);
    return;
  }
  routeToObjectUnit(cx, from, fromRef, r, outOffset, info.pcRelative);
}

/** routeToGlobal points a reference to a global at our copy, the loader's resolution, or the core. */
function routeToGlobal(
  cx: ExtractContext,
  fromRef: SectionRef,
  r: ElfRela,
  sym: ElfSymbol,
  outOffset: number,
) {
  const mine = cx.units.find((u) => u.name === sym.name && u.global && cx.isPlaced(u));
  if (mine) {
    const place = cx.placeOf(mine);
    cx.relocate(fromRef, outOffset, r.type, place.ref, r.addend + BigInt(place.offset));
  } else if (cx.opts.exported(sym.name) || cx.opts.updateGlobals.has(sym.name)) {
    // Resolved by the module loader (an export) or when the update module is linked.
    cx.w.addRelocation(fromRef, {
      offset: outOffset,
      type: r.type,
      symbol: cx.undef(sym.name),
      addend: r.addend,
    });
  } else {
    const k = { ref: fromRef, offset: outOffset, type: r.type, addend: r.addend };
    addKernelReloc(cx, { ...k, symbol: sym.name, local: false, preSymbol: sym.name });
  }
}

/**
 * routeToObjectUnit routes a reference to a named unit of this object, found as the diff found
 * it: to its copy if it is a copied part, else to the kernel's (the core writes the field).
 */
function routeToObjectUnit(
  cx: ExtractContext,
  from: ElfSection,
  fromRef: SectionRef,
  r: ElfRela,
  outOffset: number,
  pcRelative: boolean,
): void {
  const sym = cx.elf.symbols[r.sym];
  const target = cx.elf.sections[sym.shndx];
  const at = sym.value + r.addend;
  const u = unitReferredTo(cx.post.unitsIn(target), sym, at, pcRelative);
  if (!u) {
    const where = `${from.name}+0x${r.offset.toString(16)}`;
    cx.refuse(from.name, `cannot tell what ${where} refers to in ${target.name}`);
    return;
  }
  const part = cx.partOf.get(u);
  if (part) {
    cx.relocate(fromRef, outOffset, r.type, part.ref, at - BigInt(u.start) + BigInt(part.offset));
    return;
  }
  const pre = cx.opts.preNameOf(u);
  if (pre === undefined) {
    cx.refuse(u.name, "is used by the new code but exists only in the patched build and is not copied");
    return;
  }
  const k = { ref: fromRef, offset: outOffset, type: r.type, addend: at - BigInt(u.start) };
  addKernelReloc(cx, { ...k, symbol: u.name, local: !u.global, preSymbol: pre });
}

/** addKernelReloc lists a field for the core to write at apply time, if the core can write its type. */
function addKernelReloc(
  cx: ExtractContext,
  k: {
    ref: SectionRef;
    offset: number;
    type: number;
    addend: bigint;
    symbol: string;
    local: boolean;
    preSymbol: string;
  },
): void {
  const section = cx.sectionNameOf(k.ref);
  // Unused alternative replacements are never copied into code: their fields can stay unset
  // (checkAltReplacements refuses those of the replacements the new code uses).
  if (REPLACEMENT_SECTIONS.some((s) => section.startsWith(s))) {
    cx.altKernel.push({ symbol: k.symbol, offset: k.offset });
    return;
  }
  const typeName = relocTypeName(k.type);
  if (!isKernelRelocType(typeName)) {
    cx.refuse(
      k.symbol,
      `is referred to by a ${typeName} relocation in ${section}+0x${k.offset.toString(16)}, which the core cannot write into the running kernel's addresses`,
    );
    return;
  }
  cx.relocs.push({
    section,
    offset: k.offset,
    type: typeName,
    addend: k.addend.toString(),
    symbol: k.symbol,
    local: k.local,
    object: cx.object,
    preSymbol: k.preSymbol,
  });
}

/**
 * keepSpecialEntries copies the entries of special sections that describe copied code, and
 * refuses other tables whose entries for it change.
 */
function keepSpecialEntries(cx: ExtractContext): void {
  const copiedText = new Set<number>(
    cx.units.filter((u) => hasFlag(u.section, SHF.EXECINSTR)).map((u) => u.section.index),
  );
  for (const sec of cx.elf.sections) {
    if (sec.type === SHT.RELA || cx.outSec.has(sec.index) || !hasFlag(sec, SHF.ALLOC)) continue;
    const rs = cx.elf.relocations(sec);
    if (!rs.some((r) => copiedText.has(cx.elf.symbols[r.sym].shndx))) continue;
    if (DROPPED.test(sec.name)) continue;
    // Code and data of the kernel that refer to replaced code (callers, tables of function
    // pointers) keep pointing at the old function, whose entry jumps to the new one.
    if (cx.post.unitsIn(sec).length > 0) continue;
    const layout = kernelSection(sec.name);
    if (layout?.copied) copyEntries(cx, sec, layout, rs, copiedText);
    else refuseTable(cx, sec);
  }
}

/** refuseTable refuses a table the running kernel built at boot, unless the update leaves it as it was. */
function refuseTable(cx: ExtractContext, sec: ElfSection): void {
  // A table the kernel already has (PCI quirks, parameters...) pointing at functions this
  // update replaces: its entries stay the kernel's, and reach the new code through the jump.
  if (cx.opts.pre && sameTable(cx.opts.pre, cx.post, sec, cx.opts.preNameOf)) return;
  if (sec.name === "__jump_table")
    cx.refuse(
      sec.name,
      "the new code has jump labels (asm goto) that the jump-label override did not remove",
    );
  else
    cx.refuse(
      sec.name,
      `adds or changes entries of ${sec.name}, a table the running kernel built at boot, which a live update cannot change`,
    );
}

/** copyEntries writes a special section of the entries that describe copied code, and routes their relocations. */
function copyEntries(
  cx: ExtractContext,
  sec: ElfSection,
  layout: SectionLayout,
  rs: ElfRela[],
  copiedText: Set<number>,
): void {
  const bytes = cx.elf.sectionData(sec);
  const keep: number[] = [];
  for (const r of rs) {
    const off = Number(r.offset);
    if (off % layout.entry === layout.anchor && copiedText.has(cx.elf.symbols[r.sym].shndx))
      keep.push((off - layout.anchor) / layout.entry);
  }
  keep.sort((a, b) => a - b);
  const ref = cx.w.addSection({
    name: sec.name,
    type: sec.type,
    flags: copiedFlags(sec),
    data: pickEntries(bytes, keep, layout.entry),
    addralign: sec.addralign || 1n,
    entsize: sec.entsize,
  });
  cx.outSec.set(sec.index, { ref, name: sec.name });
  const slot = new Map(keep.map((e, k) => [e, k]));
  for (const r of rs) {
    const k = slot.get(Math.floor(Number(r.offset) / layout.entry));
    if (k !== undefined) route(cx, sec, ref, r, k * layout.entry + (Number(r.offset) % layout.entry));
  }
  if (layout.parallel) {
    const { section, entry } = layout.parallel;
    const p = cx.parallelKeep.get(section) ?? { entry, keep: [] };
    p.keep.push(...keep);
    cx.parallelKeep.set(section, p);
  }
  if (layout.replacement) noteReplacements(cx, layout, layout.replacement, bytes, keep, rs);
}

/** noteReplacements records where the replacement instructions of kept alternative entries are. */
function noteReplacements(
  cx: ExtractContext,
  layout: SectionLayout,
  repl: NonNullable<SectionLayout["replacement"]>,
  bytes: Uint8Array,
  keep: number[],
  rs: ElfRela[],
): void {
  for (const e of keep) {
    const entry = e * layout.entry;
    const r = rs.find((x) => Number(x.offset) === entry + repl.field);
    // The field is `.long replacement - .`: S + A - P, so S + A is where the replacement is.
    if (r)
      cx.altRanges.push({
        start: Number(cx.elf.symbols[r.sym].value + r.addend),
        len: bytes[entry + repl.lengthByte],
      });
  }
}

/**
 * checkAltReplacements refuses kernel relocations in the replacement instructions the new code
 * uses: the loader applies alternatives before the core can write them.
 */
function checkAltReplacements(cx: ExtractContext): void {
  for (const r of cx.altKernel)
    if (cx.altRanges.some((a) => r.offset >= a.start && r.offset < a.start + a.len))
      cx.refuse(
        r.symbol,
        `an alternative instruction in the new code refers to ${r.symbol}, which is not exported: not supported`,
      );
}

/** copyParallelTables copies the entries of relocation-less tables (.orc_unwind) parallel to kept ones. */
function copyParallelTables(cx: ExtractContext): void {
  for (const [name, { entry, keep }] of cx.parallelKeep) {
    const sec = cx.elf.sectionByName(name);
    if (!keep.length || !sec) continue;
    cx.w.addSection({
      name,
      type: sec.type,
      flags: sec.flags,
      data: pickEntries(cx.elf.sectionData(sec), keep, entry),
      addralign: sec.addralign || 1n,
    });
  }
}

/** finish writes the module object; its imports are the undefined symbols the update does not define. */
function finish(cx: ExtractContext): Extraction {
  const imports = [...cx.undefSyms.keys()].filter((n) => !cx.opts.updateGlobals.has(n));
  const { functions, data, relocs, refusals } = cx;
  return { bytes: cx.w.write(), functions, data, relocs, refusals, imports };
}

/** isCopyable says whether a section a copied one refers to is copied along (anonymous data, strings). */
function isCopyable(post: ObjectUnits, sec: ElfSection): boolean {
  if (!hasFlag(sec, SHF.ALLOC)) return false;
  if (hasFlag(sec, SHF.MERGE)) return true;
  // .altinstr_aux holds static_cpu_has() fallbacks that jump back into their function.
  if (
    /^\.rodata\.__func__|^__dyndbg|^\.data\.once$|^\.altinstr_replacement$|^\.altinstr_aux$|^\.rodata\.cst/.test(
      sec.name,
    )
  )
    return true;
  // Anonymous read-only data (no named object in it), e.g. a switch table.
  return !hasFlag(sec, SHF.WRITE) && !hasFlag(sec, SHF.EXECINSTR) && post.unitsIn(sec).length === 0;
}

/** hasFlag tests one SHF_* bit of a section. */
function hasFlag(sec: ElfSection, flag: number): boolean {
  return (sec.flags & BigInt(flag)) !== 0n;
}

/** copiedFlags are a section's flags for its copy: no group, no sh_info link. */
function copiedFlags(sec: ElfSection): bigint {
  return sec.flags & ~BigInt(SHF.GROUP | SHF.INFO_LINK);
}

/** pickEntries gathers entries `keep` (by index) of a table of `size`-byte entries. */
function pickEntries(bytes: Uint8Array, keep: number[], size: number): Uint8Array {
  const out = new Uint8Array(keep.length * size);
  for (const [k, e] of keep.entries()) out.set(bytes.subarray(e * size, (e + 1) * size), k * size);
  return out;
}

/** refName names what a relocation refers to: a function or object (by its pre name), or a symbol. */
function refName(
  units: ObjectUnits,
  r: ElfRela,
  rename: (u: Unit) => string | undefined = (u) => u.name,
): string {
  const elf = units.elf;
  const sym = elf.symbols[r.sym];
  if (sym.shndx === SHN.UNDEF || sym.shndx >= SHN.LORESERVE) return `${sym.name}+${r.addend}`;
  const at = sym.value + r.addend;
  const list = units.unitsIn(elf.sections[sym.shndx]);
  const u = list.find((x) => x.symbol.index === sym.index) ?? unitAt(list, at);
  if (!u) return `${elf.sections[sym.shndx].name}+${at}`;
  return `${rename(u) ?? `new ${u.name}`}+${at - BigInt(u.start)}`;
}

/**
 * sameTable says whether a section of unknown layout is the same in pre and post: same bytes
 * outside relocated fields, and relocations at the same places to the same things.
 */
function sameTable(
  pre: ObjectUnits,
  post: ObjectUnits,
  sec: ElfSection,
  preNameOf: (u: Unit) => string | undefined,
): boolean {
  const a = pre.elf.sectionByName(sec.name);
  if (!a || a.size !== sec.size) return false;
  const ra = [...pre.elf.relocations(a)].sort((x, y) => Number(x.offset - y.offset));
  const rb = [...post.elf.relocations(sec)].sort((x, y) => Number(x.offset - y.offset));
  if (ra.length !== rb.length) return false;
  const da = Uint8Array.from(pre.elf.sectionData(a));
  const db = Uint8Array.from(post.elf.sectionData(sec));
  for (let i = 0; i < ra.length; i++) {
    if (ra[i].offset !== rb[i].offset || ra[i].type !== rb[i].type) return false;
    if (refName(pre, ra[i]) !== refName(post, rb[i], preNameOf)) return false;
    const size = relocInfo(ra[i].type)?.size ?? 0;
    da.fill(0, Number(ra[i].offset), Number(ra[i].offset) + size);
    db.fill(0, Number(rb[i].offset), Number(rb[i].offset) + size);
  }
  return Buffer.from(da).equals(Buffer.from(db));
}
