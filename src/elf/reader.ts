// Reader for ELF64 little-endian x86-64 files: relocatable objects, executables (vmlinux)
// and core files (/proc/kcore). Every structural problem is an ElfFormatError naming the
// file and the byte offset; no read goes out of range. Headers are parsed eagerly, section
// contents are read on demand through a ByteSource.
import {
  EHDR_SIZE,
  ELFCLASS64,
  ELFDATA2LSB,
  EM_X86_64,
  GRP_COMDAT,
  PHDR_SIZE,
  RELA_SIZE,
  SHDR_SIZE,
  SHN,
  SHT,
  STT,
  SYM_SIZE,
  sectionTypeName,
} from "./constants.js";
import { BufferSource, type ByteSource, FileSource } from "./source.js";
import { readFileSync } from "node:fs";

/** SectionIndex is an index into the section header table. */
export type SectionIndex = number & { readonly __brand: "SectionIndex" };
/** SymbolIndex is an index into a symbol table. */
export type SymbolIndex = number & { readonly __brand: "SymbolIndex" };

/** ElfFormatError reports malformed input, with the file and byte offset where it was found. */
export class ElfFormatError extends Error {
  constructor(
    readonly file: string,
    readonly offset: bigint | number,
    readonly reason: string,
  ) {
    super(`${file}: malformed ELF at byte offset 0x${offset.toString(16)}: ${reason}`);
    this.name = "ElfFormatError";
  }
}

export interface ElfHeader {
  type: number;
  machine: number;
  entry: bigint;
  phoff: bigint;
  shoff: bigint;
  flags: number;
  phnum: number;
  shnum: number;
  shstrndx: number;
}

export interface ElfSection {
  index: SectionIndex;
  name: string;
  type: number;
  flags: bigint;
  addr: bigint;
  offset: bigint;
  size: bigint;
  link: number;
  info: number;
  addralign: bigint;
  entsize: bigint;
  /** Offset of this section's header in the file, for error messages. */
  headerOffset: bigint;
}

export interface ElfSymbol {
  index: SymbolIndex;
  name: string;
  value: bigint;
  size: bigint;
  bind: number;
  type: number;
  visibility: number;
  /** Section index after resolving SHN_XINDEX; special values (ABS, COMMON, UNDEF) kept. */
  shndx: number;
}

export interface ElfRela {
  offset: bigint;
  type: number;
  sym: SymbolIndex;
  addend: bigint;
}

export interface ElfGroup {
  section: ElfSection;
  flags: number;
  /** The group's signature symbol name. */
  signature: string;
  members: SectionIndex[];
}

export interface ElfProgramHeader {
  type: number;
  flags: number;
  offset: bigint;
  vaddr: bigint;
  paddr: bigint;
  filesz: bigint;
  memsz: bigint;
  align: bigint;
}

/** ElfFile is a parsed ELF64 x86-64 file. */
export class ElfFile {
  readonly header: ElfHeader;
  readonly sections: ElfSection[];
  readonly programHeaders: ElfProgramHeader[];
  private symtabCache?: ElfSymbol[];
  private relaIndex?: Map<number, ElfSection[]>;

  private constructor(
    readonly source: ByteSource,
    header: ElfHeader,
  ) {
    this.header = header;
    this.sections = [];
    this.programHeaders = [];
  }

  /** parse reads an ELF file held in memory. */
  static parse(bytes: Uint8Array, name = "<buffer>"): ElfFile {
    return ElfFile.fromSource(new BufferSource(name, bytes));
  }

  /** open reads a file: wholly for small files, on demand for large or special ones. */
  static open(path: string): ElfFile {
    const src = new FileSource(path);
    if (src.size !== undefined && src.size < 64n * 1024n * 1024n) {
      src.close();
      return ElfFile.parse(readFileSync(path), path);
    }
    return ElfFile.fromSource(src);
  }

