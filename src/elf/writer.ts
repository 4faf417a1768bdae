// Writer for new ELF64 x86-64 relocatable objects (ET_REL): chosen sections, symbols,
// relocations and COMDAT groups in, bytes out. Extraction (src/update/extract.ts) uses it to
// package replacement functions taken from a post object.
//
// The writer owns every table the linker reads: .symtab (locals first, sh_info the first
// non-local), .strtab and .shstrtab (each string stored once), one .rela.X per section with
// relocations (SHF_INFO_LINK, sh_link = .symtab, sh_info = X), .group sections and, once there are
// 0xff00 sections or more, .symtab_shndx with extended section numbering in section 0.
//
// It works in two passes, like gimli's object writer. plan() reserves everything first:
// section indices, symbol indices, string offsets, then file offsets in section order. write()
// then emits the bytes in exactly that order and checks that each piece lands at its reserved
// offset, so an index written into one table can never disagree with where the thing really is.
// Callers refer to sections and symbols through SectionRef/SymbolRef handles, never through
// numbers, since numbers only exist after layout.
import {
  EHDR_SIZE,
  ELFCLASS64,
  ELFDATA2LSB,
  EM_X86_64,
  ET,
  EV_CURRENT,
  GRP_COMDAT,
  RELA_SIZE,
  relocInfo,
  SHDR_SIZE,
  SHF,
  SHN,
  SHT,
  STB,
  STT,
  STV,
  SYM_SIZE,
  sectionTypeName,
} from "./constants.js";
import type { SectionIndex, SymbolIndex } from "./reader.js";

/** ElfWriteError reports a request the writer cannot turn into a valid object. */
export class ElfWriteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ElfWriteError";
  }
}

/** SectionRef is a handle to a section added to an ObjectWriter. */
export class SectionRef {
  /** @internal */
  constructor(
    readonly owner: ObjectWriter,
    readonly name: string,
    /** @internal position among the writer's sections */
    readonly id: number,
  ) {}
}

/** SymbolRef is a handle to a symbol added to an ObjectWriter. */
export class SymbolRef {
  /** @internal */
  constructor(
    readonly owner: ObjectWriter,
    readonly name: string,
    /** @internal position among the writer's symbols */
    readonly id: number,
  ) {}
}

/** SpecialSection is where a symbol lives when it is not in a section: undefined, absolute or common. */
export type SpecialSection = typeof SHN.UNDEF | typeof SHN.ABS | typeof SHN.COMMON;

/** NewSection describes a section to add; the writer owns symbol, string, relocation and group tables. */
export interface NewSection {
  name: string;
  /** sh_type; default SHT_PROGBITS. SYMTAB, STRTAB, RELA, REL, GROUP and SYMTAB_SHNDX are refused. */
  type?: number;
  /** sh_flags; SHF_GROUP is set by the writer for group members and may be left out. */
  flags?: bigint | number;
  /** Contents; required unless the type is SHT_NOBITS. */
  data?: Uint8Array;
  /** Size of a SHT_NOBITS section. */
  size?: bigint | number;
  addralign?: bigint | number;
  entsize?: bigint | number;
  /** sh_link as a section (e.g. the code section an SHF_LINK_ORDER section follows). */
  link?: SectionRef;
  /** sh_info as a section (written with SHF_INFO_LINK) or a plain number. */
  info?: SectionRef | number;
}

/** NewSymbol describes a symbol to add. */
export interface NewSymbol {
  name: string;
  value?: bigint | number;
  size?: bigint | number;
  /** STB_*; default STB_GLOBAL. */
  bind?: number;
  /** STT_*; default STT_NOTYPE. STT_SECTION symbols come from sectionSymbol. */
  type?: number;
  /** STV_*; default STV_DEFAULT. */
  visibility?: number;
  /** Defining section, or SHN_UNDEF (the default), SHN_ABS or SHN_COMMON. */
  section?: SectionRef | SpecialSection;
}

