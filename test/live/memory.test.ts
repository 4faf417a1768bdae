// kcoreMemory against an ELF core file made here: its block cache must read exactly what
// ElfFile.readVirtual reads, fail where it fails, and reach the file once per block.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ElfFile } from "../../src/elf/reader.js";
import { kcoreMemory } from "../../src/live/memory.js";

/** A segment of the core: its address, bytes in the file, and size in memory. */
interface Seg {
  vaddr: bigint;
  bytes: Uint8Array;
  memsz: bigint;
}

/** coreFile lays out an ELF64 ET_CORE file with one PT_LOAD per segment. */
function coreFile(segs: Seg[]): Uint8Array {
  const phoff = 64;
  let at = phoff + 56 * segs.length;
  const out = new Uint8Array(at + segs.reduce((n, s) => n + s.bytes.length, 0));
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 4, true); // ET_CORE
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(32, BigInt(phoff), true);
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, segs.length, true);
  segs.forEach((s, i) => {
    const p = phoff + 56 * i;
    v.setUint32(p, 1, true); // PT_LOAD
    v.setBigUint64(p + 8, BigInt(at), true);
    v.setBigUint64(p + 16, s.vaddr, true);
    v.setBigUint64(p + 32, BigInt(s.bytes.length), true);
    v.setBigUint64(p + 40, s.memsz, true);
    out.set(s.bytes, at);
    at += s.bytes.length;
  });
  return out;
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + seed * 17 + (i >> 8)) & 0xff;
  return b;
}

const TEXT = 0xffffffff81000000n;
const MODS = 0xffffffffc0000000n;

function withCore(fn: (path: string, elf: ElfFile) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "ksplice-kcore-"));
  try {
    const path = join(dir, "kcore");
    writeFileSync(
      path,
      coreFile([
        { vaddr: TEXT, bytes: pattern(100_000, 1), memsz: 100_000n },
        // A segment whose memory runs past what the file holds.
        { vaddr: MODS + 0x123n, bytes: pattern(40_000, 2), memsz: 50_000n },
      ]),
    );
    const elf = ElfFile.open(path);
    try {
      fn(path, elf);
    } finally {
      elf.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const outcome = (f: () => Uint8Array) => {
  try {
    return Buffer.from(f()).toString("hex");
  } catch (e) {
    return `error: ${(e as Error).message}`;
  }
};

test("kcoreMemory reads what readVirtual reads, across blocks and segment edges", () => {
  withCore((path, elf) => {
    const mem = kcoreMemory(path);
    try {
      const cases: Array<[bigint, number]> = [
        [TEXT, 10],
        [TEXT + 16380n, 10], // across a block boundary
        [TEXT + 5n, 40_000], // several blocks
        [TEXT + 99_990n, 10], // the segment's last bytes
        [TEXT + 99_995n, 10], // past its end
        [TEXT - 4n, 8], // before it
        [MODS + 0x123n, 1],
        [MODS + 0x120n, 8], // starts before the segment
        [MODS + 0x123n + 39_990n, 10], // ends at the file's part
        [MODS + 0x123n + 39_995n, 10], // in memory the file does not hold
        [MODS + 0x123n + 16_000n, 20_000],
        [TEXT + 7n, 0],
      ];
      for (let i = 0; i < 200; i++) cases.push([TEXT + BigInt((i * 7919) % 99_000), (i * 104_729) % 900]);
      for (const [addr, len] of cases)
        assert.equal(
          outcome(() => mem.read(addr, len)),
          outcome(() => elf.readVirtual(addr, len)),
          `0x${addr.toString(16)} +${len}`,
        );
    } finally {
      mem.close();
    }
  });
});

test("kcoreMemory reads each block once until told to forget", () => {
  withCore((path) => {
    const mem = kcoreMemory(path);
    try {
      for (let i = 0; i < 50; i++) mem.read(TEXT + BigInt(i * 100), 64);
      assert.equal(mem.stats.reads, 1);
      const copy = mem.read(TEXT, 4);
      copy[0] ^= 0xff; // callers get their own bytes
      assert.notEqual(mem.read(TEXT, 4)[0], copy[0]);
      mem.forget();
      mem.read(TEXT, 4);
      assert.equal(mem.stats.reads, 2);
    } finally {
      mem.close();
    }
  });
});
