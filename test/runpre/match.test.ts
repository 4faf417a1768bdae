// Run-pre matching (src/runpre/match.ts) against a fake running kernel, no VM needed.
//
// A small C file is compiled the way the kernel's build compiles it (gcc-12 -O2 -pg -mfentry
// -mrecord-mcount -mcmodel=kernel, and no -ffunction-sections, so the static helpers share
// .text with the global function). The test then "boots" it: each allocated section is laid
// out at a chosen kernel address, the object's RELA relocations are applied by hand against
// invented addresses for the externs, and every `call __fentry__` listed in __mcount_loc is
// turned into the 5-byte ftrace nop, as the kernel does at boot. /proc/kallsyms is generated
// to match, with decoys: another `t lookup` (a same-named static of another file) and another
// `t compute`, both with other code. Each test then breaks one thing, or stacks an earlier
// update on top, and checks what RunPre makes of it.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { R_X86_64, relocInfo, SHF, SHN, SHT, STB, STT } from "../../src/elf/constants.js";
import { ElfFile, type ElfSection } from "../../src/elf/reader.js";
import { UserError } from "../../src/errors.js";
import { Kallsyms } from "../../src/live/kallsyms.js";
import { type LiveMemory, RunPre } from "../../src/runpre/match.js";
import { decode } from "../../src/x86/decode.js";
import { compileC, tempDir } from "../helpers/compile.js";

/** The kernel's own code-generation flags, as far as matching cares (plus source order). */
const KERNEL_CFLAGS = [
  "-O2",
  "-pg",
  "-mfentry",
  "-mrecord-mcount",
  "-fno-pic",
  "-mcmodel=kernel",
  "-fno-asynchronous-unwind-tables",
  "-fno-toplevel-reorder",
];

// -fno-toplevel-reorder keeps source order in .text: compute first, then its static helpers,
// so compute's calls to them go forward; rescale, last, calls scale backward. (Without it gcc
// emits the noinline helpers before their callers.) Calls to the static helpers are resolved
// by the assembler: they carry no relocation.
const SOURCE = `
extern int ext_var;
extern void ext_fn(const char *msg, int v);

static int counter;
static int lookup(int x);
static int scale(int x);

int compute(int x)
{
	int a = lookup(x);
	int b = scale(a);
	if (b > 100)
		ext_fn("compute: large value", b);
	return a + b + ext_var;
}

static __attribute__((noinline, noclone)) int lookup(int x)
{
	counter += x;
	return counter * 3 + 1;
}

static __attribute__((noinline, noclone)) int scale(int x)
{
	return x * 5 + 7;
}

int spare(int x)
{
	return x ^ 0x55;
}

int rescale(int x)
{
	return scale(x) ^ x;
}

/* The kernel's LOCK_PREFIX: the prefix's address goes to .smp_locks, which the kernel rewrites
 * to a DS prefix (3e) on a machine with one CPU. */
void bump(void)
{
	asm volatile(".pushsection .smp_locks,\\"a\\"\\n.balign 4\\n.long 671f - .\\n.popsection\\n"
		     "671:\\n\\tlock; incl %0" : "+m"(counter));
}
`;

const OBJ = "lib/fixture.o";
const STRING = "compute: large value";

const objPath = compileC(tempDir(), "fixture", SOURCE, KERNEL_CFLAGS);
const elf = ElfFile.parse(readFileSync(objPath), objPath);

// Layout of the fake kernel.
const KTEXT = 0xffffffff81000000n; // start of kernel text: the decoys live here
const DECOY_COMPUTE = KTEXT;
const DECOY_LOOKUP = KTEXT + 0x80n;
const TEXT = 0xffffffff81001000n; // the object's .text
const STR = 0xffffffff82000000n; // its .rodata.str1.1
const DATA = 0xffffffff82800000n; // its .data
const BSS = 0xffffffff83000000n; // its .bss
const OTHER = 0xffffffff84000000n; // any other allocated section (e.g. __mcount_loc)
const EXTERNS: Record<string, bigint> = {
  __fentry__: 0xffffffff81e00000n,
  ext_fn: 0xffffffff81400000n,
  ext_var: 0xffffffff82900000n,
};
const MODULE = 0xffffffffc0002000n; // an earlier update's module code (stacked test)
const FTRACE_NOP = [0x0f, 0x1f, 0x44, 0x00, 0x00];

