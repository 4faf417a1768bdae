// A TUF repository on disk, written with @tufjs/models: what a stream directory holds and how a
// change is published. The layout is TUF's with consistent snapshots, so any static web server
// or CDN serves it and a client never sees a half-published state:
//   metadata/N.root.json (every version kept; root.json is a copy of the newest),
//   metadata/N.targets.json, metadata/N.snapshot.json, metadata/timestamp.json,
//   targets/DIR/SHA256.NAME for target DIR/NAME.
// Publishing writes the targets' files first, then targets, snapshot and timestamp metadata,
// the timestamp last: until it is written, clients keep seeing the previous state.
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, posix } from "node:path";
import {
  Metadata,
  MetadataKind,
  MetaFile,
  Root,
  Snapshot,
  TargetFile,
  Targets,
  Timestamp,
} from "@tufjs/models";
import { UserError } from "../errors.js";
import { buildFileAtomic, writeFileAtomic } from "../files.js";
import { ensureKeys, loadKey, type Role, type RoleKey, signer } from "./keys.js";

/** SPEC_VERSION is the TUF specification version the metadata declares. */
export const SPEC_VERSION = "1.0.31";

/** Expiry is how long each role's metadata stays valid once signed, in seconds. */
export type Expiry = Record<Role, number>;

const DAY = 86_400;
/** DEFAULT_EXPIRY: root a year, targets 90 days, snapshot 30, timestamp a day (resign refreshes it). */
export const DEFAULT_EXPIRY: Expiry = {
  root: 365 * DAY,
  targets: 90 * DAY,
  snapshot: 30 * DAY,
  timestamp: DAY,
};

/** expiresAt is an expiry date in TUF's form (seconds, Z). */
export function expiresAt(seconds: number, now = Date.now()): string {
  return `${new Date(now + seconds * 1000).toISOString().slice(0, 19)}Z`;
}

/** parseDuration reads 90s, 30m, 12h, 7d (or plain seconds). */
export function parseDuration(text: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m) throw new UserError(`${text} is not a duration (like 30s, 15m, 12h or 7d)`, { code: "usage" });
  return Number(m[1]) * { "": 1, s: 1, m: 60, h: 3600, d: DAY }[m[2] as "" | "s" | "m" | "h" | "d"];
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const json = (m: Metadata<Root | Targets | Snapshot | Timestamp>) =>
  `${JSON.stringify(m.toJSON(), null, 2)}\n`;

/** Repository is one stream directory's metadata, opened for reading or publishing. */
export class Repository {
  /** The newest targets metadata's version (0 before a new stream's first). */
  private targetsVersion: number;

  private constructor(
    readonly dir: string,
    public root: Metadata<Root>,
    public targets: Metadata<Targets>,
    public snapshot: Metadata<Snapshot>,
    public timestamp: Metadata<Timestamp>,
  ) {
    this.targetsVersion = targets.signed.version;
  }

  /** metadataDir is where the metadata files are. */
  static metadataDir(dir: string): string {
    return join(dir, "metadata");
  }

  /**
   * init makes a new, empty stream in dir, signed with the keys of keyDir (made when missing),
   * and returns the path of the root metadata clients must trust.
   */
  static init(dir: string, keyDir: string, expiry: Expiry = DEFAULT_EXPIRY): string {
    const md = Repository.metadataDir(dir);
    if (existsSync(join(md, "1.root.json")))
      throw new UserError(`${dir} is a stream already (${md}/1.root.json exists)`, { code: "stream_exists" });
    const keys = ensureKeys(keyDir);
    const root = new Root({
      version: 1,
      specVersion: SPEC_VERSION,
      expires: expiresAt(expiry.root),
      consistentSnapshot: true,
    });
    for (const k of keys) root.addKey(k.public, k.role);
    const rootMd = new Metadata(root);
    rootMd.sign(signer(keys[0]));
    mkdirSync(md, { recursive: true });
    mkdirSync(join(dir, "targets"), { recursive: true });
    writeFileAtomic(join(md, "1.root.json"), json(rootMd));
    writeFileAtomic(join(md, "root.json"), json(rootMd));
    const empty = (v: number) => ({ version: v, specVersion: SPEC_VERSION, expires: "" });
    const repo = new Repository(
      dir,
      rootMd,
      new Metadata(new Targets({ ...empty(0), expires: expiresAt(0) })),
      new Metadata(new Snapshot({ ...empty(0), expires: expiresAt(0) })),
      new Metadata(new Timestamp({ ...empty(0), expires: expiresAt(0) })),
    );
    repo.targetsVersion = 0;
    repo.publish(keyDir, expiry, true);
    return join(md, "1.root.json");
  }

