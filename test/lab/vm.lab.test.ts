// Booting the lab kernel: the guest runs Debian's release with real kallsyms addresses, loads
// modules built against the headers and against the prepared tree, sees --with paths, returns
// exit codes and binary output, kills commands that overrun, and leaves no qemu behind.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { UserError } from "../../src/errors.js";
import { type LabPaths, LabVM, prepareLab, withLab } from "../../src/lab/index.js";
import { tempDir } from "../helpers/compile.js";

const TIMEOUT = 30 * 60_000;

function buildModule(name: string, makeDir: string, makeArgs: string[]): string {
  const dir = tempDir(`ksplice-mod-${name}-`);
  writeFileSync(
    join(dir, `${name}.c`),
    `#include <linux/module.h>
static int __init ${name}_init(void) { pr_info("${name}: loaded\\n"); return 0; }
static void __exit ${name}_exit(void) { pr_info("${name}: unloaded\\n"); }
module_init(${name}_init);
module_exit(${name}_exit);
MODULE_LICENSE("GPL");
`,
  );
  writeFileSync(join(dir, "Kbuild"), `obj-m := ${name}.o\n`);
  execFileSync("make", ["-C", makeDir, ...makeArgs, `M=${dir}`, "modules"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  return join(dir, `${name}.ko`);
}

/** orphans lists qemu processes whose lab run directory is already gone. */
function orphans(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let cmd: string[];
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0");
    } catch {
      continue;
    }
    const initrd = cmd[cmd.indexOf("-initrd") + 1];
    if (cmd[0]?.includes("qemu") && initrd?.includes("ksplice-lab-") && !existsSync(initrd)) found.push(pid);
  }
  return found;
}

let paths: LabPaths;

test("one guest: release, kallsyms, modules, --with, exit codes, files, console, timeouts", {
  timeout: TIMEOUT,
}, async () => {
  paths = await prepareLab();
  const fromHeaders = buildModule("labhdr", paths.headersDir, []);
  const fromTree = buildModule("labtree", paths.sourceDir, paths.makeArgs);
  const dir = tempDir();
  writeFileSync(join(dir, "note.txt"), "hello from the host\n");
  await withLab(
    async (vm) => {
      const uname = await vm.exec("uname -r");
      assert.deepEqual([uname.code, uname.stdout], [0, `${paths.release}\n`]);

      const ksyms = (await vm.readFile("/proc/kallsyms")).toString();
      const lines = ksyms.trimEnd().split("\n");
      assert.ok(lines.length > 50_000, `${lines.length} kallsyms lines`);
      const stext = lines.find((l) => l.endsWith(" T _stext"));
      assert.ok(stext && !/^0+ /.test(stext), `real address for _stext: ${stext}`);

      for (const ko of [fromHeaders, fromTree]) {
        const name = ko.split("/").pop()!.replace(/\.ko$/, "");
        const r = await vm.exec(
          `insmod ${ko} && grep -c '^${name} ' /proc/modules && rmmod ${name} && dmesg | grep '${name}:'`,
        );
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`^1\\n[^]*${name}: loaded\\n[^]*${name}: unloaded`));
      }

      const withFile = await vm.exec(["cat", join(dir, "note.txt")]);
      assert.equal(withFile.stdout, "hello from the host\n");
      assert.equal((await vm.exec("exit 7")).code, 7);
      const bin = await vm.exec("printf '\\000\\001\\377'; echo oops >&2");
      assert.deepEqual(bin.stdoutBytes, Buffer.from([0, 1, 255]));
      assert.equal(bin.stderr, "oops\n");

      await vm.writeFile("/tmp/sub/w.txt", "written by the host");
      assert.equal((await vm.exec("cat /tmp/sub/w.txt")).stdout, "written by the host");
      await assert.rejects(
        vm.readFile("/no/such/file"),
        (e: unknown) => e instanceof UserError && e.code === "lab_guest_file",
      );

      const started = Date.now();
      await assert.rejects(
        vm.exec("sleep 60 | cat", { timeoutMs: 1500 }),
        (e: unknown) => e instanceof UserError && e.code === "lab_timeout",
      );
      assert.ok(Date.now() - started < 30_000);
      assert.equal((await vm.exec("echo still here")).stdout, "still here\n");

      const mounts = (await vm.exec("cat /proc/mounts")).stdout;
      for (const fs of ["proc /proc", "sysfs /sys", "devtmpfs /dev", "tracefs /sys/kernel/tracing"])
        assert.ok(mounts.includes(fs), `${fs} in\n${mounts}`);
      assert.equal((await vm.exec("command -v ksplice node busybox")).code, 0);
      assert.match((await vm.exec("ksplice --help")).stdout, /usage: ksplice/);
      assert.match(vm.console(), /Linux version 6\.1\.0-50-cloud-amd64/);
    },
    { paths, withPaths: [dir, fromHeaders, fromTree] },
  );
});

test("withLab shuts the guest down when the test body throws", { timeout: TIMEOUT }, async () => {
  paths ??= await prepareLab();
  let vm: LabVM | undefined;
  await assert.rejects(
    withLab(
      async (v) => {
        vm = v;
        throw new Error("test body failed");
      },
      { paths },
    ),
    /test body failed/,
  );
  assert.equal(vm?.running, false);
  assert.throws(() => process.kill(vm!.pid!, 0), /ESRCH/);
  // The console log stays readable after shutdown.
  assert.match(vm!.console(), /Linux version/);
  assert.deepEqual(orphans(), []);
});

test("a guest that does not come up in time is a lab_timeout error and leaves nothing running", {
  timeout: TIMEOUT,
}, async () => {
  paths ??= await prepareLab();
  await assert.rejects(LabVM.boot({ paths, bootTimeoutMs: 300 }), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.equal(e.code, "lab_timeout");
    assert.match(e.message, /did not come up within 0\.3 s/);
    return true;
  });
  assert.deepEqual(orphans(), []);
});
