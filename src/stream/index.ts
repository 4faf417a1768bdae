// Folder src/stream: the publisher's side of Uptrack. A stream is a directory laid out as a TUF
// repository (repo.ts, keys.ts) that any static web server serves (serve.ts for self-hosting
// and tests). This file owns what a stream means for ksplice: updates and their order, what each
// stacks on, channels, and the per-kernel index a client reads. It reads packages through
// src/package and imports nothing else of the product (not src/kernel, src/update, src/lab).
//
// Targets:
//   updates/ID.tar.gz                         an update package, with custom metadata under
//                                             "ksplice": id, kernel, name, CVEs, effective
//                                             version, what it stacks on, its channels, order
//   kernels/RELEASE/BUILD/CHANNEL.json        the index of one kernel build in one channel:
//                                             its updates in order (BUILD is the build id, or
//                                             "any" for an update made without one)
// The indexes are made again from the updates' metadata on every change.
import { existsSync, statSync } from "node:fs";
import { UserError } from "../errors.js";
import { openPackage } from "../package/package.js";
import { DEFAULT_EXPIRY, type Expiry, Repository } from "./repo.js";

/** INDEX_SCHEMA is the version of a kernel index's format. */
export const INDEX_SCHEMA = 1;

/** DEFAULT_CHANNEL is where add publishes and clients read unless told otherwise. */
export const DEFAULT_CHANNEL = "stable";

/** StreamUpdate is what a stream says of one update (the custom metadata of its target). */
export interface StreamUpdate {
  id: string;
  kernel: { release: string; buildId: string | null };
  name: string;
  description: string;
  cves: string[];
  /** The kernel version the machine is as good as once this update is in (uptrack-uname). */
  effective: string | null;
  /** Updates that must be applied first (their patches are this one's --applied). */
  stacksOn: string[];
  channels: string[];
  /** The order of publication: indexes list updates by it. */
  order: number;
  /** sha256 of each patch the update carries (later updates stack on them). */
  patches: string[];
  added: string;
}

/** KernelIndex is the target a client reads: one kernel build's updates in one channel, in order. */
export interface KernelIndex {
  schemaVersion: number;
  kernel: { release: string; buildId: string | null };
  channel: string;
  updates: Array<Omit<StreamUpdate, "channels" | "patches" | "order"> & { target: string }>;
}

/** updateTarget is the target path of an update's package. */
export function updateTarget(id: string): string {
  return `updates/${id}.tar.gz`;
}

/** indexTarget is the target path of a kernel build's index in a channel. */
export function indexTarget(release: string, buildId: string | null, channel: string): string {
  return `kernels/${release}/${buildId ?? "any"}/${channel}.json`;
}

/** updatesOf lists a stream's updates in order of publication. */
export function updatesOf(repo: Repository): StreamUpdate[] {
  return Object.values(repo.targetFiles)
    .map((t) => (t.custom as { ksplice?: StreamUpdate }).ksplice)
    .filter((u): u is StreamUpdate => u !== undefined)
    .sort((a, b) => a.order - b.order);
}

/**
 * inChannel: an update of the stable channel is in every channel (a channel's series must be
 * complete: what its updates stack on is there), others only in their own.
 */
export function inChannel(u: { channels: string[] }, channel: string): boolean {
  return u.channels.includes(channel) || u.channels.includes(DEFAULT_CHANNEL);
}

/** writeIndexes makes every kernel index again from the updates (and drops those left empty). */
function writeIndexes(repo: Repository): void {
  const updates = updatesOf(repo);
  for (const path of Object.keys(repo.targetFiles)) if (path.startsWith("kernels/")) repo.dropTarget(path);
  const channels = new Set([DEFAULT_CHANNEL, ...updates.flatMap((u) => u.channels)]);
  const keys = new Set(
    updates.flatMap((u) => [...channels].map((c) => JSON.stringify([u.kernel.release, u.kernel.buildId, c]))),
  );
  for (const key of keys) {
    const [release, buildId, channel] = JSON.parse(key) as [string, string | null, string];
    const index: KernelIndex = {
      schemaVersion: INDEX_SCHEMA,
      kernel: { release, buildId },
      channel,
      updates: updates
        .filter((u) => u.kernel.release === release && u.kernel.buildId === buildId && inChannel(u, channel))
        .map(({ channels: _c, patches: _p, order: _o, ...rest }) => ({
          ...rest,
          target: updateTarget(rest.id),
        })),
    };
    repo.putTarget(indexTarget(release, buildId, channel), {
      bytes: Buffer.from(`${JSON.stringify(index, null, 2)}\n`),
    });
  }
}

/** AddOptions describe an update as the stream publishes it. */
export interface AddOptions {
  cves?: string[];
  name?: string;
  effective?: string;
  channel?: string;
  expiry?: Expiry;
}

/**
 * addUpdate publishes a package for the kernel named in its manifest. What it stacks on is found
 * from its manifest: each patch it was made --applied on must be carried by an update of the
 * stream for the same kernel, in the channel it goes to.
 */
