// The update stream without a kernel: the publisher (init, add with stacking from the packages'
// manifests, channels, promote, remove, resign, ls) writing a TUF repository, served on
// 127.0.0.1, and the client (ksplice show --available / --check, run as a subprocess with its
// files under KSPLICE_CLIENT_ROOT) reading it through tuf-js: what it finds, and each way the
// stream can be wrong (tampered, replayed, expired, another stream's root, unreachable, another
// kernel), each refused with its own code.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { UserError } from "../../src/errors.js";
import { runningIdentity } from "../../src/live/identity.js";
import { FORMAT_VERSION, type Manifest } from "../../src/package/manifest.js";
import { writePackage } from "../../src/package/package.js";
import { addUpdate, initStream, listStream, promote, removeUpdate, resign } from "../../src/stream/index.js";
import { DEFAULT_EXPIRY } from "../../src/stream/repo.js";
import { serveStream } from "../../src/stream/serve.js";
import { metricsText } from "../../src/uptrack/state.js";
import { tempDir } from "../helpers/compile.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
const sha = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");
const HOST = runningIdentity();

/** aPackage writes a package for a kernel, carrying one patch, made on `applied` patches. */
async function aPackage(
  dir: string,
  id: string,
  patch: string,
  applied: string[] = [],
  release = HOST.release,
) {
  const ko = Buffer.from(`\x7fELF ${id}`);
  const m: Manifest = {
    format: "ksplice-update",
    formatVersion: FORMAT_VERSION,
    id,
    description: `update ${id}`,
    createdAt: "2026-12-07T00:00:00.000Z",
    tool: "ksplice test",
    kernel: { release, buildId: HOST.buildId, banner: null },
    patches: [{ name: `${id}.patch`, sha256: sha(patch), text: patch }],
    applied: applied.map((p, i) => ({ name: `base${i}.patch`, sha256: sha(p) })),
    module: { name: `ksplice_${id}`, file: `ksplice_${id}.ko` },
    core: null,
    objects: [],
    targets: [],
    newFunctions: [],
    newData: [],
    relocations: [],
    hooks: [],
    files: [{ path: `ksplice_${id}.ko`, sha256: sha(ko), size: ko.length }],
  };
  const out = join(dir, `ksplice-${id}.tar.gz`);
  await writePackage(out, `ksplice-${id}`, m, [{ path: `ksplice_${id}.ko`, bytes: ko }]);
  return out;
}

/** client runs the CLI as a subprocess with its files under root. */
function client(root: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(REPO, "dist/src/cli/run.js"), ...args],
      { env: { ...process.env, KSPLICE_CLIENT_ROOT: root } },
      (e, out, err) => resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
    );
  });
}

/** clientRoot makes a client's files: the config and the trusted root. */
function clientRoot(url: string, trusted: string, extra = ""): string {
  const root = tempDir();
  mkdirSync(join(root, "etc/ksplice"), { recursive: true });
  writeFileSync(
    join(root, "etc/ksplice/uptrack.conf"),
    `[Network]\nupdate_repo_url = ${url}\n\n[Settings]\n${extra}`,
  );
  copyFileSync(trusted, join(root, "etc/ksplice/root.json"));
  return root;
}

