// The ELF writer: copies of real objects and hand-built objects, each checked by readelf,
// objdump, ld -r and eu-elflint, and a copied object linked into a program that must still work.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { R_X86_64, relocTypeName, SHF, SHN, SHT, STB, STT } from "../../src/elf/constants.js";
import { ElfFile, type ElfSymbol } from "../../src/elf/reader.js";
import { ElfWriteError, ObjectWriter } from "../../src/elf/writer.js";
import { compileC, run, tempDir } from "../helpers/compile.js";
import { copySections, extractSections } from "../helpers/copy-sections.js";
import { buildElfFixtures, type ElfFixtures, MAIN_C } from "../helpers/elf-fixtures.js";
import { readelfSections, readelfSymbols } from "./readelf.js";

let dir: string;
let fx: ElfFixtures;
before(() => {
  dir = tempDir("ksplice-elf-writer-");
  fx = buildElfFixtures(dir);
});

/**
 * elflint returns eu-elflint's complaints with section numbers taken out, so that an original
 * and its copy (numbered differently) can be compared; empty means the object is clean.
 */
function elflint(path: string): string[] {
  const res = spawnSync("eu-elflint", ["--gnu-ld", path], { encoding: "utf8" });
  if (res.status === 0) return [];
  return res.stdout
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.replace(/section \[\s*\d+\] /, "section "));
}

/**
 * checkWithTools runs every system tool the issue names over an object; each must accept it.
 * eu-elflint rejects some inputs gcc itself makes (R_X86_64_NONE in an ET_REL): when `original`
 * is given the copy may have exactly the original's complaints, and no others.
 */
function checkWithTools(path: string, original?: string): void {
  run("readelf", ["-a", "-W", path]);
  run("objdump", ["-dr", path]);
  run("ld", ["-r", "-o", `${path}.ld-r.o`, path]);
  assert.deepEqual(elflint(path), original ? elflint(original) : []);
}

/** symbolKey describes a symbol independently of its index, for comparing two objects. */
function symbolKey(elf: ElfFile, s: ElfSymbol): string {
  const where = ElfFile.isSpecialIndex(s) ? `shn${s.shndx}` : elf.sectionOf(s)!.name;
  return `${elf.symbolName(s)} ${s.type} ${s.bind} ${s.visibility} ${where} ${s.value} ${s.size}`;
}

function relocKeys(elf: ElfFile, secName: string): string[] {
  return elf
    .relocations(elf.sectionByName(secName)!)
    .map((r) => `${r.offset} ${relocTypeName(r.type)} ${elf.symbolName(elf.symbols[r.sym])} ${r.addend}`);
}

/** copyAll copies every section the writer does not rebuild itself. */
function copyAll(path: string): { orig: ElfFile; copy: ElfFile; out: string } {
  const orig = ElfFile.open(path);
  const keep = orig.sections
    .filter((s) => ![SHT.NULL, SHT.SYMTAB, SHT.STRTAB, SHT.RELA, SHT.GROUP].includes(s.type as 0))
    .map((s) => s.index);
  const out = path.replace(/\.o$/, ".copy.o");
  writeFileSync(out, extractSections(orig, keep, { keepAbsolute: true }));
  return { orig, copy: ElfFile.open(out), out };
}

