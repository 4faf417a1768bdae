// Linux kernel conventions in relocatable objects: the special sections whose entries point at
// code, with each entry's layout. Run-pre matching reads the sites the kernel rewrites from them
// (runpre/sites.ts); extraction keeps the entries that describe the code it copies
// (update/extract.ts). The layouts are x86-64's; each entry's field at `anchor` is a relocated
// pointer (usually `.long target - .`) to the code it describes.

/** SiteLength is how long the code an entry points at is: a fixed length, or a byte of the entry. */
export type SiteLength = { fixed: number } | { byteAt: number };

/** SectionLayout is the entry layout of one special section, and what the tools do with it. */
export interface SectionLayout {
  /** Bytes per entry. */
  entry: number;
  /** Offset in the entry of the field that points at the code the entry describes. */
  anchor: number;
  /** Length of the code site, where the layout says. */
  site?: SiteLength;
  /** The kernel rewrites the code at these sites, so run-pre lets its bytes differ. */
  rewritable: boolean;
  /**
   * It rewrites them while running too (a static key or static call changing), not only at boot
   * or load, checking the bytes it expects there: no jump of an update may cover one.
   */
  runtime?: boolean;
  /** An update module carries this section's entries for the code it copies. */
  copied: boolean;
  /** Alternatives: the field pointing at the replacement instructions, their length's byte, their section. */
  replacement?: { field: number; lengthByte: number; section: string };
  /** A section without relocations whose entries run parallel to this one's (same index). */
  parallel?: { section: string; entry: number };
}

/** KERNEL_SECTIONS is the layout of each special section, by section name. */
export const KERNEL_SECTIONS: Readonly<Record<string, SectionLayout>> = {
  // ftrace: the address of each function's `call __fentry__` (5 bytes).
  __mcount_loc: { entry: 8, anchor: 0, site: { fixed: 5 }, rewritable: true, copied: true },
  // ORC unwinder: the address each .orc_unwind entry (6 bytes) applies from.
  ".orc_unwind_ip": {
    entry: 4,
    anchor: 0,
    rewritable: false,
    copied: true,
    parallel: { section: ".orc_unwind", entry: 6 },
  },
  // BUG()/WARN() sites: address, file, line, flags.
  __bug_table: { entry: 12, anchor: 0, rewritable: false, copied: true },
  // Exception fixups: faulting instruction, fixup, type.
  __ex_table: { entry: 12, anchor: 0, rewritable: false, copied: true },
  // Return thunks and retpolines, patched at boot by the mitigations chosen.
  ".return_sites": { entry: 4, anchor: 0, rewritable: true, copied: true },
  ".retpoline_sites": { entry: 4, anchor: 0, rewritable: true, copied: true },
  // Lock prefixes (1 byte), patched out on a uniprocessor.
  ".smp_locks": { entry: 4, anchor: 0, site: { fixed: 1 }, rewritable: true, copied: true },
  // Alternatives: instruction, replacement, CPU feature (2), instruction length, replacement length.
  ".altinstructions": {
    entry: 12,
    anchor: 0,
    site: { byteAt: 10 },
    rewritable: true,
    copied: true,
    replacement: { field: 4, lengthByte: 11, section: ".altinstr_replacement" },
  },
  // Paravirt calls: instruction (an 8-byte address), type, length.
  ".parainstructions": { entry: 16, anchor: 0, site: { byteAt: 9 }, rewritable: true, copied: true },
  // Call depth tracking: the call instructions objtool lists.
  ".call_sites": { entry: 4, anchor: 0, rewritable: false, copied: true },
  // Jump labels: code, target, key (8); an update is refused if its code still has any.
  __jump_table: { entry: 16, anchor: 0, rewritable: true, runtime: true, copied: false },
  // Static calls: call site, key; the call is 5 bytes. An update leaves them out.
  ".static_call_sites": {
    entry: 8,
    anchor: 0,
    site: { fixed: 5 },
    rewritable: true,
    runtime: true,
    copied: false,
  },
};

/** kernelSection returns the layout of a special section, or undefined for any other section. */
export function kernelSection(name: string): SectionLayout | undefined {
  return Object.hasOwn(KERNEL_SECTIONS, name) ? KERNEL_SECTIONS[name] : undefined;
}

/** siteLength reads the length of the site an entry (at `entry` in the section's bytes) points at. */
export function siteLength(layout: SectionLayout, data: Uint8Array, entry: number): number | undefined {
  if (!layout.site) return undefined;
  return "fixed" in layout.site ? layout.site.fixed : data[entry + layout.site.byteAt];
}