test("the publisher: stacking from manifests, channels, promote, remove, resign, and its refusals", async () => {
  const dir = tempDir();
  const stream = join(dir, "stream");
  const keys = join(dir, "keys");
  const root = initStream(stream, keys);
  assert.equal(root, join(stream, "metadata/1.root.json"));
  assert.throws(
    () => initStream(stream, keys),
    (e: unknown) => e instanceof UserError && e.code === "stream_exists",
  );
  assert.deepEqual(readdirSync(keys).sort(), ["root.pem", "snapshot.pem", "targets.pem", "timestamp.pem"]);

  const [a, b, c] = ["A", "B", "C"].map((x) => `patch ${x}\n`);
  await addUpdate(stream, keys, await aPackage(dir, "ua", a), { cves: ["CVE-2026-0001"] });
  await addUpdate(stream, keys, await aPackage(dir, "ub", b, [a]));
  await addUpdate(stream, keys, await aPackage(dir, "uc", c, [a, b]), {
    channel: "testing",
    effective: "6.1.192-3",
  });
  const ls = listStream(stream);
  assert.deepEqual(
    ls.updates.map((u) => [u.id, u.stacksOn, u.channels, u.order]),
    [
      ["ua", [], ["stable"], 1],
      ["ub", ["ua"], ["stable"], 2],
      ["uc", ["ua", "ub"], ["testing"], 3],
    ],
  );
  // Not on a patch the stream carries; not twice; not in a channel its base is not in.
  await assert.rejects(
    addUpdate(stream, keys, await aPackage(dir, "ux", "x", ["nothing"])),
    /no update of this stream/,
  );
  await assert.rejects(addUpdate(stream, keys, await aPackage(dir, "ua", a)), /has an update ua already/);
  await assert.rejects(
    addUpdate(stream, keys, await aPackage(dir, "ud", "d", [c]), { channel: "stable" }),
    /stacks on uc, which is not in channel stable: promote it first/,
  );
  assert.throws(() => removeUpdate(stream, keys, "ub"), /uc stack on ub: remove them first/);
  assert.equal(promote(stream, keys, "uc", "stable").channels.join(","), "stable,testing");
  const before = listStream(stream).versions.timestamp;
  resign(stream, keys);
  assert.equal(listStream(stream).versions.timestamp, before + 1);
  // Another stream's keys are refused.
  const other = join(dir, "other");
  initStream(join(dir, "s2"), other);
  assert.throws(
    () => resign(stream, other),
    (e: unknown) => e instanceof UserError && e.code === "stream_keys",
  );
  assert.equal(removeUpdate(stream, keys, "uc").id, "uc");
  assert.deepEqual(
    listStream(stream).updates.map((u) => u.id),
    ["ua", "ub"],
  );
});

test("the client reads a served stream: available updates, the check's exit codes, and every refusal", async () => {
  const dir = tempDir();
  const stream = join(dir, "stream");
  const keys = join(dir, "keys");
  const trusted = initStream(stream, keys);
  const [a, b] = ["A", "B"].map((x) => `patch ${x}\n`);
  await addUpdate(stream, keys, await aPackage(dir, "ua", a), { cves: ["CVE-2026-0001"] });
  await addUpdate(stream, keys, await aPackage(dir, "ub", b, [a]), {
    name: "the second",
    effective: "9.9.9",
  });
  const { server, url } = await serveStream(stream, { port: 0 });
  try {
    const root = clientRoot(url, trusted);
    const show = await client(root, ["show", "--available", "--json"]);
    assert.equal(show.code, 0, show.err);
    const j = JSON.parse(show.out);
    assert.equal(j.state, "updates_available");
    assert.deepEqual(
      j.available.map((u: { id: string; stacksOn: string[] }) => [u.id, u.stacksOn]),
      [
        ["ua", []],
        ["ub", ["ua"]],
      ],
    );
    assert.equal((await client(root, ["show", "--check"])).code, 3);
    const metrics = readFileSync(join(root, "var/lib/prometheus/node-exporter/ksplice.prom"), "utf8");
    assert.match(metrics, /^ksplice_updates_available 2$/m);
    assert.match(metrics, /^ksplice_state\{state="updates_available"\} 1$/m);
    assert.equal(readFileSync(join(root, "run/ksplice/effective_version"), "utf8"), `${HOST.release}\n`);

    // Tampered: the served indexes are not what the targets metadata signed.
    const indexes = (d: string): string[] =>
      readdirSync(d, { withFileTypes: true }).flatMap((n) =>
        n.isDirectory() ? indexes(join(d, n.name)) : n.name.endsWith(".stable.json") ? [join(d, n.name)] : [],
      );
    const files = indexes(join(stream, "targets/kernels", HOST.release));
    const good = files.map((f) => readFileSync(f));
    for (const f of files) writeFileSync(f, readFileSync(f, "utf8").replace('"ua"', '"uz"'));
    const tampered = await client(clientRoot(url, trusted), ["show", "--available", "--raw-errors"]);
    assert.equal(tampered.err.split("\n")[0], "metadata_tampered", tampered.err);
    for (const [i, f] of files.entries()) writeFileSync(f, good[i]);

    // Replayed: an older timestamp after the client saw a newer one.
    const ts = join(stream, "metadata/timestamp.json");
    const old = readFileSync(ts);
    resign(stream, keys);
    assert.equal((await client(root, ["show", "--available"])).code, 0);
    writeFileSync(ts, old);
    const replay = await client(root, ["show", "--available", "--raw-errors"]);
    assert.equal(replay.err.split("\n")[0], "metadata_rollback", replay.err);
    resign(stream, keys);

    // Expired.
    resign(stream, keys, { ...DEFAULT_EXPIRY, timestamp: 1 });
    await new Promise((r) => setTimeout(r, 2100));
    const expired = await client(clientRoot(url, trusted), ["show", "--available", "--raw-errors"]);
    assert.equal(expired.err.split("\n")[0], "metadata_expired", expired.err);
    assert.match(expired.err, /expired/);
    resign(stream, keys);

    // A root this stream does not sign with.
    const stranger = initStream(join(dir, "s2"), join(dir, "k2"));
    const untrusted = await client(clientRoot(url, stranger), ["show", "--available", "--raw-errors"]);
    assert.equal(untrusted.err.split("\n")[0], "untrusted_root", untrusted.err);

    // A kernel the stream has no updates for: the check says so (4).
    const s3 = join(dir, "s3");
    const t3 = initStream(s3, keys);
    await addUpdate(s3, keys, await aPackage(dir, "uo", "o", [], "5.10.0-99-other"));
    const other = await serveStream(s3, { port: 0 });
    try {
      const r = await client(clientRoot(other.url, t3), ["show", "--check", "--json"]);
      assert.equal(r.code, 4, r.err);
      assert.equal(JSON.parse(r.out).state, "unsupported_kernel");
    } finally {
      other.server.close();
    }
  } finally {
    await new Promise<void>((r) => (server as Server).close(() => r()));
  }
  // Unreachable: nothing listens there any more.
  const gone = await client(clientRoot(url, trusted), ["show", "--check", "--raw-errors"]);
  assert.equal(gone.code, 1);
  assert.equal(gone.err.split("\n")[0], "stream_unreachable", gone.err);
});

