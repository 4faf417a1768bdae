// Which kernel an update is for: release, GNU build id and version banner, read at create time
// from the kernel's vmlinux (when known). At apply time the running kernel's comes from
// src/live/identity.ts; an update applies only to the kernel it names.
import { existsSync, readFileSync } from "node:fs";
import { parseNotes } from "../elf/notes.js";
import { ElfFile } from "../elf/reader.js";
import { UserError } from "../errors.js";

/** KernelIdentity names one kernel build. */
export interface KernelIdentity {
  release: string;
  buildId: string | null;
  banner: string | null;
}

/**
 * kernelIdentity is the identity of kernel `release`, read from its vmlinux when there is one
 * (build id and banner); without it an update is checked by release only.
 */
export function kernelIdentity(release: string, vmlinux?: string): KernelIdentity {
  if (vmlinux === undefined) return { release, buildId: null, banner: null };
  if (!existsSync(vmlinux))
    throw new UserError(
      `the kernel's vmlinux ${vmlinux} is missing: pass the vmlinux of the running kernel`,
      {
        code: "bad_input",
      },
    );
  const path = vmlinux;
  const bytes = readFileSync(path);
  const elf = ElfFile.parse(bytes, path);
  const notes = elf.sectionByName(".notes");
  const buildId = notes ? parseNotes(elf.sectionData(notes)) : null;
  const at = bytes.indexOf(`Linux version ${release} `);
  const banner =
    at >= 0
      ? bytes
          .subarray(at, bytes.indexOf(0x0a, at) > at ? bytes.indexOf(0x0a, at) : at + 256)
          .toString("latin1")
      : null;
  return { release, buildId, banner };
}