const hex = (v: bigint) => `0x${v.toString(16)}`;

/** A symbol of the fixture object, by name. */
function sym(name: string) {
  const s = elf.symbols.find((x) => x.name === name && (x.type === STT.FUNC || x.type === STT.OBJECT));
  assert.ok(s, `fixture has no symbol ${name}`);
  return s;
}

function section(name: string): ElfSection {
  const s = elf.sectionByName(name);
  assert.ok(s, `fixture has no section ${name}`);
  return s;
}

/** FakeKernel is a booted copy of the fixture: mapped memory plus kallsyms lines. */
class FakeKernel implements LiveMemory {
  readonly regions: Array<{ addr: bigint; bytes: Uint8Array }> = [];
  readonly bases = new Map<number, bigint>();
  /** kallsyms lines; tests may edit them before calling runPre(). */
  lines: string[] = [];

  constructor() {
    // Place every allocated section.
    let other = OTHER;
    const fixed: Record<string, bigint> = {
      ".text": TEXT,
      ".rodata.str1.1": STR,
      ".data": DATA,
      ".bss": BSS,
    };
    for (const s of elf.sections) {
      if ((s.flags & BigInt(SHF.ALLOC)) === 0n) continue;
      const at = fixed[s.name] ?? other;
      if (!(s.name in fixed)) other += 0x1000n;
      this.bases.set(s.index, at);
    }
    // Kernel text: decoys, then the object's .text, then _etext; gaps are int3.
    const text = section(".text");
    const etext = TEXT + ((text.size + 15n) & ~15n) + 0x40n;
    this.map(KTEXT, new Uint8Array(Number(etext - KTEXT)).fill(0xcc));
    // Decoy compute: lea 0x1(%rdi),%eax; ret. Decoy lookup: xor %eax,%eax; ret.
    this.write(DECOY_COMPUTE, [...FTRACE_NOP, 0x8d, 0x47, 0x01, 0xc3]);
    this.write(DECOY_LOOKUP, [...FTRACE_NOP, 0x31, 0xc0, 0xc3]);
    for (const s of elf.sections) {
      const at = this.bases.get(s.index);
      if (at === undefined || s.size === 0n) continue;
      if (s.name === ".text") this.write(at, elf.sectionData(s));
      // A copy: sectionData may be a view of the object file's bytes, which must stay intact.
      else
        this.map(
          at,
          s.type === SHT.NOBITS ? new Uint8Array(Number(s.size)) : new Uint8Array(elf.sectionData(s)),
        );
    }
    for (const s of elf.sections) {
      const at = this.bases.get(s.index);
      if (at !== undefined && s.type !== SHT.NOBITS) this.relocate(s, 0, Number(s.size), at);
    }
    // What ftrace does at boot: every recorded `call __fentry__` becomes a 5-byte nop.
    for (const site of this.ftraceSites()) this.write(site, FTRACE_NOP);

    // /proc/kallsyms.
    const line = (addr: bigint, type: string, name: string, module?: string) =>
      `${addr.toString(16)} ${type} ${name}${module ? `\t[${module}]` : ""}`;
    for (const s of elf.symbols) {
      if (s.type !== STT.FUNC && s.type !== STT.OBJECT) continue;
      const at = this.bases.get(s.shndx);
      if (at === undefined) continue;
      const sec = elf.sections[s.shndx];
      const letter =
        s.type === STT.FUNC
          ? "t"
          : sec.type === SHT.NOBITS
            ? "b"
            : (sec.flags & BigInt(SHF.WRITE)) !== 0n
              ? "d"
              : "r";
      this.lines.push(line(at + s.value, s.bind === STB.LOCAL ? letter : letter.toUpperCase(), s.name));
    }
    this.lines.push(
      line(DECOY_COMPUTE, "t", "compute"),
      line(DECOY_LOOKUP, "t", "lookup"),
      line(etext, "T", "_etext"),
      line(EXTERNS.__fentry__, "T", "__fentry__"),
      line(EXTERNS.ext_fn, "T", "ext_fn"),
      line(EXTERNS.ext_var, "D", "ext_var"),
    );
  }

