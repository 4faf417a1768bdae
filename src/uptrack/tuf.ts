// Fetching a stream and proving it is the one this machine trusts, with tuf-js (the TUF client
// that supports Node 20). The cache (/var/cache/ksplice) holds what tuf-js verified: metadata/
// (root chain, timestamp, snapshot, targets) and targets/ (indexes and packages). Every way the
// stream can be wrong is a UserError with its own code, and the cache keeps its last good state:
//   unreachable -> stream_unreachable   expired -> metadata_expired
//   replayed or older metadata -> metadata_rollback
//   signed by keys the trusted root does not name -> untrusted_root
//   a bad signature, or a file that is not what was signed -> metadata_tampered
// Boot re-applies from this cache alone (verifyCached): signatures are checked against the
// cached root, expiry is not (the machine may have been off longer than the metadata lasts).
import { createHash } from "node:crypto";
import { copyFileSync, createReadStream, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { Readable } from "node:stream";
import { connect as tlsConnect } from "node:tls";
import { Metadata, MetadataKind, type Root, type TargetFile, type Targets } from "@tufjs/models";
import { BaseFetcher, Updater } from "tuf-js";
import { DownloadHTTPError } from "tuf-js/dist/error.js";
import { UserError } from "../errors.js";
import { writeFileAtomic } from "../files.js";
import type { ClientConfig, ClientPaths } from "./config.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** ProxyFetcher fetches through an HTTP proxy (CONNECT for https), as https_proxy says. */
class ProxyFetcher extends BaseFetcher {
  constructor(
    private readonly proxy: URL,
    private readonly timeoutMs: number,
  ) {
    super();
  }

  fetch(url: string): Promise<ReadableStream<Uint8Array<ArrayBuffer>>> {
    const target = new URL(url);
    return new Promise((resolve, reject) => {
      const done = (res: IncomingMessage) => {
        if ((res.statusCode ?? 0) >= 400) {
          res.resume();
          reject(new DownloadHTTPError(`${url}: HTTP ${res.statusCode}`, res.statusCode ?? 0));
        } else resolve(Readable.toWeb(res) as ReadableStream<Uint8Array<ArrayBuffer>>);
      };
      const port = Number(this.proxy.port || 80);
      if (target.protocol === "http:") {
        const req = httpRequest(
          { host: this.proxy.hostname, port, path: url, timeout: this.timeoutMs },
          done,
        );
        req.on("timeout", () => req.destroy(new Error(`${url}: no answer through ${this.proxy.host}`)));
        req.on("error", reject).end();
        return;
      }
      const hostPort = `${target.hostname}:${target.port || 443}`;
      const connect = httpRequest({
        host: this.proxy.hostname,
        port,
        method: "CONNECT",
        path: hostPort,
        timeout: this.timeoutMs,
      });
      connect.on("connect", (res, socket) => {
        if (res.statusCode !== 200) {
          socket.destroy();
          reject(
            new Error(`the proxy ${this.proxy.host} refused CONNECT ${hostPort} (HTTP ${res.statusCode})`),
          );
          return;
        }
        const tls = tlsConnect({ socket, servername: target.hostname });
        const req = httpsRequest(
          { host: target.hostname, path: target.pathname + target.search, createConnection: () => tls },
          done,
        );
        req.on("error", reject).end();
      });
      connect.on("timeout", () => connect.destroy(new Error(`no answer from the proxy ${this.proxy.host}`)));
      connect.on("error", reject).end();
    });
  }
}

/** tufError turns what tuf-js throws into the error a user can act on. */
function tufError(e: unknown, what: string, root: string): UserError {
  const err = e as Error;
  const name = err?.constructor?.name ?? "";
  const msg = err?.message ?? String(e);
  if (name === "ExpiredMetadataError")
    return new UserError(
      `${what}: the stream's metadata has expired (${msg}); its publisher must re-sign it`,
      {
        code: "metadata_expired",
        cause: e,
      },
    );
  if (name === "BadVersionError" || name === "EqualVersionError")
    return new UserError(
      `${what}: the stream offers metadata older than this machine has seen (${msg}): a replay or a rollback`,
      {
        code: "metadata_rollback",
        cause: e,
      },
    );
  if (name === "UnsignedMetadataError")
    return new UserError(`${what}: the stream's metadata is not signed by keys ${root} trusts (${msg})`, {
      code: "untrusted_root",
      cause: e,
    });
  if (name === "LengthOrHashMismatchError" || name === "DownloadLengthMismatchError" || name === "ValueError")
    return new UserError(
      `${what}: what the stream served is not what its metadata signed (${msg}): tampered or corrupt`,
      {
        code: "metadata_tampered",
        cause: e,
      },
    );
  if (
    name === "DownloadHTTPError" ||
    name === "DownloadError" ||
    /fetch failed|ECONNREFUSED|ENOTFOUND|ETIMEDOUT|EHOSTUNREACH|socket|network/i.test(msg)
  )
    return new UserError(
      `${what}: the stream cannot be reached (${msg}${err?.cause ? `: ${(err.cause as Error).message}` : ""})`,
      {
        code: "stream_unreachable",
        cause: e,
      },
    );
  return new UserError(`${what}: ${msg}`, { code: "metadata_tampered", cause: e });
}

/** StreamClient reads one stream through the cache, verifying everything. */
export class StreamClient {
  private updater?: Updater;
  readonly metadataDir: string;
  readonly targetDir: string;

  constructor(
    readonly paths: ClientPaths,
    readonly config: ClientConfig,
  ) {
    this.metadataDir = join(paths.cache, "metadata");
    this.targetDir = join(paths.cache, "targets");
  }

  /** seed starts the cache from the trusted root, and starts it again when that root changed. */
  private seed(): void {
    let trusted: Buffer;
    try {
      trusted = readFileSync(this.paths.trustedRoot);
    } catch {
      throw new UserError(
        `${this.paths.trustedRoot} is missing: install the stream's root metadata there (ksplice stream init prints its path)`,
        { code: "not_configured" },
      );
    }
    const mark = join(this.metadataDir, "trusted-root.sha256");
    const sum = sha256(trusted);
    if (
      existsSync(mark) &&
      readFileSync(mark, "utf8").trim() === sum &&
      existsSync(join(this.metadataDir, "root.json"))
    )
      return;
    rmSync(this.metadataDir, { recursive: true, force: true });
    mkdirSync(this.metadataDir, { recursive: true });
    copyFileSync(this.paths.trustedRoot, join(this.metadataDir, "root.json"));
    writeFileAtomic(mark, `${sum}\n`);
  }

  private make(): Updater {
    this.seed();
    mkdirSync(this.targetDir, { recursive: true });
    const proxy = this.config.httpsProxy ? new URL(this.config.httpsProxy) : undefined;
    return new Updater({
      metadataDir: this.metadataDir,
      metadataBaseUrl: `${this.config.repoUrl}/metadata`,
      targetDir: this.targetDir,
      targetBaseUrl: `${this.config.repoUrl}/targets`,
      ...(proxy ? { fetcher: new ProxyFetcher(proxy, 30_000) } : {}),
      config: { fetchTimeout: 30_000, fetchRetries: 1 },
    });
  }

  /** refresh fetches and verifies the stream's newest metadata. */
  async refresh(): Promise<void> {
    const u = this.make();
    try {
      await u.refresh();
    } catch (e) {
      throw tufError(e, `checking ${this.config.repoUrl}`, this.paths.trustedRoot);
    }
    this.updater = u;
  }

  private async fetch(path: string, dest: string): Promise<string | undefined> {
    if (!this.updater) await this.refresh();
    const u = this.updater!;
    let info: TargetFile | undefined;
    try {
      info = await u.getTargetInfo(path);
      if (!info) return undefined;
      mkdirSync(join(dest, ".."), { recursive: true });
      return (await u.findCachedTarget(info, dest)) ?? (await u.downloadTarget(info, dest));
    } catch (e) {
      throw tufError(e, `fetching ${path} from ${this.config.repoUrl}`, this.paths.trustedRoot);
    }
  }

  /** fetchJson downloads and parses a JSON target (undefined when the stream has none). */
  async fetchJson<T>(path: string): Promise<T | undefined> {
    const file = await this.fetch(path, join(this.targetDir, path));
    return file === undefined ? undefined : (JSON.parse(readFileSync(file, "utf8")) as T);
  }

  /** fetchFile downloads a target (verified) into the cache and returns its path. */
  async fetchFile(path: string): Promise<string> {
    const file = await this.fetch(path, join(this.targetDir, path));
    if (file === undefined)
      throw new UserError(`the stream has no ${path} any more`, { code: "not_in_stream" });
    return file;
  }

  /** cachedPath is where a target is kept in the cache. */
  cachedPath(path: string): string {
    return join(this.targetDir, path);
  }
}

/** earliestExpiry is when the first of the cached timestamp, snapshot and targets metadata expires. */
export function earliestExpiry(paths: ClientPaths): Date | undefined {
  const md = join(paths.cache, "metadata");
  const dates: number[] = [];
  for (const f of ["timestamp.json", "snapshot.json", "targets.json"]) {
    try {
      dates.push(new Date(JSON.parse(readFileSync(join(md, f), "utf8")).signed.expires).getTime());
    } catch {}
  }
  return dates.length ? new Date(Math.min(...dates)) : undefined;
}

/**
 * verifyCached proves a cached target is what the cached, signed targets metadata says, whose
 * signatures are checked against the cached root chain's newest root (its expiry is not).
 */
export async function verifyCached(paths: ClientPaths, target: string): Promise<string> {
  const md = join(paths.cache, "metadata");
  const read = (f: string) => JSON.parse(readFileSync(join(md, f), "utf8"));
  let root: Metadata<Root>;
  let targets: Metadata<Targets>;
  try {
    root = Metadata.fromJSON(MetadataKind.Root, read("root.json"));
    targets = Metadata.fromJSON(MetadataKind.Targets, read("targets.json"));
    root.verifyDelegate("targets", targets);
  } catch (e) {
    throw new UserError(`the cached stream metadata in ${md} cannot be verified: ${(e as Error).message}`, {
      code: "metadata_tampered",
      cause: e,
    });
  }
  const info = targets.signed.targets[target];
  if (!info)
    throw new UserError(`the cached stream metadata does not list ${target}`, { code: "metadata_tampered" });
  const file = join(paths.cache, "targets", target);
  try {
    await info.verify(createReadStream(file));
  } catch (e) {
    throw new UserError(
      `the cached ${file} is not the ${target} the stream signed: ${(e as Error).message}`,
      {
        code: "metadata_tampered",
        cause: e,
      },
    );
  }
  return file;
}
