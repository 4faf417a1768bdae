// Extracts the replacement code of one object into a new relocatable object for the update
// module. The sections of replaced and new functions (and new data) are copied; so are the
// anonymous read-only sections they use (strings, constants). Each relocation is sorted:
//   - internal: to something copied into the module: kept, against the copy;
//   - exported: to a symbol the kernel exports: kept as an undefined symbol, so the module
//     loader resolves it (this also keeps ftrace's __fentry__ calls and return thunks valid);
//   - kernel: to anything else (static functions and data of the object, unexported globals):
//     removed from the object and listed for apply time, where run-pre matching has learned
//     the address. The shipped module is never modified; the core module writes these fields.
// Entries of special sections (ftrace, ORC, bug and exception tables, alternatives...) are
// kept when they describe copied code; an unknown section that refers to copied code is
// refused rather than silently dropped.

import type { ObjectUnits, Unit } from "../diff/index.js";
import { R_X86_64, relocInfo, relocTypeName, SHF, SHN, SHT, STB, STT } from "../elf/constants.js";
import type { ElfFile, ElfRela, ElfSection } from "../elf/reader.js";
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

/** Entry layout of the special sections whose entries are filtered per function. */
const SPECIAL: Record<string, { size: number; anchor: number }> = {
  __mcount_loc: { size: 8, anchor: 0 },
  ".orc_unwind_ip": { size: 4, anchor: 0 },
  __bug_table: { size: 12, anchor: 0 },
  __ex_table: { size: 12, anchor: 0 },
  ".return_sites": { size: 4, anchor: 0 },
  ".retpoline_sites": { size: 4, anchor: 0 },
  ".smp_locks": { size: 4, anchor: 0 },
  ".altinstructions": { size: 12, anchor: 0 },
  ".parainstructions": { size: 16, anchor: 0 },
  ".call_sites": { size: 4, anchor: 0 },
};
// Sections whose entries for copied code are deliberately left out.
const DROPPED =
  /^\.discard|^\.ksplice_hook\.|^\.static_call_sites$|^\.note|^\.comment$|^__ksymtab|^___ksymtab|^__kcrctab|^\.init\.|^\.exit\.|^\.BTF|^\.debug|^\.llvm|^__patchable/;

function rangeOf(u: Unit) {
  return { start: u.start, end: u.start + Math.max(u.size, 1) };
}