  /** fromSource parses the headers of an ELF file behind any ByteSource. */
  static fromSource(src: ByteSource): ElfFile {
    const file = src.name;
    const eh = src.read(0n, EHDR_SIZE);
    if (eh.length < 16) throw new ElfFormatError(file, eh.length, "file too short for the ELF identification");
    if (eh[0] !== 0x7f || eh[1] !== 0x45 || eh[2] !== 0x4c || eh[3] !== 0x46)
      throw new ElfFormatError(file, 0, "not an ELF file (bad magic)");
    if (eh[4] !== ELFCLASS64) throw new ElfFormatError(file, 4, `unsupported class ${eh[4]} (want ELFCLASS64)`);
    if (eh[5] !== ELFDATA2LSB) throw new ElfFormatError(file, 5, `unsupported data encoding ${eh[5]} (want little-endian)`);
    if (eh.length < EHDR_SIZE) throw new ElfFormatError(file, eh.length, "file too short for the ELF header");
    const v = view(eh);
    const header: ElfHeader = {
      type: v.getUint16(16, true),
      machine: v.getUint16(18, true),
      entry: v.getBigUint64(24, true),
      phoff: v.getBigUint64(32, true),
      shoff: v.getBigUint64(40, true),
      flags: v.getUint32(48, true),
      phnum: v.getUint16(56, true),
      shnum: v.getUint16(60, true),
      shstrndx: v.getUint16(62, true),
    };
    if (header.machine !== EM_X86_64) throw new ElfFormatError(file, 18, `unsupported machine ${header.machine} (want EM_X86_64)`);
    const ehsize = v.getUint16(52, true);
    if (ehsize !== 0 && ehsize < EHDR_SIZE) throw new ElfFormatError(file, 52, `bad e_ehsize ${ehsize}`);
    if (header.phnum > 0 && v.getUint16(54, true) !== PHDR_SIZE)
      throw new ElfFormatError(file, 54, `bad e_phentsize ${v.getUint16(54, true)}`);
    if (header.shoff !== 0n && v.getUint16(58, true) !== SHDR_SIZE)
      throw new ElfFormatError(file, 58, `bad e_shentsize ${v.getUint16(58, true)}`);
    const elf = new ElfFile(src, header);
    elf.readProgramHeaders();
    elf.readSectionHeaders();
    return elf;
  }

  /** name is the file name used in messages. */
  get name(): string {
    return this.source.name;
  }

  close(): void {
    this.source.close();
  }

  /** readExact reads bytes or fails naming the offset and what was being read. */
  readExact(offset: bigint, length: number, what: string): Uint8Array {
    const b = this.source.read(offset, length);
    if (b.length !== length)
      throw new ElfFormatError(this.name, offset, `${what} runs past the end of the file (${length} bytes wanted, ${b.length} there)`);
    return b;
  }

  private readProgramHeaders(): void {
    const { phoff, phnum } = this.header;
    if (phnum === 0) return;
    const tbl = this.readExact(phoff, phnum * PHDR_SIZE, "program header table");
    const v = view(tbl);
    for (let i = 0; i < phnum; i++) {
      const o = i * PHDR_SIZE;
      this.programHeaders.push({
        type: v.getUint32(o, true),
        flags: v.getUint32(o + 4, true),
        offset: v.getBigUint64(o + 8, true),
        vaddr: v.getBigUint64(o + 16, true),
        paddr: v.getBigUint64(o + 24, true),
        filesz: v.getBigUint64(o + 32, true),
        memsz: v.getBigUint64(o + 40, true),
        align: v.getBigUint64(o + 48, true),
      });
    }
  }

  private readSectionHeaders(): void {
    const { shoff } = this.header;
    let { shnum, shstrndx } = this.header;
    if (shoff === 0n) return;
    const first = view(this.readExact(shoff, SHDR_SIZE, "section header 0"));
    // Extended numbering: counts too large for the ELF header live in section 0.
    if (shnum === 0) shnum = Number(first.getBigUint64(32, true));
    if (shstrndx === SHN.XINDEX) shstrndx = first.getUint32(40, true);
    if (shnum > 1_000_000) throw new ElfFormatError(this.name, 60, `implausible section count ${shnum}`);
    const tbl = view(this.readExact(shoff, shnum * SHDR_SIZE, "section header table"));
    for (let i = 0; i < shnum; i++) {
      const o = i * SHDR_SIZE;
      this.sections.push({
        index: i as SectionIndex,
        name: "",
        type: tbl.getUint32(o + 4, true),
        flags: tbl.getBigUint64(o + 8, true),
        addr: tbl.getBigUint64(o + 16, true),
        offset: tbl.getBigUint64(o + 24, true),
        size: tbl.getBigUint64(o + 32, true),
        link: tbl.getUint32(o + 40, true),
        info: tbl.getUint32(o + 44, true),
        addralign: tbl.getBigUint64(o + 48, true),
        entsize: tbl.getBigUint64(o + 56, true),
        headerOffset: shoff + BigInt(o),
      });
    }
    if (shnum === 0) return;
    if (shstrndx >= shnum) throw new ElfFormatError(this.name, 62, `section name table index ${shstrndx} out of range (${shnum} sections)`);
    const strtab = this.sections[shstrndx];
    const names = this.sectionData(strtab);
    for (let i = 0; i < shnum; i++) {
      const nameOff = tbl.getUint32(i * SHDR_SIZE, true);
      this.sections[i].name = cstring(names, nameOff, () => new ElfFormatError(this.name, this.sections[i].headerOffset, `section ${i} name offset ${nameOff} is outside the section name table (${names.length} bytes)`));
    }
  }