/** NewRela is one relocation to apply to a section. */
export interface NewRela {
  offset: bigint | number;
  /** R_X86_64_* type. */
  type: number;
  /** Target symbol; omitted means symbol 0 (only sensible with R_X86_64_NONE). */
  symbol?: SymbolRef;
  addend?: bigint | number;
}

interface SectionEntry {
  ref: SectionRef;
  spec: NewSection;
  relocs: NewRela[];
  /** The group this section belongs to, if any. */
  group?: GroupEntry;
}

interface SymbolEntry {
  ref: SymbolRef;
  spec: NewSymbol;
  /** Set for the STT_SECTION symbol of a section. */
  sectionSymbolOf?: SectionRef;
}

interface GroupEntry {
  signature: SymbolRef;
  members: SectionRef[];
  flags: number;
}

/** Kinds of section in the output, in the order plan() places them. */
type OutKind = "null" | "group" | "user" | "rela" | "symtab" | "shndx" | "strtab" | "shstrtab";

/** OutSection is one section of the output after layout: every number the write pass needs. */
interface OutSection {
  kind: OutKind;
  name: string;
  nameOffset: number;
  type: number;
  flags: bigint;
  size: bigint;
  offset: bigint;
  link: number;
  info: number;
  addralign: bigint;
  entsize: bigint;
  user?: SectionEntry;
  /** For rela: the section relocated; for group: the group. */
  relaOf?: SectionEntry;
  group?: GroupEntry;
}

/** Layout is the result of the reserve pass: every index and offset of the object to write. */
export interface Layout {
  /** Every output section in index order, with where its contents go. */
  sections: readonly { name: string; type: number; offset: bigint; size: bigint }[];
  /** Index of each added section in the output. */
  sectionIndex(ref: SectionRef): SectionIndex;
  /** Index of each added symbol in the output .symtab. */
  symbolIndex(ref: SymbolRef): SymbolIndex;
  /** Total file size. */
  fileSize: number;
}

/** WRITER_OWNED are the section types the writer builds itself from what it is given. */
export const WRITER_OWNED: ReadonlySet<number> = new Set<number>([
  SHT.SYMTAB,
  SHT.STRTAB,
  SHT.RELA,
  SHT.REL,
  SHT.GROUP,
  SHT.SYMTAB_SHNDX,
]);

/**
 * StringTableBuilder collects strings for a string table, storing each distinct string once.
 * Offsets are handed out as strings are added, so reserving a name is the same as adding it.
 */
export class StringTableBuilder {
  private readonly offsets = new Map<string, number>([["", 0]]);
  private readonly parts: Buffer[] = [Buffer.alloc(1)];
  private length = 1;

  /** add reserves a string and returns its offset. */
  add(s: string): number {
    const known = this.offsets.get(s);
    if (known !== undefined) return known;
    if (s.includes("\0")) throw new ElfWriteError(`string ${JSON.stringify(s)} contains a NUL byte`);
    const off = this.length;
    const b = Buffer.from(`${s}\0`, "latin1");
    this.parts.push(b);
    this.length += b.length;
    this.offsets.set(s, off);
    return off;
  }

  /** size is the table's length in bytes so far. */
  get size(): number {
    return this.length;
  }

  /** bytes returns the table. */
  bytes(): Uint8Array {
    return Buffer.concat(this.parts, this.length);
  }
}

/** ObjectWriter builds one ET_REL object. */
export class ObjectWriter {
  private readonly secs: SectionEntry[] = [];
  private readonly syms: SymbolEntry[] = [];
  private readonly groups: GroupEntry[] = [];
  private readonly sectionSyms = new Map<number, SymbolRef>();

