// The manager's HTTP(S) server: the page, the state as JSON, actions that run one at a time and
// stream their progress as server-sent events.
//
// Access: a random token, printed at start in the URL to open (as notebook servers do). Opening
// /?token=T sets it in an HttpOnly, SameSite=Strict cookie and redirects to / so it leaves the
// address bar; every request but that one needs the cookie. A request that changes something
// (POST) must also carry the token in the X-Ksplice-Token header (the page reads it from its
// own markup, which another site cannot read), be JSON (a cross-site form cannot send that
// without a preflight, which is never answered), and come from this origin when the browser
// says (Origin). Bound to loopback, the Host header must name loopback too (DNS rebinding).
// Another address is refused unless the caller says so, and then needs TLS.
import { randomBytes, timingSafeEqual } from "node:crypto";
import {
  createServer as createHttp,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttps } from "node:https";
import { isIP } from "node:net";
import { UserError } from "../errors.js";
import { type Backend, hintFor, type Problem, problemOf } from "./backend.js";
import { PAGE_CSS, PAGE_JS, pageHtml } from "./page.js";

/** ManagerOptions say where and how to serve. */
export interface ManagerOptions {
  backend: Backend;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
  /** Allow an address other than loopback (then tls is required). */
  allowRemote?: boolean;
  tls?: { cert: Buffer | string; key: Buffer | string };
  /** Default: 32 random bytes, hex. */
  token?: string;
  /** One line per request and action, for the console. */
  log?: (line: string) => void;
}

/** Manager is a running manager server. */
export interface Manager {
  server: Server;
  /** The address to open, with the token. */
  url: string;
  token: string;
  close(): Promise<void>;
}

const COOKIE = "ksplice_manager";

/** isLoopback says whether a host to bind names this machine's loopback. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "");
  if (h === "localhost" || h === "::1") return true;
  return isIP(h) === 4 && h.startsWith("127.");
}

/** Job is one action: its progress lines, and how it ended. */
interface Job {
  id: string;
  action: string;
  events: Array<{ event: string; data: unknown }>;
  done: boolean;
  listeners: Set<ServerResponse>;
}

