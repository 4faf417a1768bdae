// The places of a pre object's code that the running kernel rewrites at boot or at run time,
// read from the object's own patch tables: ftrace call sites (__mcount_loc), return thunks
// (.return_sites), retpolines (.retpoline_sites), lock prefixes (.smp_locks), alternatives
// (.altinstructions), paravirt calls (.parainstructions), jump labels (__jump_table) and static
// calls (.static_call_sites). Run-pre matching lets the bytes of these sites differ (their
// length stays), since what is there depends on the CPU, boot options and tracing state. The
// tables' layouts are in elf/kernel-sections.ts (those marked rewritable).
import { relocInfo } from "../elf/constants.js";
import { kernelSection, siteLength } from "../elf/kernel-sections.js";
import type { ElfFile } from "../elf/reader.js";

/** Site is one rewritable range of a code section. */
export interface Site {
  /** Offset in the section. */
  offset: number;
  /** Length, when the table says; otherwise the length of the instruction there. */
  length?: number;
  table: string;
  /** The kernel may rewrite it while running (static keys, static calls), not only at boot. */
  runtime?: boolean;
}

/** sitesOf returns the rewritable sites of every section of an object, by section index. */
export function sitesOf(elf: ElfFile): Map<number, Site[]> {
  const out = new Map<number, Site[]>();
  for (const sec of elf.sections) {
    const spec = kernelSection(sec.name);
    if (!spec?.rewritable) continue;
    const data = elf.sectionData(sec);
    for (const r of elf.relocations(sec)) {
      const off = Number(r.offset);
      if (off % spec.entry !== spec.anchor || !relocInfo(r.type)?.size) continue;
      const sym = elf.symbols[r.sym];
      if (sym.shndx <= 0 || sym.shndx >= elf.sections.length) continue;
      const at = Number(sym.value + r.addend);
      const entry = off - spec.anchor;
      const length = siteLength(spec, data, entry);
      const list = out.get(sym.shndx) ?? [];
      list.push({ offset: at, length, table: sec.name, ...(spec.runtime ? { runtime: true } : {}) });
      out.set(sym.shndx, list);
    }
  }
  for (const list of out.values()) list.sort((a, b) => a.offset - b.offset);
  return out;
}
