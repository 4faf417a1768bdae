// Malformed input: each broken file must fail with an ElfFormatError that names the file and
// a byte offset, never a TypeError or a RangeError from reading out of range.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { before, describe, test } from "node:test";
import { SHDR_SIZE, SHT, SYM_SIZE } from "../../src/elf/constants.js";
import { ElfFile, ElfFormatError } from "../../src/elf/reader.js";
import { tempDir } from "../helpers/compile.js";
import { buildElfFixtures } from "../helpers/elf-fixtures.js";
import { walkElf } from "./walk.js";

let math: Uint8Array;
let group: Uint8Array;
let good: ElfFile;
before(() => {
  const fx = buildElfFixtures(tempDir("ksplice-elf-bad-"));
  math = readFileSync(fx.math);
  group = readFileSync(fx.group);
  good = ElfFile.parse(math, "math.o");
});

/** expectFormatError parses and walks bytes; it must fail with an ElfFormatError naming file and offset. */
function expectFormatError(bytes: Uint8Array, name: string, reason?: RegExp): void {
  assert.throws(
    () => walkElf(ElfFile.parse(bytes, name)),
    (e: unknown) => {
      assert.ok(e instanceof ElfFormatError, `want ElfFormatError, got ${String(e)}`);
      assert.ok(e.message.startsWith(`${name}: `), e.message);
      assert.match(e.message, /byte offset 0x[0-9a-f]+/);
      if (reason) assert.match(e.message, reason);
      return true;
    },
  );
}

/** patched returns a copy of bytes after `edit` has changed it through a DataView. */
function patched(bytes: Uint8Array, edit: (v: DataView) => void): Uint8Array {
  const copy = Uint8Array.from(bytes);
  edit(new DataView(copy.buffer));
  return copy;
}

const sec = (name: string) => good.sectionByName(name)!;