  /** section returns the section at an index, or fails naming what referred to it. */
  section(index: number, referrer = "a reference"): ElfSection {
    const s = this.sections[index];
    if (!s) throw new ElfFormatError(this.name, this.header.shoff, `${referrer} names section ${index}, but there are ${this.sections.length}`);
    return s;
  }

  /** sectionByName returns the first section with that name. */
  sectionByName(name: string): ElfSection | undefined {
    return this.sections.find((s) => s.name === name);
  }

  /** sectionData returns a section's bytes (zeros are not materialised for SHT_NOBITS: empty). */
  sectionData(sec: ElfSection): Uint8Array {
    if (sec.type === SHT.NOBITS || sec.type === SHT.NULL || sec.size === 0n) return new Uint8Array(0);
    if (sec.size > 0x7fffffffn) throw new ElfFormatError(this.name, sec.headerOffset, `section ${sec.name} is too large (${sec.size} bytes)`);
    return this.readExact(sec.offset, Number(sec.size), `section ${sec.index} (${sec.name || sectionTypeName(sec.type)}) contents`);
  }

  /** symtab returns the section holding .symtab, if any. */
  get symtabSection(): ElfSection | undefined {
    return this.sections.find((s) => s.type === SHT.SYMTAB);
  }

  /** symbols returns the static symbol table (.symtab), index 0 included. */
  get symbols(): ElfSymbol[] {
    if (!this.symtabCache) {
      const st = this.symtabSection;
      this.symtabCache = st ? this.readSymbols(st) : [];
    }
    return this.symtabCache;
  }

  /** readSymbols decodes a SHT_SYMTAB or SHT_DYNSYM section. */
  readSymbols(st: ElfSection): ElfSymbol[] {
    if (st.entsize !== BigInt(SYM_SIZE)) throw new ElfFormatError(this.name, st.headerOffset, `symbol table ${st.name} has entry size ${st.entsize}, want ${SYM_SIZE}`);
    const data = this.sectionData(st);
    if (data.length % SYM_SIZE !== 0) throw new ElfFormatError(this.name, st.offset, `symbol table ${st.name} size ${data.length} is not a multiple of ${SYM_SIZE}`);
    const strs = this.sectionData(this.section(st.link, `symbol table ${st.name} (sh_link)`));
    const shndxSec = this.sections.find((s) => s.type === SHT.SYMTAB_SHNDX && s.link === st.index);
    const xindex = shndxSec ? view(this.sectionData(shndxSec)) : undefined;
    const v = view(data);
    const out: ElfSymbol[] = [];
    for (let i = 0; i < data.length / SYM_SIZE; i++) {
      const o = i * SYM_SIZE;
      const nameOff = v.getUint32(o, true);
      const info = data[o + 4];
      let shndx = v.getUint16(o + 6, true);
      if (shndx === SHN.XINDEX) {
        if (!xindex || (i + 1) * 4 > xindex.byteLength)
          throw new ElfFormatError(this.name, st.offset + BigInt(o), `symbol ${i} uses SHN_XINDEX but there is no SHT_SYMTAB_SHNDX entry for it`);
        shndx = xindex.getUint32(i * 4, true);
      }
      const name = cstring(strs, nameOff, () => new ElfFormatError(this.name, st.offset + BigInt(o), `symbol ${i} name offset ${nameOff} is outside its string table (${strs.length} bytes)`));
      out.push({
        index: i as SymbolIndex,
        name,
        value: v.getBigUint64(o + 8, true),
        size: v.getBigUint64(o + 16, true),
        bind: info >> 4,
        type: info & 0xf,
        visibility: data[o + 5] & 3,
        shndx,
      });
    }
    return out;
  }

  /** symbolName gives a printable name, using the section name for STT_SECTION symbols. */
  symbolName(sym: ElfSymbol): string {
    if (sym.type === STT.SECTION && sym.name === "" && sym.shndx < this.sections.length) return this.sections[sym.shndx].name;
    return sym.name;
  }

  /** relaSectionsFor returns the SHT_RELA sections that apply to a section. */
  relaSectionsFor(sec: ElfSection): ElfSection[] {
    if (!this.relaIndex) {
      this.relaIndex = new Map();
      for (const s of this.sections) {
        if (s.type !== SHT.RELA) continue;
        const list = this.relaIndex.get(s.info) ?? [];
        list.push(s);
        this.relaIndex.set(s.info, list);
      }
    }
    return this.relaIndex.get(sec.index) ?? [];
  }

