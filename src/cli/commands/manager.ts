// `ksplice manager`: serve the manager page (src/manager) until interrupted.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { UsageError, UserError } from "../../errors.js";
import { realBackend, startManager } from "../../manager/index.js";
import { type Command, println, progress } from "../context.js";

/** DEFAULT_PORT is where the manager listens unless --port says otherwise. */
export const DEFAULT_PORT = 8470;

const usage = `usage: ksplice manager [--host 127.0.0.1] [--port ${DEFAULT_PORT}] [--allow-remote --tls-cert FILE --tls-key FILE]

Serves the manager page: the running kernel and its effective version, the updates applied
(with their CVEs, functions, modules and pause) and those the stream offers, the last check,
errors with what to do about them, and the client's log; with buttons to check the stream,
install every update or one, and remove one. Run it as root, like the client.

It prints the address to open, with a random token: only who has the token can use the page.
It serves on loopback (reach another machine's through an SSH tunnel:
ssh -L ${DEFAULT_PORT}:127.0.0.1:${DEFAULT_PORT} HOST). Another --host is refused unless
--allow-remote says so, and then needs --tls-cert and --tls-key (PEM files).
--port 0 picks a free port. Stop it with Ctrl-C.`;

/** The `manager` verb. */
export const managerCommand: Command = {
  name: "manager",
  usage,
  async run(args, ctx) {
    const { values, positionals } = parseArgs({
      args,
      options: {
        host: { type: "string" },
        port: { type: "string" },
        "allow-remote": { type: "boolean" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
      },
      allowPositionals: true,
    });
    if (positionals.length) throw new UsageError(usage);
    const port = values.port === undefined ? DEFAULT_PORT : Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new UsageError(`--port ${values.port} is not a port`);
    if (Boolean(values["tls-cert"]) !== Boolean(values["tls-key"]))
      throw new UsageError("--tls-cert and --tls-key go together");
    const read = (f: string) => {
      try {
        return readFileSync(resolve(ctx.cwd, f));
      } catch (e) {
        throw new UserError(`cannot read ${f}: ${(e as Error).message}`, { code: "bad_input" });
      }
    };
    const tls =
      values["tls-cert"] && values["tls-key"]
        ? { cert: read(values["tls-cert"]), key: read(values["tls-key"]) }
        : undefined;
    const manager = await startManager({
      backend: realBackend({ helper: ctx.self ? [...ctx.self, "module-coming"] : undefined }),
      host: values.host,
      port,
      allowRemote: values["allow-remote"],
      tls,
      log: progress(ctx, "manager"),
    });
    println(ctx.stdout, "ksplice manager is serving. Open this address (it carries the token):");
    println(ctx.stdout, `    ${manager.url}`);
    await new Promise<void>((done) => {
      if (ctx.signal.aborted) return done();
      ctx.signal.addEventListener("abort", () => done(), { once: true });
    });
    await manager.close();
    return 0;
  },
};
