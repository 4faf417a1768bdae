// ELF64 constants for x86-64, as typed values with name tables so that a relocation prints
// as R_X86_64_PLT32 rather than 4. Only what this project reads or writes is listed; an
// unknown value prints as its number.

function namer(table: Record<number, string>, prefix: string) {
  return (v: number): string => table[v] ?? `${prefix}${v}`;
}

export const ELFCLASS64 = 2;
export const ELFDATA2LSB = 1;
export const EV_CURRENT = 1;
export const EM_X86_64 = 62;

/** ElfType is e_type. */
export const ET = { NONE: 0, REL: 1, EXEC: 2, DYN: 3, CORE: 4 } as const;
export const elfTypeName = namer(
  { 0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE" },
  "ET_",
);

/** SHT is sh_type. */
export const SHT = {
  NULL: 0,
  PROGBITS: 1,
  SYMTAB: 2,
  STRTAB: 3,
  RELA: 4,
  HASH: 5,
  DYNAMIC: 6,
  NOTE: 7,
  NOBITS: 8,
  REL: 9,
  DYNSYM: 11,
  INIT_ARRAY: 14,
  FINI_ARRAY: 15,
  PREINIT_ARRAY: 16,
  GROUP: 17,
  SYMTAB_SHNDX: 18,
  X86_64_UNWIND: 0x70000001,
} as const;
export const sectionTypeName = namer(
  Object.fromEntries(Object.entries(SHT).map(([k, v]) => [v, `SHT_${k}`])),
  "SHT_",
);

/** SHF is sh_flags (bit values). */
export const SHF = {
  WRITE: 0x1,
  ALLOC: 0x2,
  EXECINSTR: 0x4,
  MERGE: 0x10,
  STRINGS: 0x20,
  INFO_LINK: 0x40,
  LINK_ORDER: 0x80,
  GROUP: 0x200,
  TLS: 0x400,
} as const;

/** GRP_COMDAT flags a section group as COMDAT. */
export const GRP_COMDAT = 1;

/** SHN holds the special section indices. */
export const SHN = { UNDEF: 0, LORESERVE: 0xff00, ABS: 0xfff1, COMMON: 0xfff2, XINDEX: 0xffff } as const;

/** STB is a symbol's binding. */
export const STB = { LOCAL: 0, GLOBAL: 1, WEAK: 2 } as const;
export const symbolBindName = namer(
  { 0: "STB_LOCAL", 1: "STB_GLOBAL", 2: "STB_WEAK", 10: "STB_GNU_UNIQUE" },
  "STB_",
);

/** STT is a symbol's type. */
export const STT = { NOTYPE: 0, OBJECT: 1, FUNC: 2, SECTION: 3, FILE: 4, COMMON: 5, TLS: 6 } as const;
export const symbolTypeName = namer(
  Object.fromEntries(Object.entries(STT).map(([k, v]) => [v, `STT_${k}`])),
  "STT_",
);

/** STV is a symbol's visibility. */
export const STV = { DEFAULT: 0, INTERNAL: 1, HIDDEN: 2, PROTECTED: 3 } as const;

/** PT is a program header's type. */
export const PT = { NULL: 0, LOAD: 1, DYNAMIC: 2, INTERP: 3, NOTE: 4, PHDR: 6, TLS: 7 } as const;
export const programTypeName = namer(
  Object.fromEntries(Object.entries(PT).map(([k, v]) => [v, `PT_${k}`])),
  "PT_",
);

/** R_X86_64 holds the x86-64 relocation types. */
export const R_X86_64 = {
  NONE: 0,
  "64": 1,
  PC32: 2,
  GOT32: 3,
  PLT32: 4,
  COPY: 5,
  GLOB_DAT: 6,
  JUMP_SLOT: 7,
  RELATIVE: 8,
  GOTPCREL: 9,
  "32": 10,
  "32S": 11,
  "16": 12,
  PC16: 13,
  "8": 14,
  PC8: 15,
  DTPMOD64: 16,
  DTPOFF64: 17,
  TPOFF64: 18,
  TLSGD: 19,
  TLSLD: 20,
  DTPOFF32: 21,
  GOTTPOFF: 22,
  TPOFF32: 23,
  PC64: 24,
  GOTOFF64: 25,
  GOTPC32: 26,
  GOT64: 27,
  GOTPCREL64: 28,
  GOTPC64: 29,
  SIZE32: 32,
  SIZE64: 33,
  GOTPCRELX: 41,
  REX_GOTPCRELX: 42,
} as const;
export type RelocType = number;
export const relocTypeName = namer(
  Object.fromEntries(Object.entries(R_X86_64).map(([k, v]) => [v, `R_X86_64_${k}`])),
  "R_X86_64_",
);

/** RelocInfo describes how a relocation type patches its field. */
export interface RelocInfo {
  /** Width of the patched field in bytes (0 for NONE). */
  size: number;
  /** True when the value is relative to the field's own address. */
  pcRelative: boolean;
}

/** relocInfo tells how wide a relocated field is and whether it is PC-relative. */
export function relocInfo(type: RelocType): RelocInfo | undefined {
  switch (type) {
    case R_X86_64.NONE:
      return { size: 0, pcRelative: false };
    case R_X86_64["64"]:
    case R_X86_64.GOTOFF64:
    case R_X86_64.GOT64:
    case R_X86_64.SIZE64:
    case R_X86_64.DTPOFF64:
    case R_X86_64.TPOFF64:
    case R_X86_64.DTPMOD64:
      return { size: 8, pcRelative: false };
    case R_X86_64.PC64:
    case R_X86_64.GOTPCREL64:
    case R_X86_64.GOTPC64:
      return { size: 8, pcRelative: true };
    case R_X86_64.PC32:
    case R_X86_64.PLT32:
    case R_X86_64.GOTPCREL:
    case R_X86_64.GOTPCRELX:
    case R_X86_64.REX_GOTPCRELX:
    case R_X86_64.GOTPC32:
    case R_X86_64.TLSGD:
    case R_X86_64.TLSLD:
    case R_X86_64.GOTTPOFF:
      return { size: 4, pcRelative: true };
    case R_X86_64["32"]:
    case R_X86_64["32S"]:
    case R_X86_64.GOT32:
    case R_X86_64.SIZE32:
    case R_X86_64.DTPOFF32:
    case R_X86_64.TPOFF32:
      return { size: 4, pcRelative: false };
    case R_X86_64["16"]:
      return { size: 2, pcRelative: false };
    case R_X86_64.PC16:
      return { size: 2, pcRelative: true };
    case R_X86_64["8"]:
      return { size: 1, pcRelative: false };
    case R_X86_64.PC8:
      return { size: 1, pcRelative: true };
    default:
      return undefined;
  }
}

/** Sizes of ELF64 structures. */
export const EHDR_SIZE = 64;
export const SHDR_SIZE = 64;
export const PHDR_SIZE = 56;
export const SYM_SIZE = 24;
export const RELA_SIZE = 24;