describe("ObjectWriter round trip", () => {
  for (const name of ["math", "kernel", "pic", "group"] as const) {
    test(`a copy of the ${name} fixture passes readelf, objdump, ld -r and eu-elflint and keeps its meaning`, () => {
      const { orig, copy, out } = copyAll(fx[name]);
      checkWithTools(out, fx[name]);
      // The copy keeps undefined symbols only when a relocation needs them (gas adds an unused
      // _GLOBAL_OFFSET_TABLE_ to objects with GOT relocations).
      const keyed = (e: ElfFile) => {
        const used = new Set(e.sections.flatMap((s) => e.relocations(s).map((r) => r.sym as number)));
        return e.symbols
          .filter((s) => s.index !== 0 && s.type !== STT.FILE && s.type !== STT.SECTION)
          .filter((s) => s.shndx !== SHN.UNDEF || used.has(s.index))
          .map((s) => symbolKey(e, s))
          .sort();
      };
      assert.deepEqual(keyed(copy), keyed(orig));
      for (const s of orig.sections)
        if (s.type !== SHT.RELA && s.type !== SHT.GROUP && orig.relaSectionsFor(s).length > 0)
          assert.deepEqual(relocKeys(copy, s.name), relocKeys(orig, s.name), `relocations of ${s.name}`);
      for (const s of copy.sections)
        if (s.type === SHT.PROGBITS)
          assert.deepEqual(copy.sectionData(s), orig.sectionData(orig.sectionByName(s.name)!), s.name);
      assert.deepEqual(
        copy.groups().map((g) => [g.signature, g.flags, g.members.map((m) => copy.sections[m].name)]),
        orig.groups().map((g) => [g.signature, g.flags, g.members.map((m) => orig.sections[m].name)]),
      );
      // readelf agrees with our reader about the copy's symbol table layout.
      const symtab = readelfSections(out).find((s) => s.name === ".symtab")!;
      const syms = readelfSymbols(out);
      assert.ok(syms.slice(1, symtab.info).every((s) => s.bind === "LOCAL"));
      assert.ok(syms.slice(symtab.info).every((s) => s.bind !== "LOCAL"));
    });
  }

  test("a program linked with the copied object behaves like one linked with the original", () => {
    const { out } = copyAll(fx.math);
    const main = compileC(dir, "main", MAIN_C, ["-O2"]);
    const a = join(dir, "prog-orig");
    const b = join(dir, "prog-copy");
    run("gcc-12", ["-o", a, main, fx.math]);
    run("gcc-12", ["-o", b, main, out]);
    const want = run(a, []);
    assert.equal(want, "hello 9 24 0\n");
    assert.equal(run(b, []), want);
  });

  test("extracting one function turns references into dropped sections into undefined symbols", () => {
    const orig = ElfFile.open(fx.math);
    const keep = [orig.sectionByName(".text.add")!.index, orig.sectionByName(".text.twice")!.index];
    const res = copySections(orig, keep);
    const out = join(dir, "extract.o");
    writeFileSync(out, res.writer.write());
    checkWithTools(out);
    const e = ElfFile.open(out);
    assert.deepEqual(
      e.sections.map((s) => s.name),
      [
        "",
        ".text.add",
        ".rela.text.add",
        ".text.twice",
        ".rela.text.twice",
        ".symtab",
        ".strtab",
        ".shstrtab",
      ],
    );
    const undef = e.symbols.filter((s) => s.index !== 0 && s.shndx === SHN.UNDEF).map((s) => s.name);
    // `hidden` was a static in a dropped .data section, reached through its section symbol.
    assert.deepEqual(undef, ["hidden"]);
    assert.deepEqual(res.externalized, [{ name: "hidden", wasLocal: true }]);
    const counter = e.symbols.find((s) => s.name === "counter")!;
    assert.equal(counter.shndx, SHN.COMMON);
    assert.deepEqual(relocKeys(e, ".text.twice"), relocKeys(orig, ".text.twice"));
    // Every relocation of .text.add now names a real symbol, with the addend moved accordingly.
    const before = orig.relocations(orig.sectionByName(".text.add")!);
    const after = e.relocations(e.sectionByName(".text.add")!);
    assert.equal(after.length, before.length);
    for (const r of after) assert.notEqual(e.symbols[r.sym].type, STT.SECTION);
  });

  test("a section symbol into a dropped section without a named symbol is refused", () => {
    const orig = ElfFile.open(fx.math);
    // .data.rel.local.msg points at the string literal in .rodata.str1.1, which has no symbol.
    const msg = orig.sections.find((s) => s.name.startsWith(".data.rel") && s.name.endsWith("msg"))!;
    assert.throws(
      () => copySections(orig, [msg.index]),
      (e: unknown) => {
        assert.ok(e instanceof ElfWriteError);
        assert.match(e.message, /\.rodata\.str1\.1/);
        return true;
      },
    );
  });
});

