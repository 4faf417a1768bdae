// The places of a pre object's code that the running kernel rewrites at boot or at run time,
// read from the object's own patch tables: ftrace call sites (__mcount_loc), return thunks
// (.return_sites), retpolines (.retpoline_sites), lock prefixes (.smp_locks), alternatives
// (.altinstructions), paravirt calls (.parainstructions), jump labels (__jump_table) and static
// calls (.static_call_sites). Run-pre matching lets the bytes of these sites differ (their
// length stays), since what is there depends on the CPU, boot options and tracing state.
import { relocInfo } from "../elf/constants.js";
import type { ElfFile } from "../elf/reader.js";

/** Site is one rewritable range of a code section. */
export interface Site {
  /** Offset in the section. */
  offset: number;
  /** Length, when the table says; otherwise the length of the instruction there. */
  length?: number;
  table: string;
}

interface TableSpec {
  entry: number;
  /** Offset in the entry of the field that points at the site. */
  anchor: number;
  /** Fixed length of a site, or where the entry stores it (a byte). */
  length?: number;
  lengthByte?: number;
}

const TABLES: Record<string, TableSpec> = {
  __mcount_loc: { entry: 8, anchor: 0, length: 5 },
  ".return_sites": { entry: 4, anchor: 0 },
  ".retpoline_sites": { entry: 4, anchor: 0 },
  ".smp_locks": { entry: 4, anchor: 0, length: 1 },
  ".altinstructions": { entry: 12, anchor: 0, lengthByte: 10 },
  ".parainstructions": { entry: 16, anchor: 0, lengthByte: 9 },
  __jump_table: { entry: 16, anchor: 0 },
  ".static_call_sites": { entry: 8, anchor: 0, length: 5 },
};

/** sitesOf returns the rewritable sites of every section of an object, by section index. */
export function sitesOf(elf: ElfFile): Map<number, Site[]> {
  const out = new Map<number, Site[]>();
  for (const sec of elf.sections) {
    const spec = TABLES[sec.name];
    if (!spec) continue;
    const data = elf.sectionData(sec);
    for (const r of elf.relocations(sec)) {
      const off = Number(r.offset);
      if (off % spec.entry !== spec.anchor || !relocInfo(r.type)?.size) continue;
      const sym = elf.symbols[r.sym];
      if (sym.shndx <= 0 || sym.shndx >= elf.sections.length) continue;
      const at = Number(sym.value + r.addend);
      const entry = off - spec.anchor;
      const length =
        spec.length ?? (spec.lengthByte !== undefined ? data[entry + spec.lengthByte] : undefined);
      const list = out.get(sym.shndx) ?? [];
      list.push({ offset: at, length, table: sec.name });
      out.set(sym.shndx, list);
    }
  }
  for (const list of out.values()) list.sort((a, b) => a.offset - b.offset);
  return out;
}
