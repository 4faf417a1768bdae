// Touches everything the ELF reader can decode, the way a consumer would, so that malformed
// input is found wherever it hides.
import { SHT } from "../../src/elf/constants.js";
import { ElfFile } from "../../src/elf/reader.js";

/** walkElf reads every section, symbol, relocation, group and segment start of a file. */
export function walkElf(elf: ElfFile): void {
  for (const s of elf.sections) {
    elf.sectionData(s);
    elf.relaSectionsFor(s);
    elf.relocations(s);
    if (s.type === SHT.RELA) elf.readRela(s);
  }
  for (const sym of elf.symbols) {
    elf.symbolName(sym);
    if (!ElfFile.isSpecialIndex(sym)) elf.sectionOf(sym);
  }
  elf.groups();
  for (const ph of elf.programHeaders) if (ph.filesz > 0n) elf.readVirtual(ph.vaddr, 1);
}

/** walkElfEach is walkElf with every step tried on its own, reporting each failure to `onError`. */
export function walkElfEach(elf: ElfFile, onError: (e: unknown) => void): void {
  const attempt = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      onError(e);
    }
  };
  for (const s of elf.sections) {
    attempt(() => elf.sectionData(s));
    attempt(() => elf.relocations(s));
    if (s.type === SHT.RELA) attempt(() => elf.readRela(s));
  }
  attempt(() => {
    for (const sym of elf.symbols) {
      elf.symbolName(sym);
      attempt(() => elf.sectionOf(sym));
    }
  });
  attempt(() => elf.groups());
  for (const ph of elf.programHeaders) attempt(() => elf.readVirtual(ph.vaddr, 16));
  attempt(() => elf.sectionByName(".text"));
}