describe("malformed ELF input", () => {
  test("truncated at every header boundary", () => {
    const shoff = Number(good.header.shoff);
    const cuts = [0, 3, 15, 16, 40, 63, 64, shoff, shoff + 10, shoff + SHDR_SIZE, shoff + 5 * SHDR_SIZE + 7];
    cuts.push(math.length - 1);
    // And at the end of each section's contents, which lie before the header table.
    for (const s of good.sections) if (s.size > 0n && s.type !== SHT.NOBITS) cuts.push(Number(s.offset) + 1);
    for (const n of cuts) expectFormatError(math.subarray(0, n), `cut-at-${n}.o`);
  });

  test("bad magic, class, data encoding, version and machine", () => {
    expectFormatError(
      patched(math, (v) => v.setUint8(0, 0x7e)),
      "magic.o",
      /bad magic/,
    );
    expectFormatError(
      patched(math, (v) => v.setUint8(4, 1)),
      "class.o",
      /class 1/,
    );
    expectFormatError(
      patched(math, (v) => v.setUint8(5, 2)),
      "endian.o",
      /little-endian/,
    );
    expectFormatError(
      patched(math, (v) => v.setUint8(6, 0)),
      "version.o",
      /version/,
    );
    expectFormatError(
      patched(math, (v) => v.setUint16(18, 3, true)),
      "i386.o",
      /machine 3/,
    );
    expectFormatError(
      patched(math, (v) => v.setUint16(58, 40, true)),
      "shentsize.o",
      /e_shentsize/,
    );
  });

  test("header table offsets and counts out of range", () => {
    expectFormatError(
      patched(math, (v) => v.setBigUint64(40, 1n << 40n, true)),
      "shoff.o",
      /section header 0/,
    );
    expectFormatError(
      patched(math, (v) => v.setBigUint64(40, 0xffffffffffffff00n, true)),
      "shoff-huge.o",
    );
    expectFormatError(
      patched(math, (v) => v.setUint16(60, 0xfeff, true)),
      "shnum.o",
      /section header table/,
    );
    // Extended count in section 0, absurdly large: refused before anything is allocated.
    const shoff = Number(good.header.shoff);
    expectFormatError(
      patched(math, (v) => {
        v.setUint16(60, 0, true);
        v.setBigUint64(shoff + 32, 1n << 50n, true);
      }),
      "shnum-ext.o",
      /implausible section count/,
    );
    expectFormatError(
      patched(math, (v) => v.setUint16(62, 200, true)),
      "shstrndx.o",
      /name table index 200/,
    );
    expectFormatError(
      patched(math, (v) => v.setUint16(62, sec(".symtab").index, true)),
      "shstrndx-type.o",
      /not SHT_STRTAB/,
    );
    expectFormatError(
      patched(math, (v) => {
        v.setUint16(56, 1, true);
        v.setUint16(54, 56, true);
        v.setBigUint64(32, 1n << 33n, true);
      }),
      "phoff.o",
      /program header table/,
    );
  });

  test("string indices out of range", () => {
    expectFormatError(
      patched(math, (v) => v.setUint32(Number(sec(".text.add").headerOffset), 0xffffff, true)),
      "secname.o",
      /name offset 16777215/,
    );
    expectFormatError(
      patched(math, (v) => v.setUint32(Number(sec(".symtab").offset) + SYM_SIZE, 0x7fffffff, true)),
      "symname.o",
      /symbol 1 name offset/,
    );
    // A name that runs to the end of its table without a terminating NUL.
    const strtab = sec(".strtab");
    expectFormatError(
      patched(math, (v) => v.setUint8(Number(strtab.offset + strtab.size) - 1, 0x41)),
      "unterminated.o",
    );
  });

  test("section contents out of range", () => {
    const symtab = Number(sec(".symtab").headerOffset);
    expectFormatError(
      patched(math, (v) => v.setBigUint64(symtab + 24, BigInt(math.length + 100), true)),
      "symtab-offset.o",
      /past the end of the file/,
    );
    expectFormatError(
      patched(math, (v) => v.setBigUint64(symtab + 32, 1n << 62n, true)),
      "symtab-size.o",
      /too large/,
    );
    expectFormatError(
      patched(math, (v) => v.setBigUint64(symtab + 24, 0xfffffffffffffff0n, true)),
      "symtab-offset-wrap.o",
    );
    expectFormatError(
      patched(math, (v) => v.setUint32(symtab + 40, sec(".text.add").index, true)),
      "symtab-link.o",
      /not SHT_STRTAB/,
    );
    expectFormatError(
      patched(math, (v) => v.setUint32(symtab + 40, 5000, true)),
      "symtab-link-range.o",
      /names section 5000/,
    );
  });

  test("relocations that name missing symbols, sections or offsets", () => {
    const rela = sec(".rela.text.twice");
    expectFormatError(
      patched(math, (v) => v.setUint32(Number(rela.offset) + 12, 9999, true)),
      "rela-sym.o",
      /symbol 9999/,
    );
    expectFormatError(
      patched(math, (v) => v.setBigUint64(Number(rela.offset), 0x1000n, true)),
      "rela-offset.o",
      /past the end of \.text\.twice/,
    );
    expectFormatError(
      patched(math, (v) => v.setUint32(Number(rela.headerOffset) + 44, 4000, true)),
      "rela-info.o",
      /names section 4000/,
    );
  });

  test("symbols and groups that name missing sections", () => {
    const elf = ElfFile.parse(group, "group.o");
    const g = elf.sectionByName(".group")!;
    expectFormatError(
      patched(group, (v) => v.setUint32(Number(g.offset) + 4, 777, true)),
      "group-member.o",
      /group \.group names section 777/,
    );
    expectFormatError(
      patched(group, (v) => v.setUint32(Number(g.headerOffset) + 44, 555, true)),
      "group-sig.o",
      /signature symbol 555/,
    );
    // A symbol whose st_shndx is past the section table parses, but asking for its section fails.
    const foo = elf.symbols.find((s) => s.name === "foo")!;
    const bad = patched(group, (v) =>
      v.setUint16(Number(elf.symtabSection!.offset) + foo.index * SYM_SIZE + 6, 900, true),
    );
    const parsed = ElfFile.parse(bad, "sym-shndx.o");
    assert.equal(parsed.symbols[foo.index].shndx, 900);
    assert.throws(
      () => parsed.sectionOf(parsed.symbols[foo.index]),
      /sym-shndx\.o: .*byte offset 0x.*section 900/,
    );
  });
});
