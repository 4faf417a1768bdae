// A plain static file server for a stream directory (node:http), for self-hosting and tests:
// GET and HEAD of files under the directory, nothing else. Any HTTP server or CDN serving the
// same directory works the same for clients.
import { createReadStream, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join, normalize, sep } from "node:path";

/** serveStream serves dir on host:port; resolves once listening, with the server and its URL. */
export function serveStream(
  dir: string,
  opts: { host?: string; port?: number; log?: (line: string) => void } = {},
): Promise<{ server: Server; url: string }> {
  const root = normalize(dir);
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    const file = normalize(join(root, path));
    const done = (status: number) => opts.log?.(`${req.method} ${path} ${status}`);
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return done(405);
    }
    let size: number;
    try {
      if (!file.startsWith(root + sep)) throw new Error("outside");
      const st = statSync(file);
      if (!st.isFile()) throw new Error("not a file");
      size = st.size;
    } catch {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return done(404);
    }
    const type = file.endsWith(".json") ? "application/json" : "application/octet-stream";
    res.writeHead(200, { "content-type": type, "content-length": size, "cache-control": "no-cache" });
    if (req.method === "HEAD") res.end();
    else createReadStream(file).pipe(res);
    done(200);
  });
  const host = opts.host ?? "127.0.0.1";
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 8080, host, () => {
      const a = server.address();
      const port = typeof a === "object" && a ? a.port : opts.port;
      resolve({ server, url: `http://${host.includes(":") ? `[${host}]` : host}:${port}` });
    });
  });
}
