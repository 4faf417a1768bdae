// The running kernel's identity: its release and banner (/proc/version) and GNU build id
// (/sys/kernel/notes), compared at apply with the identity an update names.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseNotes } from "../elf/notes.js";

/** runningIdentity reads the identity of the kernel this process runs on. */
export function runningIdentity(root = "/"): {
  release: string;
  buildId: string | null;
  banner: string | null;
} {
  const banner = readFileSync(join(root, "proc/version"), "utf8").trim();
  const release = /^Linux version (\S+)/.exec(banner)?.[1] ?? "";
  let buildId: string | null = null;
  try {
    buildId = parseNotes(readFileSync(join(root, "sys/kernel/notes")));
  } catch {}
  return { release, buildId, banner };
}