  /** relocations returns the RELA relocations that apply to a section, sorted by offset. */
  relocations(sec: ElfSection): ElfRela[] {
    const out: ElfRela[] = [];
    for (const rs of this.relaSectionsFor(sec)) out.push(...this.readRela(rs));
    return out.sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0));
  }

  /** readRela decodes one SHT_RELA section, checking symbol indices and offsets. */
  readRela(rs: ElfSection): ElfRela[] {
    if (rs.entsize !== BigInt(RELA_SIZE)) throw new ElfFormatError(this.name, rs.headerOffset, `relocation section ${rs.name} has entry size ${rs.entsize}, want ${RELA_SIZE}`);
    const data = this.sectionData(rs);
    if (data.length % RELA_SIZE !== 0) throw new ElfFormatError(this.name, rs.offset, `relocation section ${rs.name} size ${data.length} is not a multiple of ${RELA_SIZE}`);
    const nsyms = this.symbols.length;
    const target = this.section(rs.info, `relocation section ${rs.name} (sh_info)`);
    const v = view(data);
    const out: ElfRela[] = [];
    for (let i = 0; i < data.length / RELA_SIZE; i++) {
      const o = i * RELA_SIZE;
      const info = v.getBigUint64(o + 8, true);
      const sym = Number(info >> 32n);
      const r: ElfRela = { offset: v.getBigUint64(o, true), type: Number(info & 0xffffffffn), sym: sym as SymbolIndex, addend: v.getBigInt64(o + 16, true) };
      if (sym >= nsyms) throw new ElfFormatError(this.name, rs.offset + BigInt(o), `relocation ${i} in ${rs.name} refers to symbol ${sym}, but there are ${nsyms}`);
      if (target.type !== SHT.NOBITS && r.offset >= target.size && this.header.type === 1)
        throw new ElfFormatError(this.name, rs.offset + BigInt(o), `relocation ${i} in ${rs.name} patches offset 0x${r.offset.toString(16)}, past the end of ${target.name} (${target.size} bytes)`);
      out.push(r);
    }
    return out;
  }

  /** groups returns the section groups (SHT_GROUP), COMDAT or not. */
  groups(): ElfGroup[] {
    const out: ElfGroup[] = [];
    for (const s of this.sections) {
      if (s.type !== SHT.GROUP) continue;
      const d = this.sectionData(s);
      if (d.length < 4 || d.length % 4 !== 0) throw new ElfFormatError(this.name, s.offset, `group section ${s.name} has size ${d.length}, not a positive multiple of 4`);
      const v = view(d);
      const members: SectionIndex[] = [];
      for (let o = 4; o < d.length; o += 4) {
        const idx = v.getUint32(o, true);
        this.section(idx, `group ${s.name}`);
        members.push(idx as SectionIndex);
      }
      const symtab = this.section(s.link, `group ${s.name} (sh_link)`);
      const syms = symtab.type === SHT.SYMTAB ? this.symbols : this.readSymbols(symtab);
      const sig = syms[s.info];
      if (!sig) throw new ElfFormatError(this.name, s.headerOffset, `group ${s.name} signature symbol ${s.info} does not exist`);
      out.push({ section: s, flags: v.getUint32(0, true), signature: this.symbolName(sig), members });
    }
    return out;
  }

  /** isComdat tells whether a group is a COMDAT group. */
  static isComdat(g: ElfGroup): boolean {
    return (g.flags & GRP_COMDAT) !== 0;
  }

  /** readVirtual reads bytes at a virtual address through the program headers (vmlinux, kcore). */
  readVirtual(addr: bigint, length: number): Uint8Array {
    for (const ph of this.programHeaders) {
      if (ph.type !== 1 || addr < ph.vaddr || addr + BigInt(length) > ph.vaddr + ph.filesz) continue;
      return this.readExact(ph.offset + (addr - ph.vaddr), length, `${length} bytes at virtual address 0x${addr.toString(16)}`);
    }
    throw new ElfFormatError(this.name, this.header.phoff, `no loadable segment holds ${length} bytes at virtual address 0x${addr.toString(16)}`);
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** cstring reads a NUL-terminated string at an offset of a string table. */
function cstring(tbl: Uint8Array, off: number, err: () => Error): string {
  if (off === 0 && tbl.length === 0) return "";
  if (off >= tbl.length) throw err();
  let end = off;
  while (end < tbl.length && tbl[end] !== 0) end++;
  if (end === tbl.length) throw err();
  // latin1 keeps every byte as one code unit, so names round-trip exactly.
  return Buffer.from(tbl.buffer, tbl.byteOffset + off, end - off).toString("latin1");
}