describe("ObjectWriter from scratch", () => {
  test("locals go before globals, sh_info is right, strings are stored once", () => {
    const w = new ObjectWriter();
    const text = w.addSection({
      name: ".text.f",
      flags: SHF.ALLOC | SHF.EXECINSTR,
      data: new Uint8Array([0xe8, 0, 0, 0, 0, 0xc3]),
      addralign: 16,
    });
    const bss = w.addSection({
      name: ".bss.v",
      type: SHT.NOBITS,
      flags: SHF.ALLOC | SHF.WRITE,
      size: 64,
      addralign: 8,
    });
    const f = w.addSymbol({ name: "f", type: STT.FUNC, section: text, size: 6 });
    w.addSymbol({ name: "v", type: STT.OBJECT, section: bss, size: 64, bind: STB.LOCAL });
    const g = w.addSymbol({ name: "g" });
    w.addSymbol({ name: "K", section: SHN.ABS, value: 42 });
    w.addSymbol({ name: "c", type: STT.OBJECT, section: SHN.COMMON, value: 8, size: 16 });
    w.addSymbol({ name: "w", bind: STB.WEAK, type: STT.FUNC, section: text });
    w.addRelocation(text, { offset: 1, type: R_X86_64.PLT32, symbol: g, addend: -4 });
    const ptr = w.addSection({
      name: ".data.p",
      flags: SHF.ALLOC | SHF.WRITE,
      data: new Uint8Array(8),
      addralign: 8,
    });
    w.addRelocation(ptr, { offset: 0, type: R_X86_64["64"], symbol: w.sectionSymbol(bss), addend: 8 });
    w.addGroup(f, [text]);
    const out = join(dir, "scratch.o");
    writeFileSync(out, w.write());
    checkWithTools(out);
    const e = ElfFile.open(out);
    assert.deepEqual(
      e.symbols.map((s) => [s.name, s.bind]),
      [
        ["", STB.LOCAL],
        ["v", STB.LOCAL],
        ["", STB.LOCAL],
        ["f", STB.GLOBAL],
        ["g", STB.GLOBAL],
        ["K", STB.GLOBAL],
        ["c", STB.GLOBAL],
        ["w", STB.WEAK],
      ],
    );
    assert.equal(e.symtabSection!.info, 3);
    assert.equal(e.symbolName(e.symbols[2]), ".bss.v");
    const rela = e.sectionByName(".rela.text.f")!;
    assert.equal(rela.link, e.symtabSection!.index);
    assert.equal(rela.info, e.sectionByName(".text.f")!.index);
    assert.equal(rela.flags & BigInt(SHF.INFO_LINK | SHF.GROUP), BigInt(SHF.INFO_LINK | SHF.GROUP));
    assert.equal(e.groups()[0].signature, "f");
    assert.equal(e.sectionByName(".bss.v")!.size, 64n);
    // ".text.f" appears once in .shstrtab even though ".rela.text.f" also contains it.
    const names = Buffer.from(e.sectionData(e.sectionByName(".shstrtab")!))
      .toString("latin1")
      .split("\0");
    assert.equal(new Set(names).size, names.length - 1, "only the leading empty string repeats");
  });

  test("refuses what it cannot write", () => {
    const w = new ObjectWriter();
    const other = new ObjectWriter();
    const s = w.addSection({ name: ".text", data: new Uint8Array(4) });
    assert.throws(() => w.addSection({ name: ".symtab", type: SHT.SYMTAB }), ElfWriteError);
    assert.throws(() => w.addRelocation(s, { offset: 2, type: R_X86_64["64"] }), ElfWriteError);
    assert.throws(() => w.addSymbol({ name: "x", section: other.addSection({ name: ".t" }) }), ElfWriteError);
    assert.throws(() => w.addSymbol({ name: "l", bind: STB.LOCAL }), ElfWriteError);
    assert.throws(
      () => w.addSection({ name: ".a", data: new Uint8Array(1), addralign: 3 }).owner.write(),
      ElfWriteError,
    );
  });

  test("66,000 sections use extended numbering and SHT_SYMTAB_SHNDX, and readelf agrees", () => {
    const w = new ObjectWriter();
    const n = 66_000;
    const ret = new Uint8Array([0xc3]);
    let last = w.addSection({ name: ".text.f0", flags: SHF.ALLOC | SHF.EXECINSTR, data: ret });
    for (let i = 0; i < n; i++) {
      if (i > 0) last = w.addSection({ name: `.text.f${i}`, flags: SHF.ALLOC | SHF.EXECINSTR, data: ret });
      if (i % 1000 === 0 || i === n - 1)
        w.addSymbol({ name: `f${i}`, type: STT.FUNC, section: last, size: 1 });
    }
    const call = w.addSection({
      name: ".text.caller",
      flags: SHF.ALLOC | SHF.EXECINSTR,
      data: new Uint8Array(5),
    });
    w.addRelocation(call, {
      offset: 1,
      type: R_X86_64.PLT32,
      symbol: w.addSymbol({ name: "elsewhere" }),
      addend: -4,
    });
    const out = join(dir, "many.o");
    writeFileSync(out, w.write());
    checkWithTools(out);
    const e = ElfFile.open(out);
    assert.equal(e.header.shnum, 0, "e_shnum is 0 and the count lives in section 0");
    assert.equal(e.sections.length, n + 7);
    assert.ok(e.sections.some((s) => s.type === SHT.SYMTAB_SHNDX));
    const lastSym = e.symbols.find((s) => s.name === `f${n - 1}`)!;
    assert.ok(lastSym.extended);
    assert.equal(e.sectionOf(lastSym)!.name, `.text.f${n - 1}`);
    const head = run("readelf", ["-hW", out]);
    assert.match(head, new RegExp(`Number of section headers:\\s+0 \\(${n + 7}\\)`));
    const syms = readelfSymbols(out);
    const r = syms.find((s) => s.name === `f${n - 1}`)!;
    assert.equal(Number(r.ndx), lastSym.shndx);
    assert.ok(lastSym.shndx >= SHN.LORESERVE);
    assert.match(run("objdump", ["-dr", "-j", ".text.caller", out]), /R_X86_64_PLT32\s+elsewhere-0x4/);
  });
});
