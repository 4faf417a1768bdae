// Which kernel an update is for: release, GNU build id and version banner. At create time
// they come from the kernel's vmlinux (when known); at apply time from /sys/kernel/notes and
// /proc/version of the running kernel. An update applies only to the kernel it names.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ElfFile } from "../elf/reader.js";

/** KernelIdentity names one kernel build. */
export interface KernelIdentity {
  release: string;
  buildId: string | null;
  banner: string | null;
}

/** parseNotes returns the GNU build id (hex) from an ELF notes blob, if any. */
export function parseNotes(b: Uint8Array): string | null {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let o = 0;
  while (o + 12 <= b.length) {
    const namesz = v.getUint32(o, true);
    const descsz = v.getUint32(o + 4, true);
    const type = v.getUint32(o + 8, true);
    const nameOff = o + 12;
    const descOff = nameOff + ((namesz + 3) & ~3);
    if (descOff + descsz > b.length) break;
    const name = Buffer.from(b.subarray(nameOff, nameOff + Math.max(namesz - 1, 0))).toString("latin1");
    if (name === "GNU" && type === 3)
      return Buffer.from(b.subarray(descOff, descOff + descsz)).toString("hex");
    o = descOff + ((descsz + 3) & ~3);
  }
  return null;
}

/**
 * kernelIdentity is the identity of kernel `release`, read from its vmlinux when there is one
 * (build id and banner); without it an update is checked by release only.
 */
export function kernelIdentity(release: string, vmlinux?: string): KernelIdentity {
  const path = vmlinux !== undefined && existsSync(vmlinux) ? vmlinux : undefined;
  if (!path) return { release, buildId: null, banner: null };
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

/** runningIdentity reads the identity of the kernel this process runs on. */
export function runningIdentity(root = "/"): KernelIdentity {
  const banner = readFileSync(join(root, "proc/version"), "utf8").trim();
  const release = /^Linux version (\S+)/.exec(banner)?.[1] ?? "";
  let buildId: string | null = null;
  try {
    buildId = parseNotes(readFileSync(join(root, "sys/kernel/notes")));
  } catch {}
  return { release, buildId, banner };
}