export async function addUpdate(
  dir: string,
  keyDir: string,
  pkgPath: string,
  o: AddOptions = {},
): Promise<StreamUpdate> {
  const repo = Repository.open(dir);
  if (!existsSync(pkgPath) || !statSync(pkgPath).isFile())
    throw new UserError(
      `${pkgPath}: a stream publishes update packages as create makes them (ksplice-ID.tar.gz)`,
      {
        code: "bad_package",
      },
    );
  const pkg = await openPackage(pkgPath);
  try {
    const m = pkg.manifest;
    const channel = o.channel ?? DEFAULT_CHANNEL;
    if (!/^[a-z0-9][a-z0-9_-]*$/.test(channel))
      throw new UserError(`a channel is a name of [a-z0-9_-]: ${channel}`, { code: "usage" });
    const all = updatesOf(repo);
    if (all.some((u) => u.id === m.id))
      throw new UserError(
        `the stream has an update ${m.id} already; remove it first, or give the new one another id`,
        {
          code: "stream_conflict",
        },
      );
    const sameKernel = all.filter(
      (u) => u.kernel.release === m.kernel.release && u.kernel.buildId === m.kernel.buildId,
    );
    const stacksOn: string[] = [];
    for (const a of m.applied) {
      const base = sameKernel.find((u) => u.patches.includes(a.sha256));
      if (!base)
        throw new UserError(
          `update ${m.id} stacks on patch ${a.name} (sha256 ${a.sha256.slice(0, 12)}…), which no update of this stream for ${m.kernel.release} carries: add that update first`,
          { code: "stream_conflict" },
        );
      if (!inChannel(base, channel))
        throw new UserError(
          `update ${m.id} stacks on ${base.id}, which is not in channel ${channel}: promote it first`,
          {
            code: "stream_conflict",
          },
        );
      if (!stacksOn.includes(base.id)) stacksOn.push(base.id);
    }
    const channels = [channel];
    const update: StreamUpdate = {
      id: m.id,
      kernel: { release: m.kernel.release, buildId: m.kernel.buildId },
      name: o.name ?? m.description,
      description: m.description,
      cves: o.cves ?? [],
      effective: o.effective ?? null,
      stacksOn,
      channels,
      order: all.reduce((n, u) => Math.max(n, u.order), 0) + 1,
      patches: m.patches.map((p) => p.sha256),
      added: new Date().toISOString(),
    };
    repo.putTarget(updateTarget(m.id), { file: pkgPath }, { ksplice: update });
    writeIndexes(repo);
    repo.publish(keyDir, o.expiry ?? DEFAULT_EXPIRY, true);
    return update;
  } finally {
    pkg.close();
  }
}

/** findUpdate returns the stream's update id, or refuses with not_in_stream. */
function findUpdate(all: StreamUpdate[], id: string): StreamUpdate {
  const u = all.find((x) => x.id === id);
  if (!u)
    throw new UserError(`the stream has no update ${id} (ksplice stream ls lists them)`, {
      code: "not_in_stream",
    });
  return u;
}

/** removeUpdate withdraws an update (refused while another stacks on it). */
export function removeUpdate(
  dir: string,
  keyDir: string,
  id: string,
  expiry: Expiry = DEFAULT_EXPIRY,
): StreamUpdate {
  const repo = Repository.open(dir);
  const all = updatesOf(repo);
  const u = findUpdate(all, id);
  const above = all.filter((x) => x.stacksOn.includes(id));
  if (above.length)
    throw new UserError(`update(s) ${above.map((x) => x.id).join(", ")} stack on ${id}: remove them first`, {
      code: "stream_conflict",
    });
  repo.dropTarget(updateTarget(id));
  writeIndexes(repo);
  repo.publish(keyDir, expiry, true);
  return u;
}

/** promote puts an update in another channel too (staged rollout); what it stacks on must be there. */
export function promote(
  dir: string,
  keyDir: string,
  id: string,
  to: string,
  expiry: Expiry = DEFAULT_EXPIRY,
): StreamUpdate {
  const repo = Repository.open(dir);
  const all = updatesOf(repo);
  const u = findUpdate(all, id);
  const missing = u.stacksOn.filter((b) => {
    const base = all.find((x) => x.id === b);
    return !base || !inChannel(base, to);
  });
  if (missing.length)
    throw new UserError(
      `update ${id} stacks on ${missing.join(", ")}, not in channel ${to}: promote them first`,
      {
        code: "stream_conflict",
      },
    );
  if (inChannel(u, to)) return u;
  const target = repo.targetFiles[updateTarget(id)];
  const moved: StreamUpdate = { ...u, channels: [...u.channels, to].sort() };
  repo.putTarget(updateTarget(id), { file: repo.targetFilePath(target) }, { ksplice: moved });
  writeIndexes(repo);
  repo.publish(keyDir, expiry, true);
  return moved;
}

/** resign refreshes the stream's timestamp (and what is close to expiring). */
export function resign(dir: string, keyDir: string, expiry: Expiry = DEFAULT_EXPIRY): void {
  Repository.open(dir).resign(keyDir, expiry);
}

/** initStream makes an empty stream; returns the path of the root metadata clients must trust. */
export function initStream(dir: string, keyDir: string, expiry: Expiry = DEFAULT_EXPIRY): string {
  return Repository.init(dir, keyDir, expiry);
}

/** listStream describes a stream: its updates, and when its metadata expires. */
export function listStream(dir: string): {
  updates: StreamUpdate[];
  expires: Record<"root" | "targets" | "snapshot" | "timestamp", string>;
  versions: Record<"root" | "targets" | "snapshot" | "timestamp", number>;
} {
  const repo = Repository.open(dir);
  const roles = {
    root: repo.root,
    targets: repo.targets,
    snapshot: repo.snapshot,
    timestamp: repo.timestamp,
  };
  return {
    updates: updatesOf(repo),
    expires: Object.fromEntries(Object.entries(roles).map(([k, m]) => [k, m.signed.expires])) as never,
    versions: Object.fromEntries(Object.entries(roles).map(([k, m]) => [k, m.signed.version])) as never,
  };
}
