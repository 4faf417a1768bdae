// Folder src/x86: instruction decoding. Imports nothing of the project.
//
// x86-64 instruction decoding for run-pre matching, on top of iced-x86 (WebAssembly). Decodes a
// whole function at once into plain objects (offset, length, kind, branch target), so callers
// never hold wasm-side Instruction handles, and formats one instruction for error reports.
import { createRequire } from "node:module";
import { setFlagsFromString } from "node:v8";

// Keep wasm on V8's baseline compiler: in QEMU/TCG guests (the lab, and any emulated machine)
// V8's tier-up of hot wasm functions crashed Node about one run in two (segfaults, "Check failed:
// maybe_code.has_value()" in Runtime_WasmTriggerTierUp, an `unreachable` trap) while the same
// decoding never failed on hardware; baseline code is fast enough for matching. Set before the
// module below is compiled.
setFlagsFromString("--liftoff-only");
// iced-x86 is CommonJS; load it through require so its wasm initialises synchronously.
const iced = createRequire(import.meta.url)("iced-x86") as typeof import("iced-x86");

/** BranchKind tells relative branches apart; `none` is any other instruction. */
export type BranchKind = "none" | "jmp" | "jcc" | "call" | "other";

/** Insn is one decoded instruction of a function. */
export interface Insn {
  /** Offset from the start of the decoded bytes. */
  offset: number;
  length: number;
  /** iced-x86 mnemonic number: equal for `jmp rel8` and `jmp rel32`. */
  mnemonic: number;
  /** Condition code of a jcc (iced-x86 ConditionCode), else 0. */
  cc: number;
  branch: BranchKind;
  /** For a relative branch: its target as an offset from the start of the decoded bytes. */
  target?: bigint;
  invalid: boolean;
}

/** decode decodes bytes as 64-bit code starting at offset 0 (ip = base). */
export function decode(bytes: Uint8Array, base = 0n): Insn[] {
  const dec = new iced.Decoder(64, bytes, iced.DecoderOptions.None);
  dec.ip = base;
  const out: Insn[] = [];
  const insn = new iced.Instruction();
  try {
    let offset = 0;
    while (dec.canDecode) {
      dec.decodeOut(insn);
      const length = insn.length;
      let branch: BranchKind = "none";
      let target: bigint | undefined;
      if (insn.isJmpShortOrNear) branch = "jmp";
      else if (insn.isJccShortOrNear) branch = "jcc";
      else if (insn.isCallNear) branch = "call";
      else if (insn.isLoop || insn.isLoopcc || insn.isJcxShort) branch = "other";
      // Signed: a branch may land before the decoded bytes (a call to an earlier function).
      if (branch !== "none") target = BigInt.asIntN(64, insn.nearBranchTarget - base);
      out.push({
        offset,
        length,
        mnemonic: insn.mnemonic,
        cc: branch === "jcc" ? insn.conditionCode : 0,
        branch,
        target,
        invalid: insn.code === iced.Code.INVALID,
      });
      offset += length;
    }
  } finally {
    insn.free();
    dec.free();
  }
  return out;
}

/**
 * DecodeCursor decodes one instruction at any offset of a buffer, reusing one decoder and one
 * instruction (decoding a fresh slice per instruction allocates wasm objects each time, which
 * dominated run-pre matching). The result equals `decode(bytes.subarray(offset, offset + 15),
 * BigInt(offset))[0]` with offset and target moved to the whole buffer. Call free() when done.
 */
export class DecodeCursor {
  private readonly dec: InstanceType<typeof iced.Decoder>;
  private readonly insn: InstanceType<typeof iced.Instruction>;

  constructor(private readonly bytes: Uint8Array) {
    this.dec = new iced.Decoder(64, bytes, iced.DecoderOptions.None);
    this.insn = new iced.Instruction();
  }

  /** at decodes the instruction at offset (branch targets as offsets of the buffer), if any. */
  at(offset: number): Insn | undefined {
    if (offset < 0 || offset >= this.bytes.length) return undefined;
    const { dec, insn } = this;
    dec.position = offset;
    dec.ip = BigInt(offset);
    dec.decodeOut(insn);
    let branch: BranchKind = "none";
    if (insn.isJmpShortOrNear) branch = "jmp";
    else if (insn.isJccShortOrNear) branch = "jcc";
    else if (insn.isCallNear) branch = "call";
    else if (insn.isLoop || insn.isLoopcc || insn.isJcxShort) branch = "other";
    return {
      offset,
      length: insn.length,
      mnemonic: insn.mnemonic,
      cc: branch === "jcc" ? insn.conditionCode : 0,
      branch,
      target: branch === "none" ? undefined : BigInt.asIntN(64, insn.nearBranchTarget),
      invalid: insn.code === iced.Code.INVALID,
    };
  }

  free(): void {
    this.insn.free();
    this.dec.free();
  }
}

/** format disassembles the instruction at `offset` of bytes (AT&T syntax, as objdump prints). */
export function format(bytes: Uint8Array, offset: number, ip = 0n): string {
  const slice = bytes.subarray(offset, Math.min(bytes.length, offset + 15));
  if (slice.length === 0) return "(end of code)";
  const dec = new iced.Decoder(64, slice, iced.DecoderOptions.None);
  dec.ip = ip + BigInt(offset);
  const insn = dec.decode();
  const fmt = new iced.Formatter(iced.FormatterSyntax.Gas);
  try {
    const hex = Buffer.from(slice.subarray(0, insn.length))
      .toString("hex")
      .replace(/(..)(?!$)/g, "$1 ");
    return `${fmt.format(insn)} (${hex})`;
  } finally {
    fmt.free();
    insn.free();
    dec.free();
  }
}
