// Core (src/kernel/core.ts) against a fake sysfs: what it writes to control, how it splits
// writes, and how the module's refusals become CoreErrors with the abort cause and conflicts.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  Core,
  CoreError,
  type CoreHost,
  MAX_WRITE,
  type Patch,
  parseParts,
  parseShadows,
  parseStatus,
  splitWrites,
  targetsOf,
} from "../../src/kernel/core.js";
import { Kallsyms } from "../../src/live/kallsyms.js";

const R = "/sys/kernel/ksplice";

/** FakeSysfs plays the core module: files, and a hook deciding how each write to a file ends. */
class FakeSysfs implements CoreHost {
  files = new Map<string, string>();
  writes: { path: string; data: string }[] = [];
  execs: string[][] = [];
  onWrite: (path: string, data: string) => void = () => {};
  onExec: (argv: string[]) => { code: number; stdout: string; stderr: string } = () => ({
    code: 0,
    stdout: "",
    stderr: "",
  });

  async readFile(path: string): Promise<string> {
    const v = this.files.get(path);
    if (v === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: "ENOENT" });
    return v;
  }
  async writeFile(path: string, data: string): Promise<void> {
    this.writes.push({ path, data });
    this.onWrite(path, data);
  }
  async exists(path: string): Promise<boolean> {
    return [...this.files.keys()].some((k) => k === path || k.startsWith(`${path}/`));
  }
  async readdir(path: string): Promise<string[]> {
    const names = new Set<string>();
    for (const k of this.files.keys())
      if (k.startsWith(`${path}/`)) names.add(k.slice(path.length + 1).split("/")[0]);
    return [...names];
  }
  async exec(argv: string[]) {
    this.execs.push(argv);
    return this.onExec(argv);
  }
}

function loadedFs(): FakeSysfs {
  const fs = new FakeSysfs();
  fs.files.set("/sys/module/ksplice/refcnt", "0\n");
  fs.files.set(`${R}/control`, "");
  fs.files.set(`${R}/last_error`, "none\n");
  return fs;
}

function addUpdate(fs: FakeSysfs, id: string, over: Record<string, string> = {}): void {
  const base: Record<string, string> = {
    stage: "preparing\n",
    abort_cause: "none\n",
    conflicts: "",
    pause_ns: "0\n",
    tries: "0\n",
    applied_at: "0\n",
    description: "\n",
    patches: "",
    ...over,
  };
  for (const [k, v] of Object.entries(base)) fs.files.set(`${R}/${id}/${k}`, v);
}

const patch: Patch = {
  name: "cmdline_proc_show",
  site: 0xffffffff81234565n,
  newAddr: 0xffffffffc0001000n,
  fstart: 0xffffffff81234560n,
  fsize: 0x30n,
  nstart: 0xffffffffc0001000n,
  nsize: 0x2an,
  expected: Uint8Array.from([0x53, 0x48, 0x8b, 0x35, 0x4b]),
};

test("plan commands are formatted as the module parses them", async () => {
  const fs = loadedFs();
  const core = new Core({ host: fs });
  await core.newUpdate("abc1", "ksplice_abc1");
  await core.reloc("abc1", [
    { dest: 0xffffffffc0002008n, type: "R_X86_64_64", symbol: 0xffffffff82000000n, addend: 0n },
    { dest: 0xffffffffc0001003n, type: "R_X86_64_PLT32", symbol: 0xffffffff81000000n, addend: -4n },
  ]);
  await core.patch("abc1", [patch]);
  await core.hook("abc1", "pre_apply", 0xffffffffc0001100n);
  await core.describe("abc1", "fix  the\nbug");
  assert.deepEqual(
    fs.writes.map((w) => w.data),
    [
      "new abc1 ksplice_abc1\n",
      "abc1 reloc ffffffffc0002008 1 ffffffff82000000 0\nabc1 reloc ffffffffc0001003 4 ffffffff81000000 -4\n",
      "abc1 patch ffffffff81234565 ffffffffc0001000 ffffffff81234560 30 ffffffffc0001000 2a 53488b354b cmdline_proc_show vmlinux\n",
      "abc1 hook pre_apply ffffffffc0001100\n",
      "abc1 description fix the bug\n",
    ],
  );
  assert.ok(fs.writes.every((w) => w.path === `${R}/control`));
});

