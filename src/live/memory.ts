// Live kernel memory, read through /proc/kcore (root; its ELF program headers map kernel
// virtual addresses to file offsets). Run-pre matching and apply read code through LiveMemory,
// so tests give them a stand-in.
import { ElfFile } from "../elf/reader.js";

/** LiveMemory reads bytes of the running kernel (or a stand-in, in tests). */
export interface LiveMemory {
  read(addr: bigint, length: number): Uint8Array;
}

/** kcoreMemory opens /proc/kcore for reading live kernel memory; close it when done. */
export function kcoreMemory(path = "/proc/kcore"): LiveMemory & { close(): void } {
  const elf = ElfFile.open(path);
  return { read: (addr, len) => elf.readVirtual(addr, len), close: () => elf.close() };
}