  /** addSection adds a section and returns its handle. */
  addSection(spec: NewSection): SectionRef {
    const type = spec.type ?? SHT.PROGBITS;
    if (WRITER_OWNED.has(type))
      throw new ElfWriteError(
        `section ${spec.name}: the writer makes ${sectionTypeName(type)} sections itself`,
      );
    if (type === SHT.NOBITS) {
      if (spec.data && spec.data.length > 0)
        throw new ElfWriteError(`section ${spec.name}: SHT_NOBITS takes a size, not data`);
    } else if (!spec.data && spec.size !== undefined && BigInt(spec.size) !== 0n)
      throw new ElfWriteError(`section ${spec.name}: ${sectionTypeName(type)} needs data`);
    if (spec.link) this.own(spec.link, `section ${spec.name} sh_link`);
    if (spec.info instanceof SectionRef) this.own(spec.info, `section ${spec.name} sh_info`);
    const ref = new SectionRef(this, spec.name, this.secs.length);
    this.secs.push({ ref, spec: { ...spec, type }, relocs: [] });
    return ref;
  }

  /** addSymbol adds a symbol and returns its handle; order among locals and among globals is kept. */
  addSymbol(spec: NewSymbol): SymbolRef {
    if (spec.type === STT.SECTION)
      throw new ElfWriteError(`symbol ${spec.name}: use sectionSymbol() for STT_SECTION symbols`);
    if (spec.section instanceof SectionRef) this.own(spec.section, `symbol ${spec.name}`);
    else if (spec.section !== undefined && ![SHN.UNDEF, SHN.ABS, SHN.COMMON].includes(spec.section))
      throw new ElfWriteError(`symbol ${spec.name}: section ${spec.section} is not UNDEF, ABS or COMMON`);
    const bind = spec.bind ?? STB.GLOBAL;
    if (bind === STB.LOCAL && (spec.section === undefined || spec.section === SHN.UNDEF))
      throw new ElfWriteError(`symbol ${spec.name}: a local symbol must be defined`);
    const ref = new SymbolRef(this, spec.name, this.syms.length);
    this.syms.push({ ref, spec: { ...spec, bind } });
    return ref;
  }

  /** sectionSymbol returns the STT_SECTION symbol of a section, making it on first use. */
  sectionSymbol(sec: SectionRef): SymbolRef {
    this.own(sec, "sectionSymbol");
    let ref = this.sectionSyms.get(sec.id);
    if (!ref) {
      ref = new SymbolRef(this, "", this.syms.length);
      this.syms.push({
        ref,
        spec: { name: "", bind: STB.LOCAL, type: STT.SECTION, section: sec },
        sectionSymbolOf: sec,
      });
      this.sectionSyms.set(sec.id, ref);
    }
    return ref;
  }

  /** addRelocation adds a relocation to a section; the writer makes the .rela section. */
  addRelocation(sec: SectionRef, rela: NewRela): void {
    this.own(sec, "addRelocation");
    if (rela.symbol) this.own(rela.symbol, `relocation in ${sec.name}`);
    const e = this.secs[sec.id];
    const width = BigInt(relocInfo(rela.type)?.size ?? 0);
    const size = sectionSize(e.spec);
    const off = BigInt(rela.offset);
    if (off < 0n || off + width > size)
      throw new ElfWriteError(
        `relocation at ${sec.name}+0x${off.toString(16)} is outside the section (${size} bytes)`,
      );
    e.relocs.push(rela);
  }

  /** addGroup makes a section group (COMDAT unless flags say otherwise) with a signature symbol. */
  addGroup(signature: SymbolRef, members: SectionRef[], flags = GRP_COMDAT): void {
    this.own(signature, "addGroup signature");
    if (members.length === 0) throw new ElfWriteError(`group ${signature.name} has no members`);
    const g: GroupEntry = { signature, members: [...members], flags };
    for (const m of members) {
      this.own(m, `group ${signature.name}`);
      const e = this.secs[m.id];
      if (e.group) throw new ElfWriteError(`section ${m.name} is already in group ${e.group.signature.name}`);
      e.group = g;
    }
    this.groups.push(g);
  }

  private own(ref: SectionRef | SymbolRef, what: string): void {
    if (ref.owner !== this) throw new ElfWriteError(`${what}: ${ref.name} belongs to another writer`);
  }

  /** write lays the object out and returns its bytes. */
  write(): Uint8Array {
    const plan = this.plan();
    return this.emit(plan);
  }

