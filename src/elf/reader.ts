// Folder src/elf: the ELF64 x86-64 format (constants and name tables, reader, writer) and the
// kernel's special sections' entry layouts. Imports nothing of the project but src/errors.
//
// Reader for ELF64 little-endian x86-64 files: relocatable objects, executables (vmlinux)
// and core files (/proc/kcore). Every structural problem is an ElfFormatError naming the
// file and the byte offset; no read goes out of range. Headers are parsed eagerly, section
// contents are read on demand through a ByteSource.
//
// Hostile input is the normal case for this file's tests: every index read from the file is
// checked before it is used, every length is checked against the file size before anything is
// allocated, and DataView reads only ever happen on byte ranges already checked.
import { readFileSync } from "node:fs";
import {
  EHDR_SIZE,
  ELFCLASS64,
  ELFDATA2LSB,
  EM_X86_64,
  ET,
  GRP_COMDAT,
  PHDR_SIZE,
  PT,
  RELA_SIZE,
  relocInfo,
  SHDR_SIZE,
  SHN,
  SHT,
  STT,
  SYM_SIZE,
  sectionTypeName,
} from "./constants.js";
import { BufferSource, type ByteSource, FileSource } from "./source.js";

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

/** ElfHeader is the decoded ELF header, with extended counts already resolved. */
export interface ElfHeader {
  type: number;
  machine: number;
  entry: bigint;
  phoff: bigint;
  shoff: bigint;
  flags: number;
  /** Number of program headers (PN_XNUM resolved through section 0). */
  phnum: number;
  /** Number of section headers as written in e_shnum (0 when the count lives in section 0). */
  shnum: number;
  /** Section name table index (SHN_XINDEX resolved through section 0). */
  shstrndx: number;
}

/** ElfSection is one section header, with its name resolved. */
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

/** ElfSymbol is one symbol table entry. */
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
  /**
   * True when st_shndx was SHN_XINDEX, so `shndx` is a real section index even if it falls in
   * the reserved range (only possible in files with 0xff00 or more sections).
   */
  extended?: boolean;
}

/** ElfRela is one SHT_RELA entry. */
export interface ElfRela {
  offset: bigint;
  type: number;
  sym: SymbolIndex;
  addend: bigint;
}

/** ElfGroup is one SHT_GROUP section decoded. */
export interface ElfGroup {
  section: ElfSection;
  flags: number;
  /** The group's signature symbol name. */
  signature: string;
  /** The signature symbol's index in the group's symbol table. */
  signatureIndex: SymbolIndex;
  members: SectionIndex[];
}

/** ElfProgramHeader is one program header (segment). */
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

/** PN_XNUM in e_phnum says the program header count lives in section 0's sh_info. */
const PN_XNUM = 0xffff;
/** Largest offset a positioned read accepts (pread takes a signed 64-bit offset). */
const MAX_OFFSET = (1n << 63n) - 1n;
/** Largest single read: what fits a Uint8Array comfortably and a Number exactly. */
const MAX_READ = 0x7fffffff;
/** Section count accepted when the file size is unknown (a real file is checked against its size). */
const MAX_SECTIONS_UNSIZED = 1_000_000;

