// The machine's copy of each applied update's package, under /var/lib/ksplice/updates/ID/
// (unpacked, as verified at apply). A module with a part of an update can load after the apply
// (or load again after being removed): the helper the core runs then matches it from this copy,
// verified once more, since the package the user gave may be gone by then. apply writes it,
// undo removes it; the core's own state says which updates exist, so a copy left by a crash or
// a reboot is never taken for an applied update.
import { cpSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { partialName, replaceDir } from "../files.js";
import { isValidId } from "../package/id.js";
import { type OpenedPackage, openPackage } from "../package/package.js";

/** STATE_DIR is where ksplice keeps what must outlive one command on this machine. */
export const STATE_DIR = "/var/lib/ksplice";

/** storedPath is where the copy of update `id` lives. */
export function storedPath(id: string, stateDir = STATE_DIR): string {
  if (!isValidId(id)) throw new Error(`storedPath: invalid update id ${JSON.stringify(id)}`);
  return join(stateDir, "updates", id);
}

/** storePackage copies an opened (verified) package to the store; returns a function undoing it. */
export function storePackage(pkg: OpenedPackage, stateDir = STATE_DIR): () => void {
  const dest = storedPath(pkg.manifest.id, stateDir);
  mkdirSync(join(stateDir, "updates"), { recursive: true, mode: 0o700 });
  const tmp = partialName(dest);
  rmSync(tmp, { recursive: true, force: true });
  cpSync(pkg.dir, tmp, { recursive: true });
  replaceDir(tmp, dest);
  return () => removeStored(pkg.manifest.id, stateDir);
}

/** openStored opens (and verifies again) the stored copy of update `id`, if there is one. */
export async function openStored(id: string, stateDir = STATE_DIR): Promise<OpenedPackage | undefined> {
  const path = storedPath(id, stateDir);
  return existsSync(path) ? openPackage(path) : undefined;
}

/** removeStored forgets the copy of update `id`. */
export function removeStored(id: string, stateDir = STATE_DIR): void {
  rmSync(storedPath(id, stateDir), { recursive: true, force: true });
}