test("parts: targets, pending modules, the helper, and a coming module's plan", async () => {
  const fs = loadedFs();
  const core = new Core({ host: fs });
  await core.newUpdate("abc1", "ksplice_abc1");
  await core.target("abc1", "overlay", ["ovl_show_options", "ovl_remount"]);
  await core.setHelper(["/usr/bin/node", "/opt/ksplice/dist/src/cli/run.js", "module-coming"]);
  await core.pending("abc1", ["overlay"]);
  await assert.rejects(core.setHelper(["node", "run.js"]), /absolute path/);
  await assert.rejects(core.setHelper(["/a b"]), /without spaces/);
  fs.files.set(`${R}/coming`, "abc1 overlay\nzz9 xfs\n");
  assert.deepEqual(await core.coming(), [
    { id: "abc1", module: "overlay" },
    { id: "zz9", module: "xfs" },
  ]);
  await core.applyPart("abc1", "overlay", {
    pins: [0xffffffffc0100000n],
    relocs: [{ dest: 0xffffffffc0001003n, type: "R_X86_64_PC32", symbol: 0xffffffffc0105000n, addend: -4n }],
    patches: [{ ...patch, part: "overlay" }],
  });
  await core.failPart("abc1", "overlay", "run-pre: ovl_show_options\n does not match");
  assert.deepEqual(
    fs.writes.map((w) => w.data),
    [
      "new abc1 ksplice_abc1\n",
      "abc1 target overlay ovl_show_options\nabc1 target overlay ovl_remount\n",
      "helper /usr/bin/node /opt/ksplice/dist/src/cli/run.js module-coming\n",
      "abc1 pending overlay\n",
      "abc1 part overlay pin ffffffffc0100000\n" +
        "abc1 part overlay reloc ffffffffc0001003 2 ffffffffc0105000 -4\n" +
        "abc1 part overlay patch ffffffff81234565 ffffffffc0001000 ffffffff81234560 30 ffffffffc0001000 2a 53488b354b cmdline_proc_show\n" +
        "abc1 part overlay apply\n",
      "abc1 part overlay fail run-pre: ovl_show_options does not match\n",
    ],
  );
});

test("an update's parts and targets read from the core: live, pending, failed with the reason", () => {
  const st = parseStatus("u1", {
    stage: "applied\n",
    patches:
      "cmdline_proc_show ffffffff81234565 ffffffffc0001000 vmlinux vmlinux live\n" +
      "ovl_copyfile ffffffffc0201235 ffffffffc0001100 ksplice_u0 overlay live\n",
    parts:
      "vmlinux live cmdline_proc_show\n" +
      "overlay live ovl_copyfile\n" +
      "xfs pending xfs_foo,xfs_bar\n" +
      "btrfs failed btrfs_baz run-pre: btrfs_baz (fs/btrfs/ioctl.o) does not match the running kernel\n",
  });
  assert.deepEqual(st.parts[3], {
    module: "btrfs",
    state: "failed",
    names: ["btrfs_baz"],
    reason: "run-pre: btrfs_baz (fs/btrfs/ioctl.o) does not match the running kernel",
  });
  // A stacked jump sits in an earlier update's module, but belongs to its part (overlay).
  assert.deepEqual(
    targetsOf(st).map((t) => `${t.name} ${t.module} ${t.state}`),
    [
      "cmdline_proc_show vmlinux live",
      "ovl_copyfile overlay live",
      "xfs_foo xfs pending",
      "xfs_bar xfs pending",
      "btrfs_baz btrfs failed",
    ],
  );
  assert.deepEqual(parseParts("x live -\n"), [{ module: "x", state: "live", names: [] }]);
});

