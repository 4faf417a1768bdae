// Where ELF bytes come from: an in-memory buffer (objects, small files) or an open file read
// on demand (vmlinux, /proc/kcore, whose size and offsets can exceed what fits in memory or
// in a double). Offsets are bigint so that /proc/kcore offsets above 2^53 stay exact.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";

/** ByteSource is random access to the bytes of one file. */
export interface ByteSource {
  /** Name used in error messages (usually the path). */
  readonly name: string;
  /** Size in bytes; undefined when unknown (e.g. /proc/kcore reports 0 or a huge value). */
  readonly size: bigint | undefined;
  /** read returns up to `length` bytes at `offset`; fewer at end of file. */
  read(offset: bigint, length: number): Uint8Array;
  close(): void;
}

/** BufferSource serves bytes from memory. */
export class BufferSource implements ByteSource {
  readonly size: bigint;
  constructor(
    readonly name: string,
    readonly bytes: Uint8Array,
  ) {
    this.size = BigInt(bytes.length);
  }
  read(offset: bigint, length: number): Uint8Array {
    if (offset < 0n || offset >= this.size) return new Uint8Array(0);
    const start = Number(offset);
    return this.bytes.subarray(start, Math.min(start + length, this.bytes.length));
  }
  close(): void {}
}

/** FileSource reads a file on demand with positioned reads. */
export class FileSource implements ByteSource {
  readonly size: bigint | undefined;
  private fd: number;
  constructor(readonly name: string) {
    this.fd = openSync(name, "r");
    const st = fstatSync(this.fd, { bigint: true });
    this.size = st.isFile() && st.size > 0n ? st.size : undefined;
  }
  read(offset: bigint, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      // Node accepts a bigint position; it is passed to pread(2) as a 64-bit offset.
      const n = readSync(this.fd, out, done, length - done, offset + BigInt(done));
      if (n === 0) break;
      done += n;
    }
    return out.subarray(0, done);
  }
  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