  /** addr is where a fixture symbol lives in this kernel. */
  addr(name: string): bigint {
    const s = sym(name);
    return this.bases.get(s.shndx)! + s.value;
  }

  map(addr: bigint, bytes: Uint8Array): void {
    this.regions.push({ addr, bytes });
  }

  private region(addr: bigint, length: number): { bytes: Uint8Array; at: number } {
    for (const r of this.regions)
      if (addr >= r.addr && addr + BigInt(length) <= r.addr + BigInt(r.bytes.length))
        return { bytes: r.bytes, at: Number(addr - r.addr) };
    throw new Error(`fake kernel: ${length} bytes at ${hex(addr)} are not mapped`);
  }

  read(addr: bigint, length: number): Uint8Array {
    const { bytes, at } = this.region(addr, length);
    return new Uint8Array(bytes.subarray(at, at + length));
  }

  write(addr: bigint, data: ArrayLike<number>): void {
    const { bytes, at } = this.region(addr, data.length);
    bytes.set(data, at);
  }

  /**
   * relocate applies the relocations of sec that fall in [from, to) to the copy of those
   * bytes at `addr` (P is the field's address in that copy).
   */
  relocate(sec: ElfSection, from: number, to: number, addr: bigint): void {
    for (const r of elf.relocations(sec)) {
      const off = Number(r.offset);
      if (off < from || off >= to) continue;
      const s = elf.symbols[r.sym];
      const S =
        s.shndx === SHN.UNDEF
          ? EXTERNS[s.name]
          : (this.bases.get(s.shndx) ?? assert.fail(`no base for ${s.name}`)) + s.value;
      assert.ok(S !== undefined, `no address for extern ${s.name}`);
      const P = addr + BigInt(off - from);
      const field = Buffer.alloc(relocInfo(r.type)?.size ?? 0);
      switch (r.type) {
        case R_X86_64.PC32:
        case R_X86_64.PLT32:
          field.writeInt32LE(Number(BigInt.asIntN(64, S + r.addend - P)));
          break;
        case R_X86_64["32S"]:
          field.writeInt32LE(Number(BigInt.asIntN(64, S + r.addend)));
          break;
        case R_X86_64["32"]:
          field.writeUInt32LE(Number(S + r.addend));
          break;
        case R_X86_64["64"]:
          field.writeBigUInt64LE(BigInt.asUintN(64, S + r.addend));
          break;
        default:
          assert.fail(`fixture relocation type ${r.type} is not handled by the fake kernel`);
      }
      this.write(P, field);
    }
  }

  /** ftraceSites lists the running addresses of the fixture's __mcount_loc entries. */
  ftraceSites(): bigint[] {
    return elf.relocations(section("__mcount_loc")).map((r) => {
      const s = elf.symbols[r.sym];
      return this.bases.get(s.shndx)! + s.value + r.addend;
    });
  }

  /** runPre reads the (possibly edited) kallsyms lines and returns a matcher over this kernel. */
  runPre(): RunPre {
    const rp = new RunPre(new Kallsyms(`${this.lines.join("\n")}\n`), this);
    rp.addObject(OBJ, elf);
    return rp;
  }

  /** setKallsyms moves (or with undefined, removes) every kernel-image entry of name. */
  setKallsyms(name: string, addr: bigint | undefined): void {
    this.lines = this.lines.flatMap((l) => {
      const [, type, n, mod] = l.split(/\s+/);
      if (n !== name || mod !== undefined) return [l];
      return addr === undefined ? [] : [`${addr.toString(16)} ${type} ${n}`];
    });
  }
}

