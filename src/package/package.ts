// Update packages on disk: `ksplice-ID.tar.gz` holding one directory `ksplice-ID/` with
// manifest.json and the files it lists (each with its sha256). Reading checks everything a
// tampered or broken package could get wrong, before anything is loaded: the archive itself,
// path traversal, unexpected or missing files, checksums, the format version.
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, normalize } from "node:path";
import * as tar from "tar";
import { UserError } from "../errors.js";
import { isValidId } from "./id.js";
import { HOOK_KINDS, isKernelRelocType, type Manifest, READABLE_VERSIONS } from "./manifest.js";

const bad = (msg: string) => new UserError(msg, { code: "bad_package" });

/** writePackage writes the manifest and files as a gzipped tarball. */
export async function writePackage(
  out: string,
  top: string,
  manifest: Manifest,
  files: Array<{ path: string; bytes: Uint8Array }>,
): Promise<void> {
  const stage = mkdtempSync(join(tmpdir(), "ksplice-pkg-"));
  try {
    const root = join(stage, top);
    for (const f of files) {
      mkdirSync(dirname(join(root, f.path)), { recursive: true });
      writeFileSync(join(root, f.path), f.bytes);
    }
    writeFileSync(join(root, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    await tar.create({ gzip: true, file: out, cwd: stage, portable: true, noMtime: true }, [top]);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

/** OpenedPackage is a verified package unpacked in a directory. */
export interface OpenedPackage {
  dir: string;
  manifest: Manifest;
  /** Removes the unpacked copy (when we unpacked it). */
  close(): void;
}

/** openPackage verifies a package (tarball or unpacked directory) and returns its manifest. */
export async function openPackage(path: string): Promise<OpenedPackage> {
  if (!existsSync(path)) throw new UserError(`no such update: ${path}`, { code: "bad_package" });
  if (statSync(path).isDirectory()) return { dir: path, manifest: verifyDir(path, path), close() {} };
  const dest = mkdtempSync(join(tmpdir(), "ksplice-unpack-"));
  const close = () => rmSync(dest, { recursive: true, force: true });
  try {
    const entries: string[] = [];
    let top: string | undefined;
    // The first problem found; thrown after listing (a throw inside tar's callback escapes it).
    let problem: UserError | undefined;
    const check = (e: { path: string; type: string }) => {
      entries.push(e.path);
      const p = e.path.replace(/\/$/, "");
      if (p.startsWith("/") || normalize(p).split("/").includes(".."))
        return bad(`${path}: entry '${e.path}' points outside the package (path traversal)`);
      if (e.type !== "File" && e.type !== "Directory")
        return bad(`${path}: entry '${e.path}' is a ${e.type}, not a file or directory`);
      const t = p.split("/")[0];
      if (top !== undefined && t !== top)
        return bad(`${path}: entries under both '${top}/' and '${t}/'; a package has one top directory`);
      top = t;
      return undefined;
    };
    await tar
      .list({
        file: path,
        strict: true,
        onReadEntry: (e) => {
          problem ??= check(e);
        },
      })
      .catch((e: unknown) => {
        throw bad(
          `${path} is not a readable update package (truncated or not a .tar.gz?): ${(e as Error).message}`,
        );
      });
    if (problem) throw problem;
    if (!top || entries.length === 0) throw bad(`${path} is empty`);
    await tar.extract({ file: path, cwd: dest, strict: true, preservePaths: false }).catch((e: unknown) => {
      throw bad(`${path}: unpacking failed (truncated?): ${(e as Error).message}`);
    });
    const dir = join(dest, top);
    return { dir, manifest: verifyDir(dir, path), close };
  } catch (e) {
    close();
    throw e;
  }
}

function walkFiles(root: string, rel = ""): string[] {
  const out: string[] = [];
  for (const n of readdirSync(join(root, rel))) {
    const r = rel ? `${rel}/${n}` : n;
    if (statSync(join(root, r)).isDirectory()) out.push(...walkFiles(root, r));
    else out.push(r);
  }
  return out;
}

/** verifyDir checks an unpacked package against its manifest. */
export function verifyDir(dir: string, name: string): Manifest {
  const mpath = join(dir, "manifest.json");
  if (!existsSync(mpath)) throw bad(`${name}: manifest.json is missing`);
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(mpath, "utf8"));
  } catch (e) {
    throw bad(`${name}: manifest.json is not valid JSON: ${(e as Error).message}`);
  }
  if (m?.format !== "ksplice-update") throw bad(`${name}: manifest.json is not a ksplice update manifest`);
  if (!READABLE_VERSIONS.includes(m.formatVersion))
    throw bad(
      `${name}: manifest format version ${m.formatVersion} is not supported (this ksplice reads versions ${READABLE_VERSIONS.join(", ")}); use a matching ksplice`,
    );
  if (!isValidId(m.id)) throw bad(`${name}: manifest has an invalid id ${JSON.stringify(m.id)}`);
  for (const k of ["kernel", "module", "targets", "relocations", "hooks", "files", "objects"] as const)
    if (m[k] === undefined || m[k] === null) throw bad(`${name}: manifest lacks '${k}'`);
  for (const h of m.hooks)
    if (!HOOK_KINDS.includes(h.kind) || typeof h.section !== "string" || !Number.isInteger(h.offset))
      throw bad(`${name}: manifest has an invalid hook ${JSON.stringify(h)}`);
  for (const r of m.relocations)
    if (!isKernelRelocType(r.type))
      throw bad(`${name}: relocation ${r.type} for ${r.symbol} is not supported by the core`);
  const listed = new Set<string>(["manifest.json"]);
  for (const f of m.files) {
    if (typeof f.path !== "string" || f.path.startsWith("/") || normalize(f.path).split("/").includes(".."))
      throw bad(`${name}: manifest lists an unsafe path ${JSON.stringify(f.path)}`);
    const p = join(dir, f.path);
    if (!existsSync(p))
      throw bad(`${name}: ${f.path} is listed in the manifest but missing from the package`);
    const h = createHash("sha256").update(readFileSync(p)).digest("hex");
    if (h !== f.sha256)
      throw bad(`${name}: ${f.path} does not match its checksum in the manifest (tampered or corrupt)`);
    listed.add(f.path);
  }
  for (const f of walkFiles(dir))
    if (!listed.has(f)) throw bad(`${name}: ${f} is in the package but not in the manifest`);
  if (!listed.has(m.module.file))
    throw bad(`${name}: the update module ${m.module.file} is not among the package's files`);
  return m;
}