test("metrics are node_exporter's text format, one sample per line", () => {
  const text = metricsText({
    release: "6.1.0-50-cloud-amd64",
    effective: '6.1.192-3 "x"',
    installed: [],
    status: { available: ["a"], supported: true, lastCheck: "2026-12-07T00:00:00Z" },
  });
  for (const line of text.trim().split("\n"))
    assert.match(line, /^(# (HELP|TYPE) ksplice_\w+ .+|ksplice_\w+(\{[^}]*\})? \d+)$/, line);
  assert.match(text, /ksplice_info\{release="6\.1\.0-50-cloud-amd64",effective="6\.1\.192-3 \\"x\\""\} 1/);
  assert.match(text, /ksplice_last_check_timestamp_seconds 1796601600/);
});

test("the installed list of an earlier boot is kept until ksplice boot re-applies it (ksplice=off, a disabled unit)", async () => {
  const trusted = join(tempDir(), "root.json");
  writeFileSync(trusted, "{}");
  const root = clientRoot("http://127.0.0.1:9", trusted);
  mkdirSync(join(root, "proc/sys/kernel/random"), { recursive: true });
  mkdirSync(join(root, "var/cache/ksplice"), { recursive: true });
  const list = join(root, "var/cache/ksplice/installed.json");
  const entry = { id: "ua", name: "A", cves: [], stacksOn: [], kernel: { release: HOST.release } };
  writeFileSync(list, JSON.stringify({ schemaVersion: 1, bootId: "before", updates: [entry] }));
  writeFileSync(join(root, "proc/sys/kernel/random/boot_id"), "after\n");
  const shown = await client(root, ["show", "--json"]);
  assert.equal(shown.code, 0, shown.err);
  assert.deepEqual(JSON.parse(shown.out).installed, [], "nothing is applied in this boot");
  assert.equal(
    JSON.parse(readFileSync(list, "utf8")).updates[0].id,
    "ua",
    "the list stays for the next boot",
  );
  // Written in this boot, the same list is made to agree with the kernel.
  writeFileSync(list, JSON.stringify({ schemaVersion: 1, bootId: "after", updates: [entry] }));
  assert.equal((await client(root, ["show", "--json"])).code, 0);
  assert.deepEqual(JSON.parse(readFileSync(list, "utf8")).updates, []);
});
