// Live kernel memory, read through /proc/kcore (root; its ELF program headers map kernel
// virtual addresses to file offsets). Run-pre matching and apply read code through LiveMemory,
// so tests give them a stand-in.
//
// Matching reads many small pieces close together (a function's first bytes, then the whole
// function, then strings and constants it refers to, then its neighbours): each read of
// /proc/kcore is a system call that walks the kernel's page tables, and slow in an emulated
// guest. So kcoreMemory reads aligned blocks once each and serves every read from them; the
// cache lives as long as the object, which a caller drops (or `forget`s) whenever the code may
// have changed since (after an update was applied).
import { PT } from "../elf/constants.js";
import { ElfFile } from "../elf/reader.js";

/** LiveMemory reads bytes of the running kernel (or a stand-in, in tests). */
export interface LiveMemory {
  read(addr: bigint, length: number): Uint8Array;
}

/** KcoreMemory is /proc/kcore opened for reading, with its block cache. */
export interface KcoreMemory extends LiveMemory {
  /** forget drops the cached blocks (the kernel's code changed since they were read). */
  forget(): void;
  close(): void;
  /** How many reads reached /proc/kcore, and how many bytes they read. */
  readonly stats: { reads: number; bytes: number };
}

/** Size of the cached blocks: a few functions' worth, one system call each. */
const BLOCK = 1n << 14n;

/** kcoreMemory opens /proc/kcore for reading live kernel memory; close it when done. */
export function kcoreMemory(path = "/proc/kcore"): KcoreMemory {
  const elf = ElfFile.open(path);
  const stats = { reads: 0, bytes: 0 };
  const direct = (addr: bigint, len: number) => {
    const b = elf.readVirtual(addr, len);
    stats.reads++;
    stats.bytes += b.length;
    return b;
  };
  const loads = elf.programHeaders.filter((ph) => ph.type === PT.LOAD);
  // Blocks by start address; null: that block could not be read whole (read exactly instead).
  const blocks = new Map<bigint, Uint8Array | null>();
  const block = (start: bigint, lo: bigint, hi: bigint): Uint8Array | null => {
    let b = blocks.get(start);
    if (b === undefined) {
      // Clipped to the segment's bytes in the file: what readVirtual reads the same way.
      const from = bmax(start, lo);
      const to = bmin(start + BLOCK, hi);
      try {
        b = direct(from, Number(to - from));
      } catch {
        b = null;
      }
      blocks.set(start, b);
    }
    return b;
  };
  return {
    stats,
    read(addr, length) {
      const end = addr + BigInt(length);
      // The first loadable segment holding the whole range, as readVirtual chooses it; a range
      // no segment holds in the file (or a long one) is read directly, with its errors.
      const ph = loads.find((p) => addr >= p.vaddr && end <= p.vaddr + p.memsz);
      if (!ph || length <= 0 || BigInt(length) > BLOCK || end > ph.vaddr + ph.filesz)
        return direct(addr, length);
      const lo = ph.vaddr;
      const hi = ph.vaddr + ph.filesz;
      const first = addr & ~(BLOCK - 1n);
      const last = (end - 1n) & ~(BLOCK - 1n);
      const out = new Uint8Array(length);
      let done = 0;
      for (let s = first; s <= last; s += BLOCK) {
        const b = block(s, lo, hi);
        const base = bmax(s, lo);
        if (!b || BigInt(b.length) < bmin(s + BLOCK, hi) - base) return direct(addr, length);
        const from = Number(bmax(addr, base) - base);
        const to = Number(bmin(end, s + BLOCK) - base);
        out.set(b.subarray(from, to), done);
        done += to - from;
      }
      return out;
    },
    forget: () => blocks.clear(),
    close: () => {
      blocks.clear();
      elf.close();
    },
  };
}

// Math.max and Math.min take numbers only.
const bmax = (a: bigint, b: bigint) => (a > b ? a : b);
const bmin = (a: bigint, b: bigint) => (a < b ? a : b);
