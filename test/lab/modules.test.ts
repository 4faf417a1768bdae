// Which of the image's modules a lab boot carries (src/lab/modules.ts): found by name in
// modules.order (dashes and underscores alike), with what their .modinfo says they depend on,
// and a modules.dep for busybox's modprobe.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { UserError } from "../../src/errors.js";
import { modinfoDepends, resolveModules } from "../../src/lab/modules.js";
import { assemble, tempDir } from "../helpers/compile.js";

/** fakeModule writes a relocatable object with a .modinfo section, as a .ko has. */
function fakeModule(root: string, rel: string, depends: string[]): void {
  const dir = tempDir();
  const modinfo = [
    `license=GPL`,
    `depends=${depends.join(",")}`,
    `name=${rel.replace(/^.*\//, "").replace(/\.ko$/, "")}`,
  ];
  const obj = assemble(
    dir,
    "m",
    `.section .modinfo,"a"\n${modinfo.map((f) => `.asciz "${f}"`).join("\n")}\n`,
  );
  mkdirSync(dirname(join(root, rel)), { recursive: true });
  writeFileSync(join(root, rel), readFileSync(obj));
}

test("modules come with their dependencies, nearest first, and a modules.dep", () => {
  const root = tempDir();
  fakeModule(root, "kernel/fs/overlayfs/overlay.ko", []);
  fakeModule(root, "kernel/net/netfilter/nf_conntrack.ko", ["nf_defrag_ipv4", "libcrc32c"]);
  fakeModule(root, "kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko", []);
  fakeModule(root, "kernel/lib/libcrc32c.ko", []);
  fakeModule(root, "kernel/net/netfilter/xt_conntrack.ko", ["nf_conntrack"]);
  writeFileSync(
    join(root, "modules.order"),
    [
      "kernel/fs/overlayfs/overlay.ko",
      "kernel/lib/libcrc32c.ko",
      "kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko",
      "kernel/net/netfilter/nf_conntrack.ko",
      "kernel/net/netfilter/xt_conntrack.ko",
      "",
    ].join("\n"),
  );
  assert.deepEqual(modinfoDepends(join(root, "kernel/net/netfilter/nf_conntrack.ko")), [
    "nf_defrag_ipv4",
    "libcrc32c",
  ]);
  const set = resolveModules(root, "6.1.0-test", ["xt-conntrack", "overlay"]);
  assert.deepEqual(set.files, [
    "kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko",
    "kernel/lib/libcrc32c.ko",
    "kernel/net/netfilter/nf_conntrack.ko",
    "kernel/net/netfilter/xt_conntrack.ko",
    "kernel/fs/overlayfs/overlay.ko",
  ]);
  // modprobe loads a line's dependencies from its end: each must come before those it needs.
  assert.match(
    set.dep,
    /^kernel\/net\/netfilter\/xt_conntrack\.ko: kernel\/net\/netfilter\/nf_conntrack\.ko( kernel\/\S+){2}$/m,
  );
  assert.match(set.dep, /^kernel\/fs\/overlayfs\/overlay\.ko:$/m);
  // bridge needs llc and stp, and stp needs llc: llc must be loaded first.
  fakeModule(root, "kernel/net/llc/llc.ko", []);
  fakeModule(root, "kernel/net/802/stp.ko", ["llc"]);
  fakeModule(root, "kernel/net/bridge/bridge.ko", ["llc", "stp"]);
  writeFileSync(
    join(root, "modules.order"),
    "kernel/net/llc/llc.ko\nkernel/net/802/stp.ko\nkernel/net/bridge/bridge.ko\n",
  );
  assert.match(
    resolveModules(root, "6.1.0-test", ["bridge"]).dep,
    /^kernel\/net\/bridge\/bridge\.ko: kernel\/net\/802\/stp\.ko kernel\/net\/llc\/llc\.ko$/m,
  );
  assert.throws(
    () => resolveModules(root, "6.1.0-test", ["no-such"]),
    (e: unknown) =>
      e instanceof UserError &&
      e.code === "lab_with" &&
      /module no-such is not among 6\.1\.0-test's modules/.test(e.message),
  );
});