  /** open reads a stream's newest metadata, following the timestamp. */
  static open(dir: string): Repository {
    const md = Repository.metadataDir(dir);
    const read = (name: string) => {
      const path = join(md, name);
      try {
        return JSON.parse(readFileSync(path, "utf8"));
      } catch (e) {
        throw new UserError(`${dir} is not a ksplice stream: ${path}: ${(e as Error).message}`, {
          code: "stream_missing",
        });
      }
    };
    const versions = existsSync(md)
      ? readdirSync(md)
          .map((n) => /^(\d+)\.root\.json$/.exec(n)?.[1])
          .filter((v): v is string => v !== undefined)
          .map(Number)
      : [];
    if (!versions.length)
      throw new UserError(
        `${dir} is not a ksplice stream (no ${md}/1.root.json): make one with ksplice stream init`,
        {
          code: "stream_missing",
        },
      );
    const root = Metadata.fromJSON(MetadataKind.Root, read(`${Math.max(...versions)}.root.json`));
    const timestamp = Metadata.fromJSON(MetadataKind.Timestamp, read("timestamp.json"));
    const snapshot = Metadata.fromJSON(
      MetadataKind.Snapshot,
      read(`${timestamp.signed.snapshotMeta.version}.snapshot.json`),
    );
    const tv = snapshot.signed.meta["targets.json"]?.version;
    const targets = Metadata.fromJSON(MetadataKind.Targets, read(`${tv}.targets.json`));
    return new Repository(dir, root, targets, snapshot, timestamp);
  }

  /** targetFiles lists the targets, by path. */
  get targetFiles(): Record<string, TargetFile> {
    return this.targets.signed.targets;
  }

  /** targetPath is where a target's content is kept (consistent snapshot: hash-prefixed name). */
  targetFilePath(t: { path: string; hashes: Record<string, string> }): string {
    return join(this.dir, "targets", posix.dirname(t.path), `${t.hashes.sha256}.${posix.basename(t.path)}`);
  }

  /** putTarget stores content as target `path` with custom metadata; it is published by publish(). */
  putTarget(
    path: string,
    content: { file: string } | { bytes: Uint8Array },
    custom?: Record<string, unknown>,
  ): TargetFile {
    if (!/^[A-Za-z0-9._+-]+(\/[A-Za-z0-9._+-]+)*$/.test(path) || path.split("/").includes(".."))
      throw new Error(`a target path must be plain names separated by /: ${path}`);
    const bytes = "file" in content ? readFileSync(content.file) : content.bytes;
    const t = new TargetFile({
      path,
      length: bytes.length,
      hashes: { sha256: sha256(bytes) },
      unrecognizedFields: custom ? { custom: custom as never } : {},
    });
    const dest = this.targetFilePath(t);
    mkdirSync(dirname(dest), { recursive: true });
    if (!existsSync(dest)) {
      if ("file" in content) buildFileAtomic(dest, (tmp) => copyFileSync(content.file, tmp));
      else writeFileAtomic(dest, bytes);
    }
    this.targets.signed.targets[path] = t;
    return t;
  }

