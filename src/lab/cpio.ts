// A writer for the kernel's initramfs format (cpio "newc", see the kernel's
// Documentation/driver-api/early-userspace/buffer-format.rst). Written here rather than driving
// `cpio -o` so guest paths need not mirror a host directory, parent directories are always
// emitted before their children (the kernel's unpacker does not create them), and large files
// stream straight from the host file.
import {
  closeSync,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  statSync,
  writeSync,
} from "node:fs";
import { dirname, join } from "node:path";

const TRAILER = "TRAILER!!!";

/** CpioWriter appends newc entries to an open file descriptor. */
export class CpioWriter {
  private readonly fd: number;
  private offset = 0;
  private ino = 1;
  private readonly dirs = new Set<string>(["/", "."]);

  /** The writer appends at the fd's current end; `startOffset` is where that is (for alignment). */
  constructor(fd: number, startOffset = 0) {
    this.fd = fd;
    this.offset = startOffset;
  }

  private write(buf: Buffer): void {
    let done = 0;
    while (done < buf.length) done += writeSync(this.fd, buf, done, buf.length - done);
    this.offset += buf.length;
  }

  private pad(): void {
    const n = (4 - (this.offset % 4)) % 4;
    if (n) this.write(Buffer.alloc(n));
  }

  private header(name: string, mode: number, size: number): void {
    const rel = name.replace(/^\/+/, "") || ".";
    const fields = [this.ino++, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, Buffer.byteLength(rel) + 1, 0];
    this.write(
      Buffer.from(`070701${fields.map((f) => (f >>> 0).toString(16).padStart(8, "0")).join("")}${rel}\0`),
    );
    this.pad();
  }

  /** dir adds a directory (and its missing parents). */
  dir(path: string, mode = 0o755): void {
    path = path.replace(/\/+$/, "") || "/";
    if (this.dirs.has(path)) return;
    this.parents(path);
    this.dirs.add(path);
    this.header(path, 0o040000 | mode, 0);
  }

  private parents(path: string): void {
    const parent = dirname(path);
    if (parent !== path) this.dir(parent);
  }

  /** markExisting records a path an earlier archive already created (a directory or a link). */
  markExisting(path: string): void {
    this.dirs.add(path);
  }

  /** has says whether a directory or link at path was written or marked. */
  has(path: string): boolean {
    return this.dirs.has(path);
  }

  /** file adds a regular file with the given contents. */
  file(path: string, data: Buffer | string, mode = 0o644): void {
    const buf = typeof data === "string" ? Buffer.from(data) : data;
    this.parents(path);
    this.header(path, 0o100000 | mode, buf.length);
    this.write(buf);
    this.pad();
  }

  /** symlink adds a symbolic link. */
  symlink(path: string, target: string): void {
    this.parents(path);
    // Later entries below it must not turn the link into a directory.
    this.dirs.add(path);
    this.header(path, 0o120000 | 0o777, Buffer.byteLength(target));
    this.write(Buffer.from(target));
    this.pad();
  }

  /** hostFile copies a host file's contents (following symlinks) to `path`, keeping its mode. */
  hostFile(hostPath: string, path = hostPath): void {
    const st = statSync(hostPath);
    this.parents(path);
    this.header(path, 0o100000 | (st.mode & 0o7777), st.size);
    const fd = openSync(hostPath, "r");
    try {
      const buf = Buffer.alloc(1 << 20);
      let left = st.size;
      while (left > 0) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, left), null);
        if (n === 0) throw new Error(`${hostPath} shrank while it was being copied into the initramfs`);
        this.write(buf.subarray(0, n));
        left -= n;
      }
    } finally {
      closeSync(fd);
    }
    this.pad();
  }

  /** tree copies a host file, symlink or directory (recursively) to the same or another guest path. */
  tree(hostPath: string, path = hostPath, skip: (name: string) => boolean = () => false): void {
    const st = lstatSync(hostPath);
    if (st.isSymbolicLink()) this.symlink(path, readlinkSync(hostPath));
    else if (st.isDirectory()) {
      this.dir(path, st.mode & 0o7777);
      for (const name of readdirSync(hostPath))
        if (!skip(name)) this.tree(join(hostPath, name), join(path, name), skip);
    } else if (st.isFile()) this.hostFile(hostPath, path);
    // Sockets, fifos and devices are left out: the guest has its own devtmpfs.
  }

  /** end writes the trailer and pads the archive to 512 bytes. */
  end(): void {
    this.header(TRAILER, 0, 0);
    const n = (512 - (this.offset % 512)) % 512;
    if (n) this.write(Buffer.alloc(n));
  }

  /** size is the number of bytes written so far (including the start offset). */
  get size(): number {
    return this.offset;
  }
}
