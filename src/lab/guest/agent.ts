// The lab's guest agent: runs as a child of /init inside the QEMU guest and serves the host over
// the second serial port (/dev/ttyS1, put in raw mode by /init), one JSON frame per line (see
// ../protocol.ts). It must import nothing but Node's builtins: it is copied alone into the
// guest's initramfs. Given no device it serves stdin/stdout, which is how the unit tests run it.
//
// It powers the guest off (by exiting; /init then calls poweroff) when the host goes silent for
// longer than the watchdog period, so a host that died without shutting its VM down does not
// leave a qemu process spinning forever.
import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { Readable } from "node:stream";

type Frame = Record<string, unknown> & { id?: number; op?: string };

const device = process.argv[2];
const watchdogMs = Number(process.argv[3] ?? 0);
const outFd = device ? openSync(device, "r+") : 1;
const input: Readable = device ? Readable.from(readForever(outFd)) : process.stdin;

// A tty read through a ReadStream can end early on EIO; read it by hand in the thread pool.
async function* readForever(fd: number): AsyncGenerator<Buffer> {
  const { read } = await import("node:fs");
  for (;;) {
    const buf = Buffer.alloc(65536);
    const n = await new Promise<number>((resolve, reject) =>
      read(fd, buf, 0, buf.length, null, (err, got) => (err ? reject(err) : resolve(got))),
    );
    if (n === 0 && !device) return;
    if (n > 0) yield buf.subarray(0, n);
  }
}

function send(frame: object): void {
  const json = JSON.stringify(frame).replace(
    /[\u0080-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  const buf = Buffer.from(`${json}\n`, "latin1");
  let done = 0;
  while (done < buf.length) {
    try {
      done += writeSync(outFd, buf, done, buf.length - done);
    } catch (err) {
      // A tty may refuse a write while its output buffer is full: wait and retry.
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
    }
  }
}

const CHUNK = 48 * 1024;
const running = new Map<number, number>();

function exec(f: Frame): void {
  const id = f.id as number;
  const argv = f.argv as string[];
  const env = {
    PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    HOME: "/root",
    TERM: "dumb",
    ...((f.env as Record<string, string>) ?? {}),
  };
  const child = spawn(argv[0], argv.slice(1), {
    cwd: (f.cwd as string) ?? "/",
    env,
    detached: true,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let failed = false;
  child.on("error", (err) => {
    failed = true;
    send({ id, t: "err", d: Buffer.from(`${argv[0]}: ${err.message}\n`).toString("base64") });
    send({ id, t: "exit", code: 127, signal: null });
  });
  if (child.pid) running.set(id, child.pid);
  child.stdin.on("error", () => {});
  child.stdin.end(typeof f.stdin === "string" ? Buffer.from(f.stdin, "base64") : undefined);
  child.stdout.on("data", (d: Buffer) => send({ id, t: "out", d: d.toString("base64") }));
  child.stderr.on("data", (d: Buffer) => send({ id, t: "err", d: d.toString("base64") }));
  child.on("close", (code, signal) => {
    running.delete(id);
    if (!failed) send({ id, t: "exit", code: code ?? 128, signal });
  });
}

function handle(f: Frame): void {
  const id = f.id as number;
  try {
    switch (f.op) {
      case "exec":
        exec(f);
        return;
      case "kill": {
        const pid = running.get(f.target as number);
        // The whole process group: a shell's children die with it.
        if (pid) process.kill(-pid, "SIGKILL");
        send({ id, t: "done" });
        return;
      }
      case "read": {
        const data = readFileSync(f.path as string);
        for (let at = 0; at < data.length; at += CHUNK)
          send({ id, t: "data", d: data.subarray(at, at + CHUNK).toString("base64") });
        send({ id, t: "done" });
        return;
      }
      case "write": {
        mkdirSync(dirname(f.path as string), { recursive: true });
        writeFileSync(f.path as string, Buffer.from(f.data as string, "base64"), {
          mode: (f.mode as number) ?? 0o644,
        });
        send({ id, t: "done" });
        return;
      }
      case "ping":
        send({ id, t: "done" });
        return;
      case "poweroff":
        send({ id, t: "done" });
        if (device) closeSync(outFd);
        process.exit(0);
        return;
      default:
        send({ id, t: "error", message: `unknown op ${String(f.op)}` });
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    send({ id, t: "error", message: e.message, code: e.code });
  }
}

let lastHeard = Date.now();
let lastTick = Date.now();
if (watchdogMs > 0) {
  setInterval(() => {
    // A tick that comes late means this process was starved (a loaded guest, stop_machine),
    // not that the host went quiet: pings may be waiting unread, so start counting again.
    const now = Date.now();
    if (now - lastTick > 5000) lastHeard = now;
    lastTick = now;
    if (now - lastHeard > watchdogMs) {
      process.stderr.write(`ksplice-agent: host silent for ${watchdogMs} ms; powering off\n`);
      process.exit(3);
    }
  }, 1000).unref();
}

const uptime = Number(readFileSafe("/proc/uptime").split(" ")[0]) || 0;
send({ t: "hello", uptime });

function readFileSafe(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

let partial = "";
input.on("data", (chunk: Buffer) => {
  lastHeard = Date.now();
  partial += chunk.toString("latin1");
  const lines = partial.split("\n");
  partial = lines.pop() ?? "";
  for (const line of lines) {
    const start = line.indexOf("{");
    if (start < 0) continue;
    let f: Frame;
    try {
      f = JSON.parse(line.slice(start)) as Frame;
    } catch {
      continue;
    }
    handle(f);
  }
});
input.on("end", () => process.exit(0));
