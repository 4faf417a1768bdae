// The machine's copy of applied packages (src/kernel/store.ts), in a temporary state directory:
// stored from an opened package, opened and verified again, and removed; a copy that was
// tampered with after apply is refused like any damaged package.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { openStored, removeStored, storedPath, storePackage } from "../../src/kernel/store.js";
import { FORMAT_VERSION, type Manifest } from "../../src/package/manifest.js";
import { openPackage, writePackage } from "../../src/package/package.js";
import { tempDir } from "../helpers/compile.js";

const ko = Buffer.from("\x7fELF pretend module");

async function aPackage(dir: string): Promise<string> {
  const m: Manifest = {
    format: "ksplice-update",
    formatVersion: FORMAT_VERSION,
    id: "stored1",
    description: "test",
    createdAt: "2026-12-07T00:00:00.000Z",
    tool: "ksplice test",
    kernel: { release: "6.1.0-50-cloud-amd64", buildId: null, banner: null },
    patches: [],
    applied: [],
    module: { name: "ksplice_stored1", file: "ksplice_stored1.ko" },
    core: null,
    objects: [],
    targets: [],
    newFunctions: [],
    newData: [],
    relocations: [],
    hooks: [],
    files: [
      {
        path: "ksplice_stored1.ko",
        sha256: createHash("sha256").update(ko).digest("hex"),
        size: ko.length,
      },
    ],
  };
  const out = join(dir, "ksplice-stored1.tar.gz");
  await writePackage(out, "ksplice-stored1", m, [{ path: "ksplice_stored1.ko", bytes: ko }]);
  return out;
}

test("an applied package's copy is stored, opened again verified, and removed", async () => {
  const dir = tempDir();
  const state = join(dir, "state");
  const pkg = await openPackage(await aPackage(dir));
  let undo: () => void;
  try {
    undo = storePackage(pkg, state);
  } finally {
    pkg.close();
  }
  assert.equal(storedPath("stored1", state), join(state, "updates", "stored1"));
  assert.deepEqual(readdirSync(join(state, "updates")), ["stored1"]); // no partial left
  const again = await openStored("stored1", state);
  assert.ok(again);
  assert.equal(again.manifest.id, "stored1");
  again.close();
  assert.ok(existsSync(storedPath("stored1", state)), "closing a stored copy keeps it");

  // Damaged after apply: refused like any damaged package.
  writeFileSync(join(storedPath("stored1", state), "ksplice_stored1.ko"), "changed");
  await assert.rejects(openStored("stored1", state), /does not match its checksum/);

  undo();
  assert.equal(existsSync(storedPath("stored1", state)), false);
  assert.equal(await openStored("stored1", state), undefined);
  removeStored("stored1", state); // removing what is gone is fine
  assert.throws(() => storedPath("../etc", state), /invalid update id/);
});
