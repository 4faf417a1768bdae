// ELF notes (SHT_NOTE sections, PT_NOTE segments, /sys/kernel/notes): the GNU build id.

/** NT_GNU_BUILD_ID is the type of the GNU build-id note. */
export const NT_GNU_BUILD_ID = 3;

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
    if (name === "GNU" && type === NT_GNU_BUILD_ID)
      return Buffer.from(b.subarray(descOff, descOff + descsz)).toString("hex");
    o = descOff + ((descsz + 3) & ~3);
  }
  return null;
}