/** extractObject builds the replacement object for one kernel object. */
export function extractObject(opts: {
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
}): Extraction {
  const { post, object } = opts;
  const elf: ElfFile = post.elf;
  const w = new ObjectWriter();
  const refusals: Refusal[] = [];
  const relocs: KernelReloc[] = [];
  const outSec = new Map<number, { ref: SectionRef; name: string }>();
  const undefSyms = new Map<string, SymbolRef>();
  const queue: ElfSection[] = [];

  const uniqueName = (name: string) => {
    let n = name;
    for (let i = 1; opts.usedNames.has(n); i++) n = `${name}.ksplice${i}`;
    opts.usedNames.add(n);
    return n;
  };
  const include = (sec: ElfSection): SectionRef => {
    const have = outSec.get(sec.index);
    if (have) return have.ref;
    // Merged string and constant sections keep their name so the linker can merge them.
    const mergeable = (sec.flags & BigInt(SHF.MERGE)) !== 0n;
    const name = mergeable ? sec.name : uniqueName(sec.name);
    const ref = w.addSection({
      name,
      type: sec.type,
      flags: sec.flags & ~BigInt(SHF.GROUP | SHF.INFO_LINK),
      data: sec.type === SHT.NOBITS ? undefined : elf.sectionData(sec),
      size: sec.type === SHT.NOBITS ? sec.size : undefined,
      addralign: sec.addralign || 1n,
      entsize: sec.entsize,
    });
    outSec.set(sec.index, { ref, name });
    queue.push(sec);
    return ref;
  };

  const partNames = new Map<SectionRef, string>();
  const sectionNameOf = (ref: SectionRef) =>
    partNames.get(ref) ?? [...outSec.values()].find((s) => s.ref === ref)!.name;

  const functions: ExtractedFunction[] = [];
  const data: Extraction["data"] = [];
  const units: Unit[] = [...opts.replaced.map((r) => r.post), ...opts.added, ...opts.addedData];
  // Where each copied unit is: its section copied whole, or a part of a shared data section.
  const partOf = new Map<Unit, { ref: SectionRef; offset: number }>();
  const parts = new Map<ElfSection, Unit[]>();
  for (const u of units) {
    const others = post.unitsIn(u.section).filter((x) => x !== u && !units.includes(x) && x.size > 0);
    // Code in a section of its own name (__sched: .sched.text) shares it with its neighbours,
    // whose calls to each other the assembler resolved: the section is copied whole, and only
    // the changed functions are redirected to it. Per-call-site data (WARN_ONCE flags, pr_debug
    // descriptors) is copied whole too. New data in a section shared with the kernel's own
    // (__read_mostly, __ro_after_init) is copied alone, into a section of its own.
    const whole =
      (u.section.flags & BigInt(SHF.EXECINSTR)) !== 0n || /^\.data\.once$|^__dyndbg$/.test(u.section.name);
    if (!others.length || whole) include(u.section);
    else if (/^\.data\.\.percpu/.test(u.section.name))
      refusals.push({
        object,
        symbol: u.name,
        reason: `is a new per-CPU variable (${u.section.name}); adding per-CPU data in an update is not supported yet`,
      });
    else parts.set(u.section, [...(parts.get(u.section) ?? []), u]);
  }
  for (const [sec, list] of parts) {
    const align = Number(sec.addralign || 1n);
    let size = 0;
    const at = list.map((u) => {
      const off = Math.ceil(size / align) * align;
      size = off + u.size;
      return off;
    });
    const bytes = new Uint8Array(size);
    if (sec.type !== SHT.NOBITS) for (const [i, u] of list.entries()) bytes.set(u.bytes, at[i]);
    const name = uniqueName(sec.name);
    const ref = w.addSection({
      name,
      type: sec.type,
      flags: sec.flags & ~BigInt(SHF.GROUP | SHF.INFO_LINK),
      data: sec.type === SHT.NOBITS ? undefined : bytes,
      size: sec.type === SHT.NOBITS ? BigInt(size) : undefined,
      addralign: sec.addralign || 1n,
    });
    partNames.set(ref, name);
    for (const [i, u] of list.entries()) partOf.set(u, { ref, offset: at[i] });
  }
  const isPlaced = (u: Unit) => partOf.has(u) || outSec.has(u.section.index);
  /** placeOf says where a copied unit's bytes start in the module object. */
  const placeOf = (u: Unit) => partOf.get(u) ?? { ref: outSec.get(u.section.index)!.ref, offset: u.start };
  // Symbols for the copied units, local so that nothing clashes with kernel exports; a global
  // the update adds stays global, for the update's other objects that call it.
  const isNew = new Set([...opts.added, ...opts.addedData]);
  for (const u of units) {
    if (!isPlaced(u)) continue; // refused above
    const place = placeOf(u);
    const section = sectionNameOf(place.ref);
    w.addSymbol({
      name: u.name,
      value: place.offset,
      size: u.size,
      bind: u.global && isNew.has(u) && opts.updateGlobals.has(u.name) ? STB.GLOBAL : STB.LOCAL,
      type: u.kind === "func" ? STT.FUNC : STT.OBJECT,
      section: place.ref,
    });
    const rep = opts.replaced.find((r) => r.post === u);
    if (u.kind === "func")
      functions.push({ name: u.name, section, size: u.size, ...(rep ? { replaces: rep.preName } : {}) });
    else data.push({ name: u.name, section, size: u.size });
  }

  const isCopyable = (sec: ElfSection) => {
    if ((sec.flags & BigInt(SHF.ALLOC)) === 0n) return false;
    if ((sec.flags & BigInt(SHF.MERGE)) !== 0n) return true;
    // .altinstr_aux holds static_cpu_has() fallbacks that jump back into their function.
    if (
      /^\.rodata\.__func__|^__dyndbg|^\.data\.once$|^\.altinstr_replacement$|^\.altinstr_aux$|^\.rodata\.cst/.test(
        sec.name,
      )
    )
      return true;
    // Anonymous read-only data (no named object in it), e.g. a switch table.
    return (
      (sec.flags & BigInt(SHF.WRITE)) === 0n &&
      (sec.flags & BigInt(SHF.EXECINSTR)) === 0n &&
      post.unitsIn(sec).length === 0
    );
  };
  const undef = (name: string) => {
    let s = undefSyms.get(name);
    if (!s) {
      s = w.addSymbol({ name, bind: STB.GLOBAL, section: SHN.UNDEF });
      undefSyms.set(name, s);
    }
    return s;
  };

  /** route decides where one relocation of a copied section goes. */
  const route = (from: ElfSection, fromRef: SectionRef, r: ElfRela, outOffset: number) => {
    const sym = elf.symbols[r.sym];
    const type = r.type;
    if (type === R_X86_64.NONE) return;
    const info = relocInfo(type);
    if (!info) {
      refusals.push({
        object,
        symbol: from.name,
        reason: `relocation type ${relocTypeName(type)} at ${from.name}+0x${r.offset.toString(16)} is not supported`,
      });
      return;
    }
    const defined = sym.shndx !== SHN.UNDEF && sym.shndx < SHN.LORESERVE;
    if (!defined || (sym.bind !== STB.LOCAL && sym.type !== STT.SECTION)) {
      // A global: our own copy if we copied it, the kernel's otherwise.
      const mine = units.find((u) => u.name === sym.name && u.global && isPlaced(u));
      if (mine) {
        const place = placeOf(mine);
        w.addRelocation(fromRef, {
          offset: outOffset,
          type,
          symbol: w.sectionSymbol(place.ref),
          addend: r.addend + BigInt(place.offset),
        });
      } else if (opts.exported(sym.name) || opts.updateGlobals.has(sym.name)) {
        // Resolved by the module loader (an export) or when the update module is linked.
        w.addRelocation(fromRef, { offset: outOffset, type, symbol: undef(sym.name), addend: r.addend });
      } else {
        kernel(fromRef, outOffset, type, r.addend, sym.name, false, sym.name);
      }
      return;
    }
    const target = elf.sections[sym.shndx];
    const have = outSec.get(target.index);
    if (have || isCopyable(target)) {
      const ref = have?.ref ?? include(target);
      w.addRelocation(fromRef, {
        offset: outOffset,
        type,
        symbol: w.sectionSymbol(ref),
        addend: r.addend + sym.value,
      });
      return;
    }
    // A named unit of this object that stays in the kernel: find it as the diff did.
    const at = sym.value + r.addend;
    const adj = info.pcRelative ? [4n, 5n, 6n, 8n, 12n] : [0n];
    const list = post.unitsIn(target);
    let u: Unit | undefined =
      sym.type === STT.FUNC || sym.type === STT.OBJECT
        ? list.find((x) => x.symbol.index === sym.index)
        : undefined;
    for (const a of adj) {
      if (u) break;
      u = list.find((x) => BigInt(rangeOf(x).start) <= at + a && at + a < BigInt(rangeOf(x).end));
    }
    if (!u && list.length === 1) u = list[0];
    if (!u) {
      refusals.push({
        object,
        symbol: from.name,
        reason: `cannot tell what ${from.name}+0x${r.offset.toString(16)} refers to in ${target.name}`,
      });
      return;
    }
    const part = partOf.get(u);
    if (part) {
      w.addRelocation(fromRef, {
        offset: outOffset,
        type,
        symbol: w.sectionSymbol(part.ref),
        addend: at - BigInt(u.start) + BigInt(part.offset),
      });
      return;
    }
    const pre = opts.preNameOf(u);
    if (pre === undefined) {
      refusals.push({
        object,
        symbol: u.name,
        reason: `is used by the new code but exists only in the patched build and is not copied`,
      });
      return;
    }
    kernel(fromRef, outOffset, type, at - BigInt(u.start), u.name, !u.global, pre);
  };

  const altKernel: KernelReloc[] = [];
  const altRanges: Array<{ start: number; len: number }> = [];
  const kernel = (
    ref: SectionRef,
    offset: number,
    type: number,
    addend: bigint,
    symbol: string,
    local: boolean,
    preSymbol: string,
  ) => {
    const typeName = relocTypeName(type);
    if (!isKernelRelocType(typeName)) {
      refusals.push({
        object,
        symbol,
        reason: `is referred to by a ${typeName} relocation in ${sectionNameOf(ref)}+0x${offset.toString(16)}, which the core cannot write into the running kernel's addresses`,
      });
      return;
    }
    const rec: KernelReloc = {
      section: sectionNameOf(ref),
      offset,
      type: typeName,
      addend: addend.toString(),
      symbol,
      local,
      object,
      preSymbol,
    };
    // Unused alternative replacements are never copied into code: their fields can stay unset.
    if (rec.section.startsWith(".altinstr_replacement"))
      altKernel.push({ ...rec, section: ".altinstr_replacement" });
    else relocs.push(rec);
  };

  // Relocations inside the copied parts of shared data sections.
  for (const [sec, list] of parts)
    for (const r of elf.relocations(sec)) {
      const u = list.find((x) => Number(r.offset) >= x.start && Number(r.offset) < x.start + x.size);
      if (u) route(sec, partOf.get(u)!.ref, r, partOf.get(u)!.offset + Number(r.offset) - u.start);
    }
  // Copy relocations of every included section; routing can pull in more sections.
  let drained = 0;
  const drain = () => {
    for (; drained < queue.length; drained++) {
      const sec = queue[drained];
      const ref = outSec.get(sec.index)!.ref;
      for (const r of elf.relocations(sec)) route(sec, ref, r, Number(r.offset));
    }
  };
  drain();

  // Special sections: keep the entries that describe copied code.
  const unitSections = new Set<number>(units.map((u) => u.section.index));
  const copiedText = (secIndex: number) =>
    unitSections.has(secIndex) && (elf.sections[secIndex].flags & BigInt(SHF.EXECINSTR)) !== 0n;
  const orcKeep: number[] = [];
  for (const sec of elf.sections) {
    if (sec.type === SHT.RELA || outSec.has(sec.index) || (sec.flags & BigInt(SHF.ALLOC)) === 0n) continue;
    const rs = elf.relocations(sec);
    const touches = rs.filter((r) => {
      const s = elf.symbols[r.sym];
      return s.shndx < elf.sections.length && copiedText(s.shndx);
    });
    if (touches.length === 0) continue;
    if (DROPPED.test(sec.name)) continue;
    // Code and data of the kernel that refer to replaced code (callers, tables of function
    // pointers) keep pointing at the old function, whose entry jumps to the new one.
    if (post.unitsIn(sec).length > 0) continue;
    const spec = SPECIAL[sec.name];
    if (!spec) {
      // A table the kernel already has (PCI quirks, parameters...) pointing at functions this
      // update replaces: its entries stay the kernel's, and reach the new code through the jump.
      if (opts.pre && sameTable(opts.pre, post, sec, opts.preNameOf)) continue;
      if (sec.name === "__jump_table")
        refusals.push({
          object,
          symbol: sec.name,
          reason: "the new code has jump labels (asm goto) that the jump-label override did not remove",
        });
      else
        refusals.push({
          object,
          symbol: sec.name,
          reason: `adds or changes entries of ${sec.name}, a table the running kernel built at boot, which a live update cannot change`,
        });
      continue;
    }
    const bytes = elf.sectionData(sec);
    const keep: number[] = [];
    for (const r of rs) {
      if (Number(r.offset) % spec.size !== spec.anchor) continue;
      const s = elf.symbols[r.sym];
      if (s.shndx < elf.sections.length && copiedText(s.shndx)) keep.push(Number(r.offset) / spec.size);
    }
    keep.sort((a, b) => a - b);
    const out = new Uint8Array(keep.length * spec.size);
    for (const [k, e] of keep.entries())
      out.set(bytes.subarray(e * spec.size, (e + 1) * spec.size), k * spec.size);
    const ref = w.addSection({
      name: sec.name,
      type: sec.type,
      flags: sec.flags & ~BigInt(SHF.GROUP | SHF.INFO_LINK),
      data: out,
      addralign: sec.addralign || 1n,
      entsize: sec.entsize,
    });
    outSec.set(sec.index, { ref, name: sec.name });
    const slot = new Map(keep.map((e, k) => [e, k]));
    for (const r of rs) {
      const e = Math.floor(Number(r.offset) / spec.size);
      const k = slot.get(e);
      if (k === undefined) continue;
      route(sec, ref, r, k * spec.size + (Number(r.offset) % spec.size));
    }
    if (sec.name === ".orc_unwind_ip") orcKeep.push(...keep);
    if (sec.name === ".altinstructions") {
      for (const e of keep) {
        const v = new DataView(bytes.buffer, bytes.byteOffset + e * spec.size, spec.size);
        const repl = rs.find((r) => Number(r.offset) === e * spec.size + 4);
        // The field is `.long replacement - .`: S + A - P, so S + A is where the replacement is.
        if (repl)
          altRanges.push({ start: Number(elf.symbols[repl.sym].value + repl.addend), len: v.getUint8(11) });
      }
    }
  }
  drain();
  // The loader applies alternatives before the core can write kernel relocations, so a
  // replacement instruction used by the new code must not need one.
  for (const r of altKernel) {
    const hit = altRanges.find((a) => r.offset >= a.start && r.offset < a.start + a.len);
    if (hit)
      refusals.push({
        object,
        symbol: r.symbol,
        reason: `an alternative instruction in the new code refers to ${r.symbol}, which is not exported: not supported`,
      });
  }
  // ORC: .orc_unwind entries (6 bytes, no relocations) run parallel to .orc_unwind_ip.
  const orc = elf.sectionByName(".orc_unwind");
  if (orcKeep.length && orc) {
    const bytes = elf.sectionData(orc);
    const out = new Uint8Array(orcKeep.length * 6);
    for (const [k, e] of orcKeep.entries()) out.set(bytes.subarray(e * 6, e * 6 + 6), k * 6);
    w.addSection({
      name: ".orc_unwind",
      type: orc.type,
      flags: orc.flags,
      data: out,
      addralign: orc.addralign || 1n,
    });
  }
  const imports = [...undefSyms.keys()].filter((n) => !opts.updateGlobals.has(n));
  return { bytes: w.write(), functions, data, relocs, refusals, imports };
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
  const u =
    units.unitsIn(elf.sections[sym.shndx]).find((x) => x.symbol.index === sym.index) ??
    units
      .unitsIn(elf.sections[sym.shndx])
      .find((x) => BigInt(x.start) <= at && at < BigInt(x.start + Math.max(x.size, 1)));
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