/** ElfFile is a parsed ELF64 x86-64 file. */
export class ElfFile {
  readonly header: ElfHeader;
  readonly sections: ElfSection[];
  readonly programHeaders: ElfProgramHeader[];
  private symtabCache?: ElfSymbol[];
  private otherSymtabs = new Map<number, ElfSymbol[]>();
  private relaIndex?: Map<number, ElfSection[]>;
  private nameIndex?: Map<string, ElfSection>;

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
    try {
      return ElfFile.fromSource(src);
    } catch (e) {
      src.close();
      throw e;
    }
  }

  /** fromSource parses the headers of an ELF file behind any ByteSource. */
  static fromSource(src: ByteSource): ElfFile {
    const file = src.name;
    const eh = src.read(0n, EHDR_SIZE);
    if (eh.length < 16)
      throw new ElfFormatError(file, eh.length, "file too short for the ELF identification");
    if (eh[0] !== 0x7f || eh[1] !== 0x45 || eh[2] !== 0x4c || eh[3] !== 0x46)
      throw new ElfFormatError(file, 0, "not an ELF file (bad magic)");
    if (eh[4] !== ELFCLASS64)
      throw new ElfFormatError(file, 4, `unsupported class ${eh[4]} (want ELFCLASS64)`);
    if (eh[5] !== ELFDATA2LSB)
      throw new ElfFormatError(file, 5, `unsupported data encoding ${eh[5]} (want little-endian)`);
    if (eh[6] !== 1) throw new ElfFormatError(file, 6, `unsupported ELF version ${eh[6]}`);
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
    if (header.type < ET.REL || header.type > ET.CORE)
      throw new ElfFormatError(file, 16, `unsupported file type ${header.type}`);
    if (header.machine !== EM_X86_64)
      throw new ElfFormatError(file, 18, `unsupported machine ${header.machine} (want EM_X86_64)`);
    const ehsize = v.getUint16(52, true);
    if (ehsize !== 0 && ehsize < EHDR_SIZE) throw new ElfFormatError(file, 52, `bad e_ehsize ${ehsize}`);
    if (header.phnum > 0 && v.getUint16(54, true) !== PHDR_SIZE)
      throw new ElfFormatError(file, 54, `bad e_phentsize ${v.getUint16(54, true)}`);
    if (header.shoff !== 0n && v.getUint16(58, true) !== SHDR_SIZE)
      throw new ElfFormatError(file, 58, `bad e_shentsize ${v.getUint16(58, true)}`);
    const elf = new ElfFile(src, header);
    // Section 0 first: it may hold the real program header count, section count and name table index.
    const zero =
      header.shoff === 0n ? undefined : view(elf.readExact(header.shoff, SHDR_SIZE, "section header 0"));
    if (header.phnum === PN_XNUM) {
      if (!zero) throw new ElfFormatError(file, 56, "e_phnum is PN_XNUM but there is no section header 0");
      header.phnum = zero.getUint32(44, true);
    }
    elf.readProgramHeaders();
    if (zero) elf.readSectionHeaders(zero);
    return elf;
  }

  /** name is the file name used in messages. */
  get name(): string {
    return this.source.name;
  }

  /** close releases the underlying file, if any. */
  close(): void {
    this.source.close();
  }

  /** readExact reads bytes or fails naming the offset and what was being read. */
  readExact(offset: bigint, length: number, what: string): Uint8Array {
    if (!Number.isSafeInteger(length) || length < 0 || length > MAX_READ)
      throw new ElfFormatError(this.name, offset, `${what}: implausible length ${length}`);
    const end = offset + BigInt(length);
    // Check against the file size before reading so a hostile size never allocates.
    if (offset < 0n || end > MAX_OFFSET || (this.source.size !== undefined && end > this.source.size))
      throw new ElfFormatError(
        this.name,
        offset,
        `${what} runs past the end of the file (${length} bytes wanted at 0x${offset.toString(16)}, file is ${this.source.size ?? "of unknown size"})`,
      );
    const b = this.source.read(offset, length);
    if (b.length !== length)
      throw new ElfFormatError(
        this.name,
        offset,
        `${what} runs past the end of the file (${length} bytes wanted, ${b.length} there)`,
      );
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

  private readSectionHeaders(first: DataView): void {
    const { shoff } = this.header;
    let shnum = this.header.shnum;
    let shstrndx = this.header.shstrndx;
    let countAt = 60n;
    // Extended numbering: counts too large for the ELF header live in section 0.
    if (shnum === 0) {
      countAt = shoff + 32n;
      const big = first.getBigUint64(32, true);
      const limit =
        this.source.size === undefined ? BigInt(MAX_SECTIONS_UNSIZED) : this.source.size / BigInt(SHDR_SIZE);
      if (big > limit) throw new ElfFormatError(this.name, countAt, `implausible section count ${big}`);
      shnum = Number(big);
    }
    if (shstrndx === SHN.XINDEX) shstrndx = first.getUint32(40, true);
    if (shnum === 0) return;
    if (this.source.size === undefined && shnum > MAX_SECTIONS_UNSIZED)
      throw new ElfFormatError(this.name, countAt, `implausible section count ${shnum}`);
    const raw = this.readExact(shoff, shnum * SHDR_SIZE, "section header table");
    const tbl = view(raw);
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
    if (shstrndx >= shnum)
      throw new ElfFormatError(
        this.name,
        62,
        `section name table index ${shstrndx} out of range (${shnum} sections)`,
      );
    // shstrndx 0 (SHN_UNDEF) means the file has no section names at all.
    let names: Uint8Array = new Uint8Array(0);
    if (shstrndx !== SHN.UNDEF) {
      const strtab = this.sections[shstrndx];
      if (strtab.type !== SHT.STRTAB)
        throw new ElfFormatError(
          this.name,
          strtab.headerOffset + 4n,
          `section name table (section ${shstrndx}) has type ${sectionTypeName(strtab.type)}, not SHT_STRTAB`,
        );
      names = this.sectionData(strtab);
    }
    const strs = new StringTable(names);
    for (let i = 0; i < shnum; i++) {
      const nameOff = tbl.getUint32(i * SHDR_SIZE, true);
      const s = strs.get(nameOff);
      if (s === undefined)
        throw new ElfFormatError(
          this.name,
          this.sections[i].headerOffset,
          `section ${i} name offset ${nameOff} is outside the section name table (${names.length} bytes)`,
        );
      this.sections[i].name = s;
    }
  }

  /**
   * section returns the section at an index, or fails naming what referred to it; `at` is the
   * byte offset of the reference (defaults to the section header table).
   */
  section(index: number, referrer = "a reference", at?: bigint | number): ElfSection {
    const s = Number.isInteger(index) ? this.sections[index] : undefined;
    if (!s)
      throw new ElfFormatError(
        this.name,
        at ?? this.header.shoff,
        `${referrer} names section ${index}, but there are ${this.sections.length}`,
      );
    return s;
  }

  /** sectionByName returns the first section with that name. */
  sectionByName(name: string): ElfSection | undefined {
    if (!this.nameIndex) {
      this.nameIndex = new Map();
      for (const s of this.sections) if (!this.nameIndex.has(s.name)) this.nameIndex.set(s.name, s);
    }
    return this.nameIndex.get(name);
  }

  /** sectionData returns a section's bytes (zeros are not materialised for SHT_NOBITS: empty). */
  sectionData(sec: ElfSection): Uint8Array {
    if (sec.type === SHT.NOBITS || sec.type === SHT.NULL || sec.size === 0n) return new Uint8Array(0);
    if (sec.size > BigInt(MAX_READ))
      throw new ElfFormatError(
        this.name,
        sec.headerOffset + 32n,
        `section ${sec.name} is too large (${sec.size} bytes)`,
      );
    return this.readExact(
      sec.offset,
      Number(sec.size),
      `section ${sec.index} (${sec.name || sectionTypeName(sec.type)}) contents`,
    );
  }

  /** symtabSection is the section holding .symtab, if any. */
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

  /** symbolsOf returns the symbols of a SHT_SYMTAB or SHT_DYNSYM section, cached. */
  symbolsOf(st: ElfSection): ElfSymbol[] {
    if (st === this.symtabSection) return this.symbols;
    let syms = this.otherSymtabs.get(st.index);
    if (!syms) {
      syms = this.readSymbols(st);
      this.otherSymtabs.set(st.index, syms);
    }
    return syms;
  }

  /** readSymbols decodes a SHT_SYMTAB or SHT_DYNSYM section. */
  readSymbols(st: ElfSection): ElfSymbol[] {
    if (st.type !== SHT.SYMTAB && st.type !== SHT.DYNSYM)
      throw new ElfFormatError(
        this.name,
        st.headerOffset + 4n,
        `section ${st.index} (${st.name}) is not a symbol table`,
      );
    if (st.entsize !== BigInt(SYM_SIZE))
      throw new ElfFormatError(
        this.name,
        st.headerOffset + 56n,
        `symbol table ${st.name} has entry size ${st.entsize}, want ${SYM_SIZE}`,
      );
    const data = this.sectionData(st);
    if (data.length % SYM_SIZE !== 0)
      throw new ElfFormatError(
        this.name,
        st.headerOffset + 32n,
        `symbol table ${st.name} size ${data.length} is not a multiple of ${SYM_SIZE}`,
      );
    const strSec = this.section(st.link, `symbol table ${st.name} (sh_link)`, st.headerOffset + 40n);
    if (strSec.type !== SHT.STRTAB)
      throw new ElfFormatError(
        this.name,
        st.headerOffset + 40n,
        `symbol table ${st.name} links to section ${st.link} of type ${sectionTypeName(strSec.type)}, not SHT_STRTAB`,
      );
    const strData = this.sectionData(strSec);
    const strs = new StringTable(strData);
    const shndxSec = this.sections.find((s) => s.type === SHT.SYMTAB_SHNDX && s.link === st.index);
    const xindex = shndxSec ? view(this.sectionData(shndxSec)) : undefined;
    const v = view(data);
    const n = data.length / SYM_SIZE;
    const out: ElfSymbol[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const o = i * SYM_SIZE;
      const nameOff = v.getUint32(o, true);
      const info = data[o + 4];
      let shndx = v.getUint16(o + 6, true);
      let extended = false;
      if (shndx === SHN.XINDEX) {
        if (!xindex || (i + 1) * 4 > xindex.byteLength)
          throw new ElfFormatError(
            this.name,
            st.offset + BigInt(o + 6),
            `symbol ${i} uses SHN_XINDEX but there is no SHT_SYMTAB_SHNDX entry for it`,
          );
        shndx = xindex.getUint32(i * 4, true);
        extended = true;
      }
      const name = strs.get(nameOff);
      if (name === undefined)
        throw new ElfFormatError(
          this.name,
          st.offset + BigInt(o),
          `symbol ${i} name offset ${nameOff} is outside its string table (${strData.length} bytes)`,
        );
      const sym: ElfSymbol = {
        index: i as SymbolIndex,
        name,
        value: v.getBigUint64(o + 8, true),
        size: v.getBigUint64(o + 16, true),
        bind: info >> 4,
        type: info & 0xf,
        visibility: data[o + 5] & 3,
        shndx,
      };
      if (extended) sym.extended = true;
      out[i] = sym;
    }
    return out;
  }

  /** isSpecialIndex tells whether a symbol's shndx is UNDEF or a reserved value (ABS, COMMON, ...). */
  static isSpecialIndex(sym: ElfSymbol): boolean {
    return sym.shndx === SHN.UNDEF || (!sym.extended && sym.shndx >= SHN.LORESERVE);
  }

  /**
   * sectionOf returns the section a symbol is defined in, undefined for UNDEF, ABS, COMMON and
   * other reserved indices, or fails when the index names no section.
   */
  sectionOf(sym: ElfSymbol): ElfSection | undefined {
    if (ElfFile.isSpecialIndex(sym)) return undefined;
    const st = this.symtabSection;
    const at = st ? st.offset + BigInt(sym.index * SYM_SIZE + 6) : this.header.shoff;
    return this.section(sym.shndx, `symbol ${sym.index} (${sym.name})`, at);
  }

  /** symbolName gives a printable name, using the section name for STT_SECTION symbols. */
  symbolName(sym: ElfSymbol): string {
    if (sym.type === STT.SECTION && sym.name === "" && !ElfFile.isSpecialIndex(sym))
      return this.sections[sym.shndx]?.name ?? "";
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
    for (const rs of this.relaSectionsFor(sec)) for (const r of this.readRela(rs)) out.push(r);
    return out.sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0));
  }

  /** readRela decodes one SHT_RELA section, checking symbol indices and (in objects) offsets. */
  readRela(rs: ElfSection): ElfRela[] {
    if (rs.entsize !== BigInt(RELA_SIZE))
      throw new ElfFormatError(
        this.name,
        rs.headerOffset + 56n,
        `relocation section ${rs.name} has entry size ${rs.entsize}, want ${RELA_SIZE}`,
      );
    const data = this.sectionData(rs);
    if (data.length % RELA_SIZE !== 0)
      throw new ElfFormatError(
        this.name,
        rs.headerOffset + 32n,
        `relocation section ${rs.name} size ${data.length} is not a multiple of ${RELA_SIZE}`,
      );
    // sh_link 0 is allowed (dynamic relocations without symbols): then only symbol 0 is valid.
    let nsyms = 1;
    if (rs.link !== 0) {
      const st = this.section(rs.link, `relocation section ${rs.name} (sh_link)`, rs.headerOffset + 40n);
      if (st.type !== SHT.SYMTAB && st.type !== SHT.DYNSYM)
        throw new ElfFormatError(
          this.name,
          rs.headerOffset + 40n,
          `relocation section ${rs.name} links to ${sectionTypeName(st.type)} section ${rs.link}, not a symbol table`,
        );
      nsyms = this.symbolsOf(st).length;
    }
    const target = this.section(rs.info, `relocation section ${rs.name} (sh_info)`, rs.headerOffset + 44n);
    const checkOffsets = this.header.type === ET.REL && target.type !== SHT.NOBITS;
    const v = view(data);
    const n = data.length / RELA_SIZE;
    const out: ElfRela[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const o = i * RELA_SIZE;
      // r_info is (sym << 32) | type; reading the halves avoids a BigInt shift per entry.
      const type = v.getUint32(o + 8, true);
      const sym = v.getUint32(o + 12, true);
      const r: ElfRela = {
        offset: v.getBigUint64(o, true),
        type,
        sym: sym as SymbolIndex,
        addend: v.getBigInt64(o + 16, true),
      };
      if (sym >= nsyms)
        throw new ElfFormatError(
          this.name,
          rs.offset + BigInt(o + 12),
          `relocation ${i} in ${rs.name} refers to symbol ${sym}, but there are ${nsyms}`,
        );
      if (checkOffsets) {
        const width = BigInt(relocInfo(type)?.size ?? 0);
        if (width === 0n ? r.offset > target.size : r.offset + width > target.size)
          throw new ElfFormatError(
            this.name,
            rs.offset + BigInt(o),
            `relocation ${i} in ${rs.name} patches offset 0x${r.offset.toString(16)}, past the end of ${target.name} (${target.size} bytes)`,
          );
      }
      out[i] = r;
    }
    return out;
  }

  /** groups returns the section groups (SHT_GROUP), COMDAT or not. */
  groups(): ElfGroup[] {
    const out: ElfGroup[] = [];
    for (const s of this.sections) {
      if (s.type !== SHT.GROUP) continue;
      const d = this.sectionData(s);
      if (d.length < 4 || d.length % 4 !== 0)
        throw new ElfFormatError(
          this.name,
          s.headerOffset + 32n,
          `group section ${s.name} has size ${d.length}, not a positive multiple of 4`,
        );
      const v = view(d);
      const members: SectionIndex[] = [];
      for (let o = 4; o < d.length; o += 4) {
        const idx = v.getUint32(o, true);
        if (idx === 0 || idx === s.index)
          throw new ElfFormatError(
            this.name,
            s.offset + BigInt(o),
            `group ${s.name} lists section ${idx} as a member`,
          );
        this.section(idx, `group ${s.name}`, s.offset + BigInt(o));
        members.push(idx as SectionIndex);
      }
      const symtab = this.section(s.link, `group ${s.name} (sh_link)`, s.headerOffset + 40n);
      const syms = this.symbolsOf(symtab);
      const sig = syms[s.info];
      if (!sig)
        throw new ElfFormatError(
          this.name,
          s.headerOffset + 44n,
          `group ${s.name} signature symbol ${s.info} does not exist (${syms.length} symbols)`,
        );
      out.push({
        section: s,
        flags: v.getUint32(0, true),
        signature: this.symbolName(sig),
        signatureIndex: sig.index,
        members,
      });
    }
    return out;
  }

  /** isComdat tells whether a group is a COMDAT group. */
  static isComdat(g: ElfGroup): boolean {
    return (g.flags & GRP_COMDAT) !== 0;
  }

  /**
   * readVirtual reads bytes at a virtual address through the PT_LOAD program headers (vmlinux,
   * kcore). In executables the part of a segment past p_filesz reads as zeros (.bss); in core
   * files it is memory the dump does not hold, so asking for it is an error.
   */
  readVirtual(addr: bigint, length: number): Uint8Array {
    if (!Number.isSafeInteger(length) || length < 0 || length > MAX_READ)
      throw new ElfFormatError(this.name, this.header.phoff, `implausible read length ${length}`);
    const end = addr + BigInt(length);
    for (let i = 0; i < this.programHeaders.length; i++) {
      const ph = this.programHeaders[i];
      if (ph.type !== PT.LOAD || addr < ph.vaddr || end > ph.vaddr + ph.memsz) continue;
      const rel = addr - ph.vaddr;
      const what = `${length} bytes at virtual address 0x${addr.toString(16)}`;
      if (end <= ph.vaddr + ph.filesz) return this.readExact(ph.offset + rel, length, what);
      const phAt = this.header.phoff + BigInt(i * PHDR_SIZE);
      if (this.header.type === ET.CORE)
        throw new ElfFormatError(
          this.name,
          phAt,
          `${what}: segment ${i} holds only 0x${ph.filesz.toString(16)} of its 0x${ph.memsz.toString(16)} bytes in the file`,
        );
      const out = new Uint8Array(length);
      if (rel < ph.filesz) out.set(this.readExact(ph.offset + rel, Number(ph.filesz - rel), what));
      return out;
    }
    throw new ElfFormatError(
      this.name,
      this.header.phoff,
      `no loadable segment holds ${length} bytes at virtual address 0x${addr.toString(16)}`,
    );
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * StringTable decodes NUL-terminated strings from one table. It keeps a single Buffer over the
 * table so that decoding 100k symbol names allocates strings only, not a Buffer per name.
 */
class StringTable {
  private readonly buf: Buffer;
  constructor(readonly bytes: Uint8Array) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  /** get returns the string at an offset, or undefined when the offset or terminator is missing. */
  get(off: number): string | undefined {
    const tbl = this.buf;
    if (off === 0 && tbl.length === 0) return "";
    if (off >= tbl.length) return undefined;
    const end = tbl.indexOf(0, off);
    if (end < 0) return undefined;
    // latin1 keeps every byte as one code unit, so names round-trip exactly.
    return end === off ? "" : tbl.toString("latin1", off, end);
  }
}
