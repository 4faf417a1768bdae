// The /proc/kallsyms parser and the indexes over it, against the regular expression that
// defines the line format and against plain scans of the entries.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Kallsyms, type KallsymsEntry, parseKallsyms } from "../../src/live/kallsyms.js";

const LINE = /^([0-9a-f]+) (\S) (\S+)(?:\s+\[(\S+)\])?/;
const byRegex = (text: string): KallsymsEntry[] =>
  text.split("\n").flatMap((l) => {
    const m = LINE.exec(l);
    return m ? [{ addr: BigInt(`0x${m[1]}`), type: m[2], name: m[3], module: m[4] }] : [];
  });

const TEXT = [
  "ffffffff81000000 T _stext",
  "ffffffff81000000 T _text",
  "ffffffff81001000 t cmdline_proc_show",
  "ffffffff81001000 t cmdline_proc_show",
  "ffffffff81001040 T next_fn",
  "0000000000000000 A fixed_percpu_data",
  "ffffffffc0201000 t ftrace_trampoline\t[__builtin__ftrace]",
  "ffffffffc0001000 t m_show\t[overlay]",
  "ffffffffc0001000 t m_alias\t[overlay]",
  "ffffffffc0000f00 T m_first\t[overlay]",
  "ffffffffc0002000 T u_new\t[ksplice_u1]",
  "ffffffffc0003000 t odd\t[mo]d]",
  "ffffffffc0003010 t spaced   [sp]",
  "ffffffffc0003020 t empty\t[]",
  "ffffffffc0003030 t open\t[",
  "ffffffffc0003040 t trailing [m] extra",
  "FFFF T upper",
  "fff T",
  "fff  T twospaces",
  "zz",
  "",
  "ffffffffc0003050 t last\t[overlay]",
].join("\n");

test("parseKallsyms reads every line as the format's regular expression does", () => {
  assert.deepEqual(parseKallsyms(TEXT), byRegex(TEXT));
  assert.deepEqual(parseKallsyms(`${TEXT}\n`), byRegex(TEXT));
});

test("Kallsyms indexes agree with scans of the entries", () => {
  const ks = new Kallsyms(TEXT);
  const all = byRegex(TEXT);
  for (const e of all) {
    assert.deepEqual(
      ks.named(e.name),
      all.filter((x) => x.name === e.name),
    );
    assert.deepEqual(
      ks.at(e.addr),
      all.filter((x) => x.addr === e.addr),
    );
    assert.deepEqual(
      ks.modulesAt(e.addr),
      all.filter((x) => x.addr === e.addr && x.module !== undefined),
    );
    assert.equal(ks.loaded(e.module), true);
  }
  assert.deepEqual(ks.named("missing"), []);
  assert.equal(ks.loaded("absent"), false);
  assert.equal(ks.sizeOf(0xffffffff81001000n), 0x40n);
  assert.equal(ks.sizeOf(0xffffffff81000800n), 0x800n);
  assert.equal(ks.sizeOf(0xffffffffc0000f00n, "overlay"), 0x100n);
  assert.equal(ks.sizeOf(0xffffffffc0001000n, "overlay"), 0x2050n);
  assert.throws(() => ks.sizeOf(0xffffffffc0003050n, "overlay"), /no symbol above/);
  assert.throws(() => ks.sizeOf(0xffffffffc0002000n, "ksplice_u1"), /no symbol above/);
  assert.throws(() => ks.sizeOf(0x1000n, "absent"), /no symbol above/);
});

test("named answers the same with names announced by expect, and for others", () => {
  const all = byRegex(TEXT);
  const ks = new Kallsyms(TEXT);
  ks.expect(["cmdline_proc_show", "m_show"]);
  assert.deepEqual(
    ks.named("m_show"),
    all.filter((x) => x.name === "m_show"),
  );
  ks.expect(["_text"]);
  for (const e of all)
    assert.deepEqual(
      ks.named(e.name),
      all.filter((x) => x.name === e.name),
    );
  assert.deepEqual(ks.named("cmdline_proc_show").length, 2);
});