  /** dropTarget removes a target from the metadata (its content stays for clients of older snapshots). */
  dropTarget(path: string): void {
    delete this.targets.signed.targets[path];
  }

  /**
   * publish signs and writes new metadata: targets (when changed), snapshot and timestamp, each
   * one version up; the timestamp last.
   */
  publish(keyDir: string, expiry: Expiry, targetsChanged: boolean): void {
    const md = Repository.metadataDir(this.dir);
    const key = (role: Role): RoleKey => loadKey(keyDir, role);
    this.checkKeys(key);
    const now = Date.now();
    if (targetsChanged || this.targetsVersion === 0) {
      const targetsVersion = ++this.targetsVersion;
      this.targets = new Metadata(
        new Targets({
          version: targetsVersion,
          specVersion: SPEC_VERSION,
          expires: expiresAt(expiry.targets, now),
          targets: this.targets.signed.targets,
        }),
      );
      this.targets.sign(signer(key("targets")));
      writeFileAtomic(join(md, `${targetsVersion}.targets.json`), json(this.targets));
    }
    this.renewSnapshot(key, expiry, now, this.targetsVersion);
    this.renewTimestamp(key, expiry, now);
  }

  /**
   * resign refreshes the timestamp (a timer runs it), and the targets and snapshot metadata when
   * less than a quarter of their validity is left.
   */
  resign(keyDir: string, expiry: Expiry): void {
    const now = Date.now();
    const low = (s: { expires: string }, role: Role) =>
      new Date(s.expires).getTime() - now < (expiry[role] * 1000) / 4;
    if (low(this.targets.signed, "targets")) this.publish(keyDir, expiry, true);
    else {
      const key = (role: Role): RoleKey => loadKey(keyDir, role);
      this.checkKeys(key);
      if (low(this.snapshot.signed, "snapshot")) this.renewSnapshot(key, expiry, now, this.targetsVersion);
      this.renewTimestamp(key, expiry, now);
    }
  }

  private renewSnapshot(
    key: (r: Role) => RoleKey,
    expiry: Expiry,
    now: number,
    targetsVersion: number,
  ): void {
    const md = Repository.metadataDir(this.dir);
    const version = this.snapshot.signed.version + 1;
    this.snapshot = new Metadata(
      new Snapshot({
        version,
        specVersion: SPEC_VERSION,
        expires: expiresAt(expiry.snapshot, now),
        meta: { "targets.json": new MetaFile({ version: targetsVersion }) },
      }),
    );
    this.snapshot.sign(signer(key("snapshot")));
    writeFileAtomic(join(md, `${version}.snapshot.json`), json(this.snapshot));
  }

  private renewTimestamp(key: (r: Role) => RoleKey, expiry: Expiry, now: number): void {
    const md = Repository.metadataDir(this.dir);
    const bytes = readFileSync(join(md, `${this.snapshot.signed.version}.snapshot.json`));
    this.timestamp = new Metadata(
      new Timestamp({
        version: this.timestamp.signed.version + 1,
        specVersion: SPEC_VERSION,
        expires: expiresAt(expiry.timestamp, now),
        snapshotMeta: new MetaFile({
          version: this.snapshot.signed.version,
          length: bytes.length,
          hashes: { sha256: sha256(bytes) },
        }),
      }),
    );
    this.timestamp.sign(signer(key("timestamp")));
    writeFileAtomic(join(md, "timestamp.json"), json(this.timestamp));
  }

  /** checkKeys refuses keys the stream's root does not trust for their role (another stream's). */
  private checkKeys(key: (r: Role) => RoleKey): void {
    for (const role of ["targets", "snapshot", "timestamp"] as const) {
      const k = key(role);
      if (!this.root.signed.roles[role]?.keyIDs.includes(k.public.keyID))
        throw new UserError(
          `the ${role} key in the key directory is not the one ${this.dir}'s root trusts: these are another stream's keys`,
          { code: "stream_keys" },
        );
    }
  }
}
