// The initramfs writer: entries read back with an independent newc parser, parents before
// children, links kept as links, archives that still parse when concatenated.
import assert from "node:assert/strict";
import { closeSync, mkdirSync, openSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { CpioWriter } from "../../src/lab/cpio.js";
import { tempDir } from "../helpers/compile.js";

interface Entry {
  name: string;
  mode: number;
  data: Buffer;
}

/** parseNewc reads every entry of (possibly concatenated, zero-padded) newc archives. */
function parseNewc(buf: Buffer): Entry[] {
  const out: Entry[] = [];
  let at = 0;
  const align = (n: number) => (n + 3) & ~3;
  while (at < buf.length) {
    if (buf[at] === 0) {
      at++;
      continue;
    }
    assert.equal(buf.toString("latin1", at, at + 6), "070701", `magic at ${at}`);
    const field = (i: number) => Number.parseInt(buf.toString("latin1", at + 6 + i * 8, at + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const name = buf.toString("latin1", at + 110, at + 110 + nameSize - 1);
    const dataAt = align(at + 110 + nameSize);
    out.push({ name, mode, data: buf.subarray(dataAt, dataAt + size) });
    at = align(dataAt + size);
  }
  return out;
}

test("CpioWriter writes files, directories and links the kernel can unpack", () => {
  const dir = tempDir();
  const host = join(dir, "host");
  mkdirSync(join(host, "sub"), { recursive: true });
  writeFileSync(join(host, "sub", "f.bin"), Buffer.from([0, 1, 2, 255]));
  symlinkSync("sub/f.bin", join(host, "link"));
  const out = join(dir, "a.cpio");
  const fd = openSync(out, "w");
  const w = new CpioWriter(fd);
  w.file("/init", "#!/bin/sh\n", 0o755);
  w.tree(host, "/deep/copy");
  w.symlink("/bin", "usr/bin");
  w.file("/bin/sh-through-link", "x");
  w.end();
  closeSync(fd);
  assert.equal(statSync(out).size % 512, 0);
  const entries = parseNewc(readFileSync(out));
  const names = entries.map((e) => e.name);
  assert.equal(names.at(-1), "TRAILER!!!");
  const init = entries.find((e) => e.name === "init")!;
  assert.equal(init.mode, 0o100755);
  assert.equal(init.data.toString(), "#!/bin/sh\n");
  // Parents come before children, each once.
  assert.ok(names.indexOf("deep") < names.indexOf("deep/copy"));
  assert.ok(names.indexOf("deep/copy/sub") < names.indexOf("deep/copy/sub/f.bin"));
  assert.equal(names.filter((n) => n === "deep").length, 1);
  assert.deepEqual(entries.find((e) => e.name === "deep/copy/sub/f.bin")!.data, Buffer.from([0, 1, 2, 255]));
  const link = entries.find((e) => e.name === "deep/copy/link")!;
  assert.equal(link.mode & 0o170000, 0o120000);
  assert.equal(link.data.toString(), "sub/f.bin");
  // A file below a link is not preceded by a directory entry that would replace the link.
  assert.equal(entries.filter((e) => e.name === "bin").length, 1);
  assert.equal(entries.find((e) => e.name === "bin")!.mode & 0o170000, 0o120000);
});

test("a second archive appended after the first parses as its continuation", () => {
  const dir = tempDir();
  const out = join(dir, "two.cpio");
  let fd = openSync(out, "w");
  let w = new CpioWriter(fd);
  w.file("/a", "first");
  w.end();
  closeSync(fd);
  fd = openSync(out, "a");
  w = new CpioWriter(fd, statSync(out).size);
  w.markExisting("/usr");
  w.file("/usr/b", "second");
  w.end();
  closeSync(fd);
  const names = parseNewc(readFileSync(out)).map((e) => e.name);
  assert.deepEqual(names, ["a", "TRAILER!!!", "usr/b", "TRAILER!!!"]);
});