test("writes are split at line boundaries under a page", () => {
  const lines = Array.from(
    { length: 500 },
    (_, i) => `u reloc ffffffffc00${String(i).padStart(5, "0")} 2 ffffffff81000000 -4`,
  );
  const chunks = splitWrites(lines);
  assert.ok(chunks.length > 1);
  for (const c of chunks) {
    assert.ok(Buffer.byteLength(c) <= MAX_WRITE, `chunk of ${Buffer.byteLength(c)} bytes`);
    assert.ok(c.endsWith("\n"));
  }
  assert.equal(chunks.join(""), `${lines.join("\n")}\n`);
  assert.throws(() => splitWrites(["a\nb"]), CoreError);
  assert.throws(() => splitWrites(["x".repeat(MAX_WRITE)]), /longer than/);
});

test("bad ids and a missing core are refused before writing", async () => {
  const fs = new FakeSysfs();
  const core = new Core({ host: fs });
  await assert.rejects(core.newUpdate("Bad-Id", "ksplice_x"), (e: CoreError) => e.code === "bad_command");
  await assert.rejects(core.newUpdate("ok", "ksplice_x"), (e: CoreError) => e.code === "not_loaded");
  assert.equal(fs.writes.length, 0);
});

test("a refused command carries the module's last_error", async () => {
  const fs = loadedFs();
  fs.onWrite = (_p, data) => {
    fs.files.set(
      `${R}/last_error`,
      data.includes("patch")
        ? "already_patched: u patch f: site 1 is patched by applied update v\n"
        : "new u: no such module\n",
    );
    throw Object.assign(new Error("EINVAL: invalid argument, write"), { code: "EINVAL" });
  };
  const core = new Core({ host: fs });
  await assert.rejects(
    core.newUpdate("u", "ksplice_u"),
    (e: CoreError) => e.code === "bad_command" && /no such module/.test(e.message),
  );
  await assert.rejects(core.patch("u", [patch]), (e: CoreError) => e.code === "already_patched");
});

test("apply returns the status; an abort becomes a CoreError with the cause and conflicts", async () => {
  const fs = loadedFs();
  addUpdate(fs, "u1", {
    description: "one\n",
    patches: "cmdline_proc_show ffffffff81234565 ffffffffc0001000\n",
  });
  const core = new Core({ host: fs });
  fs.onWrite = (path, data) => {
    assert.equal(path, `${R}/u1/stage`);
    if (data === "applied") {
      fs.files.set(`${R}/u1/stage`, "applied\n");
      fs.files.set(`${R}/u1/pause_ns`, "151000\n");
      fs.files.set(`${R}/u1/tries`, "1\n");
      fs.files.set(`${R}/u1/applied_at`, "42\n");
      return;
    }
    fs.files.set(`${R}/u1/abort_cause`, "code_busy\n");
    fs.files.set(`${R}/u1/tries`, "5\n");
    fs.files.set(`${R}/u1/conflicts`, "cat 81 ksplice_new_cmdline_show+0x10/0x2a [ksplice_u1]\n");
    throw Object.assign(new Error("EBUSY"), { code: "EBUSY" });
  };
  const st = await core.apply("u1");
  assert.deepEqual(st, {
    id: "u1",
    stage: "applied",
    abortCause: "none",
    conflicts: [],
    pauseNs: 151000,
    tries: 1,
    appliedAt: 42,
    description: "one",
    // A core of protocol 1 names no part: the jump is the kernel's, written since applied.
    patches: [
      {
        name: "cmdline_proc_show",
        site: 0xffffffff81234565n,
        newAddr: 0xffffffffc0001000n,
        part: "vmlinux",
        live: true,
      },
    ],
    parts: [],
  });
  await assert.rejects(core.reverse("u1"), (e: CoreError) => {
    assert.equal(e.code, "code_busy");
    assert.deepEqual(e.conflicts, ["cat 81 ksplice_new_cmdline_show+0x10/0x2a [ksplice_u1]"]);
    assert.match(e.message, /reversing update u1 aborted after 5 attempts: code_busy: cat 81/);
    return true;
  });
});