/** The UserError thrown by fn, checked for its code. */
function userError(fn: () => unknown, code: string): UserError {
  try {
    fn();
  } catch (e) {
    assert.ok(
      e instanceof UserError,
      `expected a UserError, got ${e instanceof Error ? e.stack : String(e)}`,
    );
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected a UserError with code ${code}, nothing was thrown`);
}

test("matchFunction finds a global function at its running address, behind its ftrace nop", () => {
  const k = new FakeKernel();
  const at = k.addr("compute");
  // The running code starts with the ftrace nop, where the object has `call __fentry__`.
  assert.deepEqual([...k.read(at, 5)], FTRACE_NOP);
  assert.equal(elf.sectionData(section(".text"))[Number(sym("compute").value)], 0xe8);
  const m = k.runPre().matchFunction(OBJ, "compute");
  assert.equal(m.addr, at);
  assert.notEqual(m.addr, DECOY_COMPUTE);
  assert.equal(m.name, "compute");
  assert.equal(m.object, OBJ);
  // Its exact length, as matched: kallsyms' size runs on to the next symbol, past the padding.
  assert.equal(m.size, sym("compute").size);
  assert.ok(m.size <= k.addr("lookup") - at);
  assert.equal(m.via, undefined);
});

test("matchFunction picks the right copy of a static name that kallsyms lists twice", () => {
  const k = new FakeKernel();
  const m = k.runPre().matchFunction(OBJ, "lookup");
  assert.equal(m.addr, TEXT + sym("lookup").value);
  assert.notEqual(m.addr, DECOY_LOOKUP);
});

test("a call back to a static helper earlier in .text is followed (the kernel's usual order)", () => {
  // rescale calls scale, which sits before it in .text: a backward call with no relocation.
  assert.ok(sym("scale").value < sym("rescale").value);
  const k = new FakeKernel();
  const m = k.runPre().matchFunction(OBJ, "rescale");
  assert.equal(m.addr, TEXT + sym("rescale").value);
});

test("addressOf: statics from the learned section bases, globals from kallsyms", () => {
  const k = new FakeKernel();
  const rp = k.runPre();
  rp.matchFunction(OBJ, "compute");
  // The static helper: where compute's call lands, not the decoy of the same name.
  const lookup = rp.addressOf(OBJ, "lookup", true);
  assert.equal(lookup, TEXT + sym("lookup").value);
  assert.notEqual(lookup, DECOY_LOOKUP);
  assert.equal(rp.addressOf(OBJ, "scale", true), TEXT + sym("scale").value);
  // The static variable: only lookup refers to it, so its section base is learned from lookup.
  assert.equal(rp.addressOf(OBJ, "counter", true), BSS + sym("counter").value);
  // Globals defined elsewhere.
  assert.equal(rp.addressOf(OBJ, "ext_var", false), EXTERNS.ext_var);
  assert.equal(rp.addressOf(OBJ, "ext_fn", false), EXTERNS.ext_fn);
});

test("a lock prefix is matched whether the kernel kept it (SMP) or made it a DS prefix (one CPU)", () => {
  const sites = elf.relocations(section(".smp_locks")).map((r) => {
    const s = elf.symbols[r.sym];
    return new FakeKernel().bases.get(s.shndx)! + s.value + r.addend;
  });
  assert.equal(sites.length, 1);
  const smp = new FakeKernel();
  assert.equal(smp.read(sites[0], 1)[0], 0xf0);
  assert.equal(smp.runPre().matchFunction(OBJ, "bump").addr, smp.addr("bump"));
  const up = new FakeKernel();
  up.write(sites[0], [0x3e]);
  assert.equal(up.runPre().matchFunction(OBJ, "bump").addr, up.addr("bump"));
  // Any other byte there is a difference in the code.
  const other = new FakeKernel();
  other.write(sites[0] + 1n, [0xfe]);
  const e = userError(() => other.runPre().matchFunction(OBJ, "bump"), "no_match");
  assert.match(e.message, /The running code differs from the update's pre build/);
});

test("a changed instruction in the running code is no_match, naming the instruction", () => {
  const k = new FakeKernel();
  // First instruction of compute after its ftrace site that is neither a branch nor relocated.
  const u = sym("compute");
  const bytes = elf.sectionData(section(".text")).subarray(Number(u.value), Number(u.value + u.size));
  const relocated = elf.relocations(section(".text")).map((r) => Number(r.offset - u.value));
  const insn = decode(bytes).find(
    (i) =>
      i.offset >= 5 &&
      i.branch === "none" &&
      !relocated.some((o) => o >= i.offset && o < i.offset + i.length),
  );
  assert.ok(insn, "compute has a plain instruction");
  const last = k.addr("compute") + BigInt(insn.offset + insn.length - 1);
  k.write(last, [k.read(last, 1)[0] ^ 0x01]);
  const e = userError(() => k.runPre().matchFunction(OBJ, "compute"), "no_match");
  assert.match(e.message, /\bcompute\b/);
  assert.match(e.message, new RegExp(`at \\+0x${insn.offset.toString(16)} expected `));
  assert.match(e.message, /found /);
});

test("a reference to a global that kallsyms places elsewhere is no_match", () => {
  const k = new FakeKernel();
  // The running code reads ext_var at EXTERNS.ext_var; kallsyms says it lives elsewhere.
  k.setKallsyms("ext_var", EXTERNS.ext_var + 0x40n);
  const e = userError(() => k.runPre().matchFunction(OBJ, "compute"), "no_match");
  assert.match(e.message, /\bcompute\b/);
  assert.match(e.message, /ext_var/);
});

test("a changed string literal in the running kernel is no_match", () => {
  const k = new FakeKernel();
  const at = STR + BigInt(Buffer.from(elf.sectionData(section(".rodata.str1.1"))).indexOf(STRING));
  assert.equal(Buffer.from(k.read(at, STRING.length)).toString("latin1"), STRING);
  k.write(at, Buffer.from("C"));
  const e = userError(() => k.runPre().matchFunction(OBJ, "compute"), "no_match");
  assert.match(e.message, /\bcompute\b/);
  assert.match(e.message, /Compute: large value/);
});

test("a function missing from kallsyms is failed_to_find", () => {
  const k = new FakeKernel();
  k.setKallsyms("spare", undefined);
  const e = userError(() => k.runPre().matchFunction(OBJ, "spare"), "failed_to_find");
  assert.match(e.message, /\bspare\b/);
  assert.match(e.message, /kallsyms/);
  // A name the pre object does not define at all is failed_to_find too.
  userError(() => k.runPre().matchFunction(OBJ, "no_such_function"), "failed_to_find");
});

test("a function redirected by an earlier update is followed into the ksplice module", () => {
  const k = new FakeKernel();
  const orig = k.addr("compute");
  const u = sym("compute");
  const text = section(".text");
  const size = Number(u.size);
  const start = Number(u.value);
  // The earlier update's copy of compute, linked for its own address: relocations applied
  // with the copy's P, and the assembler-resolved calls to the static helpers re-aimed.
  const copy = new Uint8Array(0x100).fill(0xcc);
  copy.set(elf.sectionData(text).subarray(start, start + size));
  k.map(MODULE, copy);
  k.relocate(text, start, start + size, MODULE);
  const relocated = elf.relocations(text).map((r) => Number(r.offset) - start);
  let reaimed = 0;
  for (const i of decode(copy.subarray(0, size), orig)) {
    if (i.branch === "none" || relocated.some((o) => o >= i.offset && o < i.offset + i.length)) continue;
    const t = Number(i.target!);
    if (t >= 0 && t < size) continue;
    assert.ok(i.length >= 5, "a short branch leaves compute: cannot move it");
    const field = Buffer.alloc(4);
    field.writeInt32LE(Number(orig + BigInt(t) - (MODULE + BigInt(i.offset + i.length))));
    k.write(MODULE + BigInt(i.offset + i.length - 4), field);
    reaimed++;
  }
  assert.ok(reaimed >= 2, "compute calls lookup and scale directly");
  k.write(MODULE, FTRACE_NOP);
  k.lines.push(
    `${MODULE.toString(16)} t compute\t[ksplice_abc]`,
    `${(MODULE + 0x100n).toString(16)} t ksplice_abc_end\t[ksplice_abc]`,
  );
  // ksplice's trampoline: right after the ftrace nop, jmp rel32 to the copy.
  const jmp = Buffer.alloc(5);
  jmp[0] = 0xe9;
  jmp.writeInt32LE(Number(MODULE - (orig + 10n)), 1);
  k.write(orig + 5n, jmp);

  const rp = k.runPre();
  const m = rp.matchFunction(OBJ, "compute");
  assert.equal(m.addr, MODULE);
  assert.deepEqual(m.via, { addr: orig, module: "ksplice_abc" });
  // Its size is the length matched, not kallsyms' distance to the module's next symbol.
  assert.equal(m.size, sym("compute").size);
  // What the copy's calls say about the helpers is still the kernel's own .text.
  assert.equal(rp.addressOf(OBJ, "lookup", true), TEXT + sym("lookup").value);
});
