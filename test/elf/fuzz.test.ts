// Fuzz-style test: real objects mutated by a seeded PRNG, each parsed and walked completely.
// The only acceptable failure is an ElfFormatError; anything else (TypeError, RangeError from a
// DataView, a hang) is a reader bug. The loop is bounded in iterations and in time.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { before, test } from "node:test";
import { SHT } from "../../src/elf/constants.js";
import { ElfFile, ElfFormatError } from "../../src/elf/reader.js";
import { tempDir } from "../helpers/compile.js";
import { extractSections } from "../helpers/copy-sections.js";
import { buildElfFixtures } from "../helpers/elf-fixtures.js";
import { walkElfEach } from "./walk.js";

/** mulberry32 is a small seeded PRNG, so a failure can be replayed from its seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let corpus: { name: string; bytes: Uint8Array }[];
before(() => {
  const fx = buildElfFixtures(tempDir("ksplice-elf-fuzz-"));
  corpus = Object.entries(fx).map(([name, path]) => ({ name, bytes: readFileSync(path) }));
  // Include one object made by our own writer.
  const math = ElfFile.parse(corpus[0].bytes, "math.o");
  const keep = math.sections
    .filter((s) => ![SHT.NULL, SHT.SYMTAB, SHT.STRTAB, SHT.RELA, SHT.GROUP].includes(s.type as 0))
    .map((s) => s.index);
  corpus.push({ name: "written", bytes: extractSections(math, keep) });
});

/** mutate changes a copy of bytes: random bytes, header-table fields, big values or a truncation. */
function mutate(src: Uint8Array, rnd: () => number): Uint8Array {
  const pick = (n: number) => Math.floor(rnd() * n);
  let out = Uint8Array.from(src);
  const v = new DataView(out.buffer);
  const shoff = Number(v.getBigUint64(40, true));
  const edits = 1 + pick(4);
  for (let i = 0; i < edits; i++) {
    const r = rnd();
    if (r < 0.3) {
      out[pick(out.length)] = pick(256);
    } else if (r < 0.6 && shoff + 64 <= out.length) {
      // Section headers and the ELF header hold most of the structure: aim there.
      const o = rnd() < 0.2 ? pick(64) : shoff + pick(out.length - shoff);
      out[o] = [0, 0xff, 1, pick(256)][pick(4)];
    } else if (r < 0.85) {
      const o = pick(Math.max(1, out.length - 4));
      const vals = [0xffffffff, 0x7fffffff, 0xff00, 0xffff, out.length, out.length + 1, pick(64)];
      if (o + 4 <= out.length) v.setUint32(o, vals[pick(vals.length)], true);
    } else {
      out = out.subarray(0, pick(out.length));
      break;
    }
  }
  return out;
}

test("mutated objects give ElfFormatError or parse; never another error, never a hang", () => {
  const seed = 0x5eed;
  const rnd = mulberry32(seed);
  const deadline = Date.now() + 4000;
  let runs = 0;
  let formatErrors = 0;
  for (let i = 0; i < 4000 && Date.now() < deadline; i++) {
    const base = corpus[i % corpus.length];
    const bytes = mutate(base.bytes, rnd);
    const name = `${base.name}#${i}`;
    const check = (e: unknown) => {
      if (e instanceof ElfFormatError) {
        formatErrors++;
        assert.ok(e.message.startsWith(`${name}: `), e.message);
        return;
      }
      assert.fail(`seed ${seed} iteration ${i} (${base.name}): ${e instanceof Error ? e.stack : String(e)}`);
    };
    try {
      walkElfEach(ElfFile.parse(bytes, name), check);
    } catch (e) {
      check(e);
    }
    runs++;
  }
  assert.ok(runs >= 500, `only ${runs} runs in the time allowed`);
  assert.ok(formatErrors > 0, "the mutations should break something");
});