test("list, remove and status of a missing update", async () => {
  const fs = loadedFs();
  addUpdate(fs, "a1");
  addUpdate(fs, "b2");
  const core = new Core({ host: fs });
  assert.deepEqual(await core.list(), ["a1", "b2"]);
  await core.remove("a1");
  assert.equal(fs.writes.at(-1)?.data, "delete a1\n");
  await assert.rejects(core.status("zz"), /no update zz/);
});

test("ensureLoaded runs insmod with parameters only when the core is absent", async () => {
  const fs = new FakeSysfs();
  fs.onExec = () => {
    fs.files.set("/sys/module/ksplice/refcnt", "0\n");
    fs.files.set(`${R}/control`, "");
    return { code: 0, stdout: "", stderr: "" };
  };
  const core = new Core({ host: fs });
  assert.equal(await core.ensureLoaded("/x/ksplice.ko", { retries: 2, bench: true }), true);
  assert.deepEqual(fs.execs, [["insmod", "/x/ksplice.ko", "retries=2", "bench=1"]]);
  assert.equal(await core.ensureLoaded("/x/ksplice.ko"), false);
  assert.equal(fs.execs.length, 1);
  const broken = new FakeSysfs();
  broken.onExec = () => ({
    code: 1,
    stdout: "",
    stderr: "insmod: ERROR: could not insert module: Invalid module format",
  });
  await assert.rejects(
    new Core({ host: broken }).ensureLoaded("/x/ksplice.ko"),
    (e: CoreError) => e.code === "load_failed" && /Invalid module format/.test(e.message),
  );
});

test("parseStatus tolerates empty files", () => {
  const st = parseStatus("x", { stage: "reversed\n" });
  assert.equal(st.abortCause, "none");
  assert.deepEqual(st.conflicts, []);
  assert.deepEqual(st.patches, []);
});

test("Kallsyms sizes symbols like the kernel: next higher address of the same image", () => {
  const ks = new Kallsyms(
    [
      "ffffffff81000000 T _text",
      "ffffffff813f1bb0 t cmdline_proc_show",
      "ffffffff813f1bb0 t alias_at_same_address",
      "ffffffff813f1be0 t c_next",
      "ffffffffc0001000 t ksplice_new [ksplice_u1]",
      "ffffffffc000102a t other [ksplice_u1]",
    ].join("\n"),
  );
  assert.equal(ks.one("cmdline_proc_show"), 0xffffffff813f1bb0n);
  assert.equal(ks.sizeOf(0xffffffff813f1bb0n), 0x30n);
  assert.equal(ks.sizeOf(0xffffffffc0001000n, "ksplice_u1"), 0x2an);
  assert.equal(ks.one("ksplice_new", "ksplice_u1"), 0xffffffffc0001000n);
  assert.throws(() => ks.one("ksplice_new"), /0 addresses/);
  assert.throws(() => new Kallsyms("0000000000000000 T _text\n"), /as root/);
});

test("shadow accounting: per id, how many and their bytes; none without the file", async () => {
  assert.deepEqual(parseShadows("5eed 100 800\n6b73706c7301 2 16\n... more ids\n"), [
    { id: "0x5eed", count: 100, bytes: 800 },
    { id: "0x6b73706c7301", count: 2, bytes: 16 },
  ]);
  const fs = loadedFs();
  assert.deepEqual(await new Core({ host: fs }).shadows(), []);
  fs.files.set(`${R}/shadows`, "51 3 24\n");
  assert.deepEqual(await new Core({ host: fs }).shadows(), [{ id: "0x51", count: 3, bytes: 24 }]);
});