  private plan(): Plan {
    // 1. Section indices: null, groups (before their members, as gas does), each section followed
    // by its relocations, then the tables.
    const out: OutSection[] = [];
    const blank = (kind: OutKind, name: string, type: number): OutSection => ({
      kind,
      name,
      nameOffset: 0,
      type,
      flags: 0n,
      size: 0n,
      offset: 0n,
      link: 0,
      info: 0,
      addralign: 1n,
      entsize: 0n,
    });
    out.push(blank("null", "", SHT.NULL));
    for (const g of this.groups) out.push({ ...blank("group", ".group", SHT.GROUP), group: g });
    const userIndex = new Array<number>(this.secs.length);
    const relaIndex = new Array<number>(this.secs.length).fill(0);
    for (const e of this.secs) {
      userIndex[e.ref.id] = out.length;
      out.push({ ...blank("user", e.spec.name, e.spec.type!), user: e });
      if (e.relocs.length > 0) {
        relaIndex[e.ref.id] = out.length;
        out.push({ ...blank("rela", `.rela${e.spec.name}`, SHT.RELA), relaOf: e });
      }
    }
    const symtabIndex = out.length;
    out.push(blank("symtab", ".symtab", SHT.SYMTAB));
    // Extended numbering once any index could reach SHN_LORESERVE (counting .symtab_shndx itself).
    const extended = out.length + 2 >= SHN.LORESERVE;
    if (extended) out.push(blank("shndx", ".symtab_shndx", SHT.SYMTAB_SHNDX));
    const strtabIndex = out.length;
    out.push(blank("strtab", ".strtab", SHT.STRTAB));
    const shstrtabIndex = out.length;
    out.push(blank("shstrtab", ".shstrtab", SHT.STRTAB));

    // 2. Symbol indices: the null symbol, locals in the order added, then everything else.
    const order: SymbolEntry[] = [];
    for (const s of this.syms) if (s.spec.bind === STB.LOCAL) order.push(s);
    const firstGlobal = order.length + 1;
    for (const s of this.syms) if (s.spec.bind !== STB.LOCAL) order.push(s);
    const symIndex = new Array<number>(this.syms.length);
    order.forEach((s, i) => {
      symIndex[s.ref.id] = i + 1;
    });

    // 3. Strings.
    const shstrtab = new StringTableBuilder();
    for (const s of out) s.nameOffset = shstrtab.add(s.name);
    const strtab = new StringTableBuilder();
    const symNames = order.map((s) => strtab.add(s.spec.name));

    // 4. Header fields and sizes of every section, then file offsets in index order.
    const nsyms = order.length + 1;
    for (const s of out) {
      switch (s.kind) {
        case "group": {
          const g = s.group!;
          s.link = symtabIndex;
          s.info = symIndex[g.signature.id];
          s.addralign = 4n;
          s.entsize = 4n;
          const members = g.members.flatMap((m) => (relaIndex[m.id] ? [m.id, -1] : [m.id]));
          s.size = BigInt(4 + 4 * members.length);
          break;
        }
        case "user": {
          const sp = s.user!.spec;
          s.flags = BigInt(sp.flags ?? 0) | (s.user!.group ? BigInt(SHF.GROUP) : 0n);
          s.size = sectionSize(sp);
          s.addralign = BigInt(sp.addralign ?? 1);
          s.entsize = BigInt(sp.entsize ?? 0);
          if (sp.link) s.link = userIndex[sp.link.id];
          if (sp.info instanceof SectionRef) {
            s.info = userIndex[sp.info.id];
            s.flags |= BigInt(SHF.INFO_LINK);
          } else s.info = sp.info ?? 0;
          break;
        }
        case "rela": {
          const e = s.relaOf!;
          s.flags = BigInt(SHF.INFO_LINK) | (e.group ? BigInt(SHF.GROUP) : 0n);
          s.link = symtabIndex;
          s.info = userIndex[e.ref.id];
          s.size = BigInt(e.relocs.length * RELA_SIZE);
          s.addralign = 8n;
          s.entsize = BigInt(RELA_SIZE);
          break;
        }
        case "symtab":
          s.link = strtabIndex;
          s.info = firstGlobal;
          s.size = BigInt(nsyms * SYM_SIZE);
          s.addralign = 8n;
          s.entsize = BigInt(SYM_SIZE);
          break;
        case "shndx":
          s.link = symtabIndex;
          s.size = BigInt(nsyms * 4);
          s.addralign = 4n;
          s.entsize = 4n;
          break;
        case "strtab":
          s.size = BigInt(strtab.size);
          break;
        case "shstrtab":
          s.size = BigInt(shstrtab.size);
          break;
        default:
          break;
      }
    }
    let pos = BigInt(EHDR_SIZE);
    for (const s of out) {
      if (s.kind === "null") continue;
      if (s.addralign > 1n && (s.addralign & (s.addralign - 1n)) !== 0n)
        throw new ElfWriteError(`section ${s.name}: alignment ${s.addralign} is not a power of two`);
      pos = alignUp(pos, s.addralign);
      s.offset = pos;
      if (s.type !== SHT.NOBITS) pos += s.size;
    }
    const shoff = alignUp(pos, 8n);
    const fileSize = shoff + BigInt(out.length * SHDR_SIZE);
    if (fileSize > 0x7fffffffn) throw new ElfWriteError(`object would be ${fileSize} bytes, too large`);

    const layout: Layout = {
      sections: out.map((s) => ({ name: s.name, type: s.type, offset: s.offset, size: s.size })),
      sectionIndex: (ref) => userIndex[ref.id] as SectionIndex,
      symbolIndex: (ref) => symIndex[ref.id] as SymbolIndex,
      fileSize: Number(fileSize),
    };
    return {
      out,
      order,
      symNames,
      symIndex,
      userIndex,
      relaIndex,
      strtab,
      shstrtab,
      shoff,
      shstrtabIndex,
      extended,
      layout,
    };
  }

