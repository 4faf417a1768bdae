// Reading bytes by virtual address through program headers: an executable made by ld (as a
// vmlinux is) and a hand-made core file shaped like /proc/kcore, whose segments may hold less in
// the file than in memory.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { EHDR_SIZE, ET, PHDR_SIZE, PT } from "../../src/elf/constants.js";
import { ElfFile, ElfFormatError } from "../../src/elf/reader.js";
import { FileSource } from "../../src/elf/source.js";
import { assemble, run, tempDir } from "../helpers/compile.js";

const EXEC_S = `
	.globl _start
	.text
_start:
	ret
	.data
	.globl d
d:	.quad 0x1122334455667788
	.bss
	.globl b
b:	.zero 4096
`;

/** Segment describes one PT_LOAD of a hand-made core file. */
interface Segment {
  vaddr: bigint;
  data: Uint8Array;
  memsz: bigint;
  /** Override p_offset (to point past the end of the file). */
  offset?: bigint;
}

/** makeCore writes an ET_CORE file with one PT_LOAD per segment and no sections. */
function makeCore(segments: Segment[]): Uint8Array {
  const dataStart = EHDR_SIZE + segments.length * PHDR_SIZE;
  const size = dataStart + segments.reduce((n, s) => n + s.data.length, 0);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  v.setUint16(16, ET.CORE, true);
  v.setUint16(18, 62, true);
  v.setUint32(20, 1, true);
  v.setBigUint64(32, BigInt(EHDR_SIZE), true);
  v.setUint16(52, EHDR_SIZE, true);
  v.setUint16(54, PHDR_SIZE, true);
  v.setUint16(56, segments.length, true);
  let pos = dataStart;
  segments.forEach((s, i) => {
    const o = EHDR_SIZE + i * PHDR_SIZE;
    v.setUint32(o, PT.LOAD, true);
    v.setUint32(o + 4, 7, true);
    v.setBigUint64(o + 8, s.offset ?? BigInt(pos), true);
    v.setBigUint64(o + 16, s.vaddr, true);
    v.setBigUint64(o + 32, BigInt(s.data.length), true);
    v.setBigUint64(o + 40, s.memsz, true);
    v.setBigUint64(o + 48, 4096n, true);
    out.set(s.data, pos);
    pos += s.data.length;
  });
  return out;
}

describe("readVirtual", () => {
  test("an executable linked by ld: data by address, .bss as zeros", () => {
    const dir = tempDir("ksplice-elf-virt-");
    const obj = assemble(dir, "exec", EXEC_S);
    const exe = join(dir, "exec");
    run("ld", ["-o", exe, "-e", "_start", obj]);
    const elf = ElfFile.open(exe);
    assert.equal(elf.header.type, ET.EXEC);
    const d = elf.symbols.find((s) => s.name === "d")!;
    assert.deepEqual(Buffer.from(elf.readVirtual(d.value, 8)).readBigUInt64LE(), 0x1122334455667788n);
    const b = elf.symbols.find((s) => s.name === "b")!;
    assert.deepEqual(elf.readVirtual(b.value + 8n, 16), new Uint8Array(16));
    const start = elf.symbols.find((s) => s.name === "_start")!;
    assert.equal(elf.readVirtual(start.value, 1)[0], 0xc3);
    assert.throws(() => elf.readVirtual(0x10n, 4), ElfFormatError);
    assert.throws(() => elf.readVirtual(b.value + 4090n, 64), ElfFormatError);
  });

  test("a core file: present bytes read back, missing ones and bad offsets are ElfFormatError", () => {
    const text = Uint8Array.from({ length: 32 }, (_, i) => i);
    const core = makeCore([
      { vaddr: 0xffffffff81000000n, data: text, memsz: 32n },
      { vaddr: 0xffff888000000000n, data: new Uint8Array([9, 8, 7, 6, 5, 4, 3, 2]), memsz: 4096n },
      { vaddr: 0xffffffffc0000000n, data: new Uint8Array(0), memsz: 4096n, offset: 1n << 62n },
    ]);
    const dir = tempDir("ksplice-elf-core-");
    const path = join(dir, "core");
    writeFileSync(path, core);
    for (const elf of [ElfFile.parse(core, path), ElfFile.fromSource(new FileSource(path))]) {
      assert.equal(elf.header.type, ET.CORE);
      assert.equal(elf.sections.length, 0);
      assert.deepEqual(elf.readVirtual(0xffffffff81000010n, 4), new Uint8Array([16, 17, 18, 19]));
      assert.deepEqual(elf.readVirtual(0xffff888000000002n, 2), new Uint8Array([7, 6]));
      const fails = (addr: bigint, len: number, re: RegExp) =>
        assert.throws(
          () => elf.readVirtual(addr, len),
          (e: unknown) => e instanceof ElfFormatError && e.message.startsWith(path) && re.test(e.message),
        );
      // Past filesz in a core: memory the dump does not hold.
      fails(0xffff888000000006n, 4, /holds only 0x8 of its 0x1000 bytes/);
      // Straddling the end of a segment, and an address no segment covers.
      fails(0xffffffff8100001cn, 8, /no loadable segment/);
      fails(0x1000n, 1, /no loadable segment/);
      fails(0xffffffffc0000000n, 0, /runs past the end|holds only/);
      elf.close();
    }
  });
});
