// DecodeCursor, which run-pre matching decodes live code with, against decoding a fresh slice
// per instruction (what it replaced), at every offset of real and arbitrary code.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DecodeCursor, decode, type Insn } from "../../src/x86/decode.js";

function oneBySlice(bytes: Uint8Array, offset: number): Insn | undefined {
  if (offset >= bytes.length) return undefined;
  const one = decode(bytes.subarray(offset, Math.min(bytes.length, offset + 15)), BigInt(offset))[0];
  if (!one) return undefined;
  return { ...one, offset, target: one.target === undefined ? undefined : one.target + BigInt(offset) };
}

const CODE = Buffer.from(
  // nop5; push rbp; mov rbp,rsp; call -5; jne +0x10; jmp rel8 back; lock inc [rax]; ret; int3;
  // a truncated call at the end
  "0f1f440000" + "55" + "4889e5" + "e8fbffffff" + "0f8510000000" + "ebf0" + "f0ff00" + "c3" + "cc" + "e8aa",
  "hex",
);

test("DecodeCursor decodes each offset as a fresh slice does", () => {
  const pseudo = new Uint8Array(3000);
  for (let i = 0; i < pseudo.length; i++) pseudo[i] = (i * 2654435761) >>> 24;
  for (const bytes of [new Uint8Array(CODE), pseudo]) {
    const cursor = new DecodeCursor(bytes);
    try {
      for (let off = 0; off <= bytes.length; off++)
        assert.deepEqual(cursor.at(off), oneBySlice(bytes, off), `+${off}`);
    } finally {
      cursor.free();
    }
  }
});