  private emit(p: Plan): Uint8Array {
    const buf = new Uint8Array(p.layout.fileSize);
    const v = new DataView(buf.buffer);
    const n = p.out.length;
    // ELF header.
    buf.set([0x7f, 0x45, 0x4c, 0x46, ELFCLASS64, ELFDATA2LSB, EV_CURRENT], 0);
    v.setUint16(16, ET.REL, true);
    v.setUint16(18, EM_X86_64, true);
    v.setUint32(20, EV_CURRENT, true);
    v.setBigUint64(40, p.shoff, true);
    v.setUint16(52, EHDR_SIZE, true);
    v.setUint16(58, SHDR_SIZE, true);
    v.setUint16(60, n < SHN.LORESERVE ? n : 0, true);
    v.setUint16(62, p.shstrtabIndex < SHN.LORESERVE ? p.shstrtabIndex : SHN.XINDEX, true);

    // Section contents, in the reserved order; each must start where layout put it.
    let pos = BigInt(EHDR_SIZE);
    for (const s of p.out) {
      if (s.kind === "null") continue;
      pos = alignUp(pos, s.addralign);
      if (pos !== s.offset)
        throw new Error(`writer: ${s.name} at 0x${pos.toString(16)}, reserved 0x${s.offset.toString(16)}`);
      if (s.type === SHT.NOBITS) continue;
      const at = Number(s.offset);
      switch (s.kind) {
        case "group": {
          const g = s.group!;
          v.setUint32(at, g.flags, true);
          let o = at + 4;
          for (const m of g.members) {
            v.setUint32(o, p.userIndex[m.id], true);
            o += 4;
            if (p.relaIndex[m.id]) {
              v.setUint32(o, p.relaIndex[m.id], true);
              o += 4;
            }
          }
          break;
        }
        case "user":
          if (s.user!.spec.data) buf.set(s.user!.spec.data, at);
          break;
        case "rela":
          s.relaOf!.relocs.forEach((r, i) => {
            const o = at + i * RELA_SIZE;
            v.setBigUint64(o, BigInt(r.offset), true);
            v.setUint32(o + 8, r.type, true);
            v.setUint32(o + 12, r.symbol ? p.symIndex[r.symbol.id] : 0, true);
            v.setBigInt64(o + 16, BigInt(r.addend ?? 0), true);
          });
          break;
        case "symtab":
          p.order.forEach((e, i) => {
            const o = at + (i + 1) * SYM_SIZE;
            const sp = e.spec;
            v.setUint32(o, p.symNames[i], true);
            buf[o + 4] =
              ((sp.bind ?? STB.GLOBAL) << 4) |
              ((e.sectionSymbolOf ? STT.SECTION : (sp.type ?? STT.NOTYPE)) & 0xf);
            buf[o + 5] = (sp.visibility ?? STV.DEFAULT) & 3;
            v.setUint16(o + 6, shortIndex(p, sp.section), true);
            v.setBigUint64(o + 8, BigInt.asUintN(64, BigInt(sp.value ?? 0)), true);
            v.setBigUint64(o + 16, BigInt(sp.size ?? 0), true);
          });
          break;
        case "shndx":
          p.order.forEach((e, i) => {
            const sec = e.spec.section;
            if (sec instanceof SectionRef && p.userIndex[sec.id] >= SHN.LORESERVE)
              v.setUint32(at + (i + 1) * 4, p.userIndex[sec.id], true);
          });
          break;
        case "strtab":
          buf.set(p.strtab.bytes(), at);
          break;
        case "shstrtab":
          buf.set(p.shstrtab.bytes(), at);
          break;
        default:
          break;
      }
      pos += s.size;
    }

    // Section header table; section 0 carries the counts that do not fit the ELF header.
    pos = alignUp(pos, 8n);
    if (pos !== p.shoff)
      throw new Error(`writer: section headers at 0x${pos.toString(16)}, reserved 0x${p.shoff.toString(16)}`);
    p.out.forEach((s, i) => {
      const o = Number(p.shoff) + i * SHDR_SIZE;
      if (s.kind === "null") {
        if (n >= SHN.LORESERVE) v.setBigUint64(o + 32, BigInt(n), true);
        if (p.shstrtabIndex >= SHN.LORESERVE) v.setUint32(o + 40, p.shstrtabIndex, true);
        return;
      }
      v.setUint32(o, s.nameOffset, true);
      v.setUint32(o + 4, s.type, true);
      v.setBigUint64(o + 8, s.flags, true);
      v.setBigUint64(o + 24, s.offset, true);
      v.setBigUint64(o + 32, s.size, true);
      v.setUint32(o + 40, s.link, true);
      v.setUint32(o + 44, s.info, true);
      v.setBigUint64(o + 48, s.addralign, true);
      v.setBigUint64(o + 56, s.entsize, true);
    });
    return buf;
  }
}

interface Plan {
  out: OutSection[];
  order: SymbolEntry[];
  symNames: number[];
  symIndex: number[];
  userIndex: number[];
  relaIndex: number[];
  strtab: StringTableBuilder;
  shstrtab: StringTableBuilder;
  shoff: bigint;
  shstrtabIndex: number;
  extended: boolean;
  layout: Layout;
}

/** shortIndex is a symbol's 16-bit st_shndx: the section index, or SHN_XINDEX when it does not fit. */
function shortIndex(p: Plan, sec: NewSymbol["section"]): number {
  if (!(sec instanceof SectionRef)) return sec ?? SHN.UNDEF;
  const idx = p.userIndex[sec.id];
  return idx < SHN.LORESERVE ? idx : SHN.XINDEX;
}

function sectionSize(spec: NewSection): bigint {
  if ((spec.type ?? SHT.PROGBITS) === SHT.NOBITS) return BigInt(spec.size ?? 0);
  return BigInt(spec.data?.length ?? 0);
}

function alignUp(v: bigint, a: bigint): bigint {
  if (a <= 1n) return v;
  return (v + a - 1n) & ~(a - 1n);
}