/** startManager validates the options, listens, and resolves with the URL to open. */
export async function startManager(o: ManagerOptions): Promise<Manager> {
  const host = o.host ?? "127.0.0.1";
  const loopback = isLoopback(host);
  if (!loopback && !o.allowRemote)
    throw new UserError(
      `refusing to serve the manager on ${host}, which is not a loopback address: anyone who can reach it could try it. Reach it through an SSH tunnel, or say --allow-remote (with --tls-cert and --tls-key)`,
      { code: "usage" },
    );
  if (!loopback && !o.tls)
    throw new UserError(
      `serving the manager on ${host}, off this machine, needs TLS: give --tls-cert FILE and --tls-key FILE`,
      { code: "usage" },
    );
  const token = o.token ?? randomBytes(32).toString("hex");
  const log = o.log ?? (() => {});
  const jobs = new Map<string, Job>();
  let running: Job | undefined;

  const tokenOk = (t: string | undefined | null) => {
    if (!t) return false;
    const a = Buffer.from(t);
    const b = Buffer.from(token);
    return a.length === b.length && timingSafeEqual(a, b);
  };
  const cookieOf = (req: IncomingMessage) => {
    for (const part of (req.headers.cookie ?? "").split(";")) {
      const [k, ...v] = part.trim().split("=");
      if (k === COOKIE) return v.join("=");
    }
    return undefined;
  };
  const scheme = o.tls ? "https" : "http";

  const send = (res: ServerResponse, status: number, type: string, body: string, extra = {}) => {
    res.writeHead(status, {
      "content-type": type,
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
      "x-frame-options": "DENY",
      "referrer-policy": "no-referrer",
      "content-security-policy":
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
      ...extra,
    });
    res.end(body);
  };
  const json = (res: ServerResponse, status: number, body: unknown) =>
    send(res, status, "application/json; charset=utf-8", JSON.stringify(body));
  const refuse = (res: ServerResponse, status: number, code: string, message: string) =>
    json(res, status, { error: { code, message, hint: hintFor(code) } satisfies Problem });

  const emit = (job: Job, event: string, data: unknown) => {
    job.events.push({ event, data });
    const chunk = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const l of job.listeners) l.write(chunk);
    if (event === "done") for (const l of job.listeners) l.end();
  };

  const start = (action: string, ids: string[] | "all"): Job => {
    const job: Job = {
      id: randomBytes(8).toString("hex"),
      action,
      events: [],
      done: false,
      listeners: new Set(),
    };
    jobs.set(job.id, job);
    for (const old of [...jobs.keys()].slice(0, -20)) jobs.delete(old);
    running = job;
    const progress = (line: string) => emit(job, "progress", { line });
    log(`${action} ${ids === "all" ? "all" : ids.join(" ")}`.trim());
    const work =
      action === "check"
        ? o.backend.check(progress)
        : action === "install"
          ? o.backend.install(ids, progress)
          : o.backend.remove(ids as string[], progress);
    work.then(
      (message) => {
        log(`${action}: ${message.replace(/\n/g, "; ")}`);
        job.done = true;
        running = undefined;
        emit(job, "done", { ok: true, message });
      },
      (e) => {
        const problem = problemOf(e);
        log(`${action} failed: ${problem.code}: ${problem.message}`);
        job.done = true;
        running = undefined;
        emit(job, "done", { ok: false, problem });
      },
    );
    return job;
  };

  const readBody = (req: IncomingMessage) =>
    new Promise<string>((resolve, reject) => {
      let size = 0;
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size > 65536) {
          reject(new Error("request too large"));
          req.destroy();
        } else chunks.push(c);
      });
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      req.on("error", reject);
    });

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://x");
    const hostHeader = req.headers.host ?? "";
    // Bound to loopback, only a loopback name reaches it honestly: another name is a page
    // elsewhere resolving its own name to 127.0.0.1 (DNS rebinding).
    if (loopback && !isLoopback(hostHeader.replace(/:\d+$/, "")))
      return refuse(res, 403, "forbidden", `the Host ${hostHeader} is not this machine's loopback`);
    if (req.method === "GET" && url.pathname === "/" && url.searchParams.has("token")) {
      if (!tokenOk(url.searchParams.get("token")))
        return send(res, 403, "text/html; charset=utf-8", pageHtml({ denied: "That token is wrong." }));
      return send(res, 303, "text/plain", "", {
        location: "/",
        "set-cookie": `${COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/${o.tls ? "; Secure" : ""}`,
      });
    }
    if (!tokenOk(cookieOf(req))) {
      if (req.method === "GET" && url.pathname === "/")
        return send(res, 401, "text/html; charset=utf-8", pageHtml({ denied: "" }));
      return refuse(res, 401, "unauthorized", "open the address ksplice manager printed, with its token");
    }
    if (req.method === "GET") {
      if (url.pathname === "/") return send(res, 200, "text/html; charset=utf-8", pageHtml({ token }));
      if (url.pathname === "/app.js") return send(res, 200, "text/javascript; charset=utf-8", PAGE_JS);
      if (url.pathname === "/app.css") return send(res, 200, "text/css; charset=utf-8", PAGE_CSS);
      if (url.pathname === "/api/state") {
        try {
          return json(res, 200, { ...(await o.backend.state()), running: running?.id ?? null });
        } catch (e) {
          return json(res, 500, { error: problemOf(e) });
        }
      }
      const m = /^\/api\/jobs\/([0-9a-f]+)\/events$/.exec(url.pathname);
      if (m) {
        const job = jobs.get(m[1]);
        if (!job) return refuse(res, 404, "not_found", "no such action");
        res.writeHead(200, {
          "content-type": "text/event-stream",
          "cache-control": "no-store",
          "x-content-type-options": "nosniff",
        });
        for (const e of job.events) res.write(`event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`);
        if (job.done) return res.end();
        job.listeners.add(res);
        res.on("close", () => job.listeners.delete(res));
        return;
      }
      return refuse(res, 404, "not_found", `no page ${url.pathname}`);
    }
    if (req.method === "POST" && url.pathname === "/api/actions") {
      if (!tokenOk(req.headers["x-ksplice-token"] as string | undefined))
        return refuse(res, 403, "forbidden", "a change needs the X-Ksplice-Token header");
      const origin = req.headers.origin;
      if (origin !== undefined && origin !== `${scheme}://${hostHeader}`)
        return refuse(res, 403, "forbidden", `a change from another site (${origin}) is refused`);
      if (!/^application\/json\b/.test(req.headers["content-type"] ?? ""))
        return refuse(res, 415, "forbidden", "a change is sent as application/json");
      let body: { action?: unknown; ids?: unknown };
      try {
        body = JSON.parse(await readBody(req));
      } catch {
        return refuse(res, 400, "usage", "the request is not JSON");
      }
      const action = body.action;
      const ids = body.ids;
      const idsOk = ids === "all" || (Array.isArray(ids) && ids.every((x) => typeof x === "string"));
      if (action !== "check" && action !== "install" && action !== "remove")
        return refuse(res, 400, "usage", "action is check, install or remove");
      if (action !== "check" && (!idsOk || (Array.isArray(ids) && ids.length === 0)))
        return refuse(res, 400, "usage", `${action} needs ids: a list of update ids, or "all"`);
      if (action === "remove" && ids === "all")
        return refuse(res, 400, "usage", "remove takes the ids of the updates to remove");
      if (running)
        return refuse(
          res,
          409,
          "busy",
          `the manager is already running ${running.action}; wait for it to finish`,
        );
      const job = start(action, action === "check" ? [] : (ids as string[] | "all"));
      return json(res, 202, { job: job.id, events: `/api/jobs/${job.id}/events` });
    }
    return refuse(res, 405, "usage", `${req.method} ${url.pathname} is not served`);
  };

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) json(res, 500, { error: problemOf(e) });
      else res.end();
    });
  };
  const server: Server = o.tls
    ? (createHttps({ cert: o.tls.cert, key: o.tls.key }, listener) as unknown as Server)
    : createHttp(listener);
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        e.code === "EADDRINUSE"
          ? new UserError(`port ${o.port} on ${host} is in use: choose another with --port`, {
              code: "usage",
            })
          : e.code === "EADDRNOTAVAIL"
            ? new UserError(`${host} is not an address of this machine`, { code: "usage" })
            : e,
      ),
    );
    server.listen(o.port ?? 0, host, () => resolve());
  });
  const a = server.address();
  const port = typeof a === "object" && a ? a.port : o.port;
  const shown = host.includes(":") ? `[${host}]` : host;
  return {
    server,
    token,
    url: `${scheme}://${shown}:${port}/?token=${token}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const j of jobs.values()) for (const l of j.listeners) l.end();
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}
