// The ELF reader on gcc-12 objects, checked row by row against what readelf prints.
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import {
  R_X86_64,
  relocTypeName,
  SHN,
  SHT,
  STB,
  STT,
  sectionTypeName,
  symbolBindName,
  symbolTypeName,
} from "../../src/elf/constants.js";
import { ElfFile } from "../../src/elf/reader.js";
import { tempDir } from "../helpers/compile.js";
import { buildElfFixtures, type ElfFixtures } from "../helpers/elf-fixtures.js";
import { readelfRelocs, readelfSections, readelfSymbols } from "./readelf.js";

let fx: ElfFixtures;
before(() => {
  fx = buildElfFixtures(tempDir("ksplice-elf-reader-"));
});

/** readelfNdx prints a symbol's section index the way readelf does. */
function readelfNdx(sym: { shndx: number; extended?: boolean }): string {
  if (sym.shndx === SHN.UNDEF) return "UND";
  if (!sym.extended && sym.shndx === SHN.ABS) return "ABS";
  if (!sym.extended && sym.shndx === SHN.COMMON) return "COM";
  return String(sym.shndx);
}

function compareWithReadelf(path: string): ElfFile {
  const elf = ElfFile.open(path);
  const secs = readelfSections(path);
  assert.equal(elf.sections.length, secs.length, "section count");
  for (const r of secs) {
    const s = elf.sections[r.index];
    assert.equal(s.name, r.name, `section ${r.index} name`);
    assert.equal(sectionTypeName(s.type), `SHT_${r.type}`, `section ${r.name} type`);
    assert.deepEqual(
      [s.offset, s.size, s.entsize, s.link, s.info, s.addralign],
      [r.offset, r.size, r.entsize, r.link, r.info, r.align],
      `section ${r.name} header`,
    );
  }
  const syms = readelfSymbols(path);
  assert.equal(elf.symbols.length, syms.length, "symbol count");
  for (const r of syms) {
    const s = elf.symbols[r.index];
    assert.deepEqual(
      [elf.symbolName(s), s.value, s.size, symbolTypeName(s.type), symbolBindName(s.bind), readelfNdx(s)],
      [r.name, r.value, r.size, `STT_${r.type}`, `STB_${r.bind}`, r.ndx],
      `symbol ${r.index}`,
    );
  }
  const relas = readelfRelocs(path);
  const mine = elf.sections.flatMap((s) =>
    s.type === SHT.RELA
      ? elf
          .readRela(s)
          .map((r) => ({ section: s.name, offset: r.offset, sym: r.sym, type: relocTypeName(r.type) }))
      : [],
  );
  assert.deepEqual(mine, relas);
  return elf;
}

describe("ElfFile on gcc-12 objects", () => {
  test("plain C with COMMON, statics and strings matches readelf", () => {
    const elf = compareWithReadelf(fx.math);
    const counter = elf.symbols.find((s) => s.name === "counter")!;
    assert.equal(counter.shndx, SHN.COMMON);
    assert.equal(elf.sectionOf(counter), undefined);
    const add = elf.symbols.find((s) => s.name === "add")!;
    assert.equal(elf.sectionOf(add)?.name, ".text.add");
    assert.equal(add.bind, STB.GLOBAL);
    assert.equal(add.type, STT.FUNC);
    const text = elf.sectionByName(".text.twice")!;
    const [call] = elf.relocations(text);
    assert.equal(call.type, R_X86_64.PLT32);
    assert.equal(elf.symbols[call.sym].name, "add");
    assert.equal(call.addend, -4n);
    assert.deepEqual(
      elf.relaSectionsFor(text).map((s) => s.name),
      [".rela.text.twice"],
    );
    // The symbol table lists locals first and sh_info says where globals start.
    const firstGlobal = elf.symtabSection!.info;
    assert.ok(elf.symbols.slice(0, firstGlobal).every((s) => s.bind === STB.LOCAL));
    assert.ok(elf.symbols.slice(firstGlobal).every((s) => s.bind !== STB.LOCAL));
  });

  test("-mcmodel=kernel code uses R_X86_64_32S", () => {
    const elf = compareWithReadelf(fx.kernel);
    const types = elf.sections.flatMap((s) => elf.relocations(s).map((r) => relocTypeName(r.type)));
    assert.ok(types.includes("R_X86_64_32S"));
  });

  test("-fPIC code goes through the GOT", () => {
    const elf = compareWithReadelf(fx.pic);
    const types = elf.sections.flatMap((s) => elf.relocations(s).map((r) => relocTypeName(r.type)));
    assert.ok(types.includes("R_X86_64_REX_GOTPCRELX"));
  });

  test("assembly with a COMDAT group, an ABS symbol and explicit types", () => {
    const elf = compareWithReadelf(fx.group);
    const magic = elf.symbols.find((s) => s.name === "MAGIC")!;
    assert.equal(magic.shndx, SHN.ABS);
    assert.equal(magic.value, 0x1234n);
    const groups = elf.groups();
    assert.equal(groups.length, 1);
    assert.ok(ElfFile.isComdat(groups[0]));
    assert.equal(groups[0].signature, "foo");
    assert.deepEqual(
      groups[0].members.map((i) => elf.sections[i].name),
      [".text.foo", ".rela.text.foo"],
    );
    const names = new Set(elf.sections.flatMap((s) => elf.relocations(s).map((r) => relocTypeName(r.type))));
    for (const t of ["R_X86_64_64", "R_X86_64_32", "R_X86_64_32S", "R_X86_64_PC32", "R_X86_64_PC64"])
      assert.ok(names.has(t), t);
    for (const t of ["R_X86_64_PLT32", "R_X86_64_GOTPCREL", "R_X86_64_REX_GOTPCRELX", "R_X86_64_NONE"])
      assert.ok(names.has(t), t);
  });

  test("relocation type names cover the ones the issue lists", () => {
    assert.equal(relocTypeName(0), "R_X86_64_NONE");
    assert.equal(relocTypeName(1), "R_X86_64_64");
    assert.equal(relocTypeName(2), "R_X86_64_PC32");
    assert.equal(relocTypeName(4), "R_X86_64_PLT32");
    assert.equal(relocTypeName(9), "R_X86_64_GOTPCREL");
    assert.equal(relocTypeName(10), "R_X86_64_32");
    assert.equal(relocTypeName(11), "R_X86_64_32S");
    assert.equal(relocTypeName(24), "R_X86_64_PC64");
    assert.equal(relocTypeName(41), "R_X86_64_GOTPCRELX");
    assert.equal(relocTypeName(42), "R_X86_64_REX_GOTPCRELX");
    assert.equal(relocTypeName(999), "R_X86_64_999");
  });
});
