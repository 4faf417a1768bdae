// Jump planning: where the 5-byte jump to a replacement goes in a running function, and what
// must be there now. One rule for apply and for the lab's host-side tests.
import { UserError } from "../errors.js";
import type { Patch } from "./core.js";

/** FTRACE_NOP is the 5-byte nop the kernel leaves at a traceable function's entry. */
export const FTRACE_NOP = Uint8Array.from([0x0f, 0x1f, 0x44, 0x00, 0x00]);
const CALL = 0xe8;

/** JUMP_SIZE is the length of the `jmp rel32` written at a patch site. */
export const JUMP_SIZE = 5;

/**
 * planPatch computes the jump replacing function `fn` (running at fn.addr, fn.size bytes, whose
 * first bytes are `head`) by the code at replacement.addr. A traceable function keeps its
 * ftrace site, a nop or (while traced) a call, and the jump goes right after it, so the
 * function stays traceable.
 */
export function planPatch(
  fn: {
    name: string;
    addr: bigint;
    size: bigint;
    runtimeSites?: Array<{ offset: number; length: number; table: string }>;
  },
  head: Uint8Array,
  replacement: { addr: bigint; size: bigint },
): Patch {
  const traced = FTRACE_NOP.every((b, i) => head[i] === b) || head[0] === CALL;
  const at = traced ? 5 : 0;
  // The kernel rewrites a jump label or static call site while running, and checks what is there
  // first (a jump of ours in it would make it stop the machine): such a site must stay clear.
  const hit = fn.runtimeSites?.find((s) => s.offset < at + JUMP_SIZE && s.offset + s.length > at);
  if (hit)
    throw new UserError(
      `${fn.name} has a ${hit.table === "__jump_table" ? "jump label (static key)" : "static call"} site at +${hit.offset}, where ksplice writes its ${JUMP_SIZE}-byte jump (at +${at}): the kernel rewrites that site while running, so this function cannot be patched yet (a limitation of ksplice)`,
      { code: "unsupported_change" },
    );
  if (fn.size < BigInt(at + JUMP_SIZE))
    throw new UserError(`${fn.name} is ${fn.size} bytes long: too short for a ${JUMP_SIZE}-byte jump`, {
      code: "no_match",
    });
  if (head.length < at + JUMP_SIZE)
    throw new Error(
      `planning the jump in ${fn.name}: ${head.length} bytes of its code read, need ${at + JUMP_SIZE}`,
    );
  return {
    name: fn.name,
    site: fn.addr + BigInt(at),
    newAddr: replacement.addr,
    fstart: fn.addr,
    fsize: fn.size,
    nstart: replacement.addr,
    nsize: replacement.size,
    expected: head.slice(at, at + JUMP_SIZE),
  };
}
