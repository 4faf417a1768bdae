// `ksplice stream ...`: publish updates as a signed stream (a TUF repository; src/stream).
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { UsageError } from "../../errors.js";
import {
  addUpdate,
  initStream,
  listStream,
  promote,
  removeUpdate,
  resign,
  type StreamUpdate,
} from "../../stream/index.js";
import { DEFAULT_EXPIRY, type Expiry, parseDuration } from "../../stream/repo.js";
import { serveStream } from "../../stream/serve.js";
import { type Command, type Context, println } from "../context.js";

const usage = `usage: ksplice stream init DIR --keys KEYDIR [--expires ROLE=DURATION]...
       ksplice stream add DIR UPDATE.tar.gz --keys KEYDIR [--cve ID]... [--name TEXT]
                          [--effective VERSION] [--channel NAME] [--expires ROLE=DURATION]...
       ksplice stream remove DIR ID --keys KEYDIR
       ksplice stream promote DIR ID --to CHANNEL --keys KEYDIR
       ksplice stream resign DIR --keys KEYDIR [--expires ROLE=DURATION]...
       ksplice stream ls DIR [--json]
       ksplice stream serve DIR [--host 127.0.0.1] [--port 8080]

A stream is a directory laid out as a TUF repository (ed25519 keys for the root, targets,
snapshot and timestamp roles, consistent snapshots, expiry dates), served by any static web
server or CDN; clients (ksplice upgrade, uptrack-upgrade) fetch and verify it.
init     make an empty stream; keys are made in KEYDIR when missing (keep KEYDIR out of DIR:
         root and targets keys can stay offline). The last line printed is the root metadata
         clients must trust (install it as /etc/ksplice/root.json).
add      publish an update for the kernel its manifest names, in channel stable unless
         --channel says otherwise; what it stacks on comes from the patches it was made on.
remove   withdraw an update (refused while another stacks on it).
promote  put an update in another channel too (for example testing, then stable).
resign   refresh the timestamp (run it from a timer), and what is close to expiring.
ls       list the updates, in order, with their kernel, channels, CVEs and what they stack on.
serve    a plain static server of DIR, for self-hosting and tests.
--expires ROLE=DURATION   how long ROLE's new metadata stays valid (30s, 15m, 12h, 7d); the
                          defaults are root 365d, targets 90d, snapshot 30d, timestamp 1d.`;

function expiry(list: string[] | undefined): Expiry {
  const out = { ...DEFAULT_EXPIRY };
  for (const e of list ?? []) {
    const m = /^(root|targets|snapshot|timestamp)=(.+)$/.exec(e);
    if (!m)
      throw new UsageError(
        `--expires takes ROLE=DURATION with ROLE root, targets, snapshot or timestamp: ${e}`,
      );
    out[m[1] as keyof Expiry] = parseDuration(m[2]);
  }
  return out;
}

const OPTIONS = {
  keys: { type: "string" },
  expires: { type: "string", multiple: true },
  cve: { type: "string", multiple: true },
  name: { type: "string" },
  effective: { type: "string" },
  channel: { type: "string" },
  to: { type: "string" },
  json: { type: "boolean" },
  host: { type: "string" },
  port: { type: "string" },
} as const;

function describe(u: StreamUpdate): string {
  const stack = u.stacksOn.length ? `, stacks on ${u.stacksOn.join(", ")}` : "";
  const cves = u.cves.length ? ` [${u.cves.join(", ")}]` : "";
  return `${u.id}  ${u.kernel.release} (${u.kernel.buildId ?? "any build"})  ${u.channels.join(",")}${stack}: ${u.name}${cves}`;
}

/** The `stream` verb. */
export const streamCommand: Command = {
  name: "stream",
  usage,
  async run(args, ctx) {
    const { values, positionals } = parseArgs({ args, options: OPTIONS, allowPositionals: true });
    const [sub, dirArg, ...rest] = positionals;
    if (!sub || !dirArg) throw new UsageError(usage);
    const dir = resolve(ctx.cwd, dirArg);
    const keys = () => {
      if (!values.keys) throw new UsageError(`stream ${sub} signs: --keys KEYDIR is required\n${usage}`);
      return resolve(ctx.cwd, values.keys);
    };
    const want = (n: number, what: string) => {
      if (rest.length !== n) throw new UsageError(`stream ${sub} takes DIR${what}\n${usage}`);
    };
    switch (sub) {
      case "init": {
        want(0, "");
        const root = initStream(dir, keys(), expiry(values.expires));
        println(ctx.stdout, `stream ${dir} made; clients trust its root metadata:`);
        println(ctx.stdout, root);
        return 0;
      }
      case "add": {
        want(1, " UPDATE.tar.gz");
        const u = await addUpdate(dir, keys(), resolve(ctx.cwd, rest[0]), {
          cves: values.cve,
          name: values.name,
          effective: values.effective,
          channel: values.channel,
          expiry: expiry(values.expires),
        });
        println(
          ctx.stdout,
          values.json ? JSON.stringify({ schemaVersion: 1, update: u }, null, 2) : `added ${describe(u)}`,
        );
        return 0;
      }
      case "remove": {
        want(1, " ID");
        const u = removeUpdate(dir, keys(), rest[0], expiry(values.expires));
        println(ctx.stdout, `removed ${u.id}`);
        return 0;
      }
      case "promote": {
        want(1, " ID");
        if (!values.to) throw new UsageError(`stream promote needs --to CHANNEL\n${usage}`);
        const u = promote(dir, keys(), rest[0], values.to, expiry(values.expires));
        println(ctx.stdout, `${u.id} is in ${u.channels.join(", ")}`);
        return 0;
      }
      case "resign": {
        want(0, "");
        resign(dir, keys(), expiry(values.expires));
        println(ctx.stdout, `resigned: timestamp expires ${listStream(dir).expires.timestamp}`);
        return 0;
      }
      case "ls":
        want(0, "");
        return list(dir, values.json === true, ctx);
      case "serve": {
        want(0, "");
        const port = values.port === undefined ? 8080 : Number(values.port);
        if (!Number.isInteger(port) || port < 0 || port > 65535)
          throw new UsageError(`--port ${values.port} is not a port`);
        const { server, url } = await serveStream(dir, { host: values.host, port });
        println(ctx.stdout, `serving ${dir} at ${url} (update_repo_url = ${url})`);
        await new Promise<void>((done) => {
          ctx.signal.addEventListener("abort", () => server.close(() => done()), { once: true });
        });
        return 0;
      }
      default:
        throw new UsageError(`unknown stream command ${sub}\n${usage}`);
    }
  },
};

function list(dir: string, json: boolean, ctx: Context): number {
  const s = listStream(dir);
  if (json) {
    println(ctx.stdout, JSON.stringify({ schemaVersion: 1, ...s }, null, 2));
    return 0;
  }
  if (!s.updates.length) println(ctx.stdout, "No updates in this stream.");
  for (const u of s.updates) println(ctx.stdout, describe(u));
  println(
    ctx.stdout,
    `expires: ${Object.entries(s.expires)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}`,
  );
  return 0;
}
