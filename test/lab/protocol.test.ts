// The agent protocol: framing on the host, and the real guest agent served over stdin/stdout
// (its mode without a serial device), so exec, exit codes, binary output, kill and files are
// checked without booting anything.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { encodeFrame, FrameDecoder, type Reply } from "../../src/lab/protocol.js";
import { tempDir } from "../helpers/compile.js";

test("FrameDecoder joins frames split across chunks and skips noise", () => {
  const d = new FrameDecoder();
  const wire = Buffer.concat([
    Buffer.from("garbage\r\n"),
    encodeFrame({ id: 1, t: "done" }),
    encodeFrame({ id: 2, t: "out", d: "AA==" }),
  ]);
  const frames: object[] = [];
  for (let i = 0; i < wire.length; i += 7) frames.push(...d.push(wire.subarray(i, i + 7)));
  assert.deepEqual(frames, [
    { id: 1, t: "done" },
    { id: 2, t: "out", d: "AA==" },
  ]);
  assert.deepEqual(d.noise, ["garbage"]);
});

test("encodeFrame keeps the wire ASCII and round-trips non-ASCII text", () => {
  const frame = { id: 3, op: "read", path: "/tmp/ünïcode-✓" };
  const wire = encodeFrame(frame);
  assert.ok(wire.every((b) => b < 0x80));
  assert.deepEqual(new FrameDecoder().push(wire), [frame]);
});

const agentJs = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "src", "lab", "guest", "agent.js");

/** A host-side client of the agent over a child process's stdio. */
function startAgent() {
  const child = spawn(process.execPath, [agentJs], { stdio: ["pipe", "pipe", "inherit"] });
  const decoder = new FrameDecoder();
  const frames: Reply[] = [];
  const waiters: (() => void)[] = [];
  child.stdout.on("data", (d: Buffer) => {
    frames.push(...(decoder.push(d) as Reply[]));
    for (const w of waiters.splice(0)) w();
  });
  let next = 1;
  const until = async (pred: (f: Reply) => boolean): Promise<Reply[]> => {
    for (;;) {
      if (frames.some(pred)) return frames.splice(0);
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  return {
    child,
    until,
    send(req: object): number {
      const id = next++;
      child.stdin.write(encodeFrame({ ...req, id }));
      return id;
    },
  };
}

const dataOf = (frames: Reply[], id: number, t: string) =>
  Buffer.concat(
    frames
      .filter((f) => "id" in f && f.id === id && f.t === t)
      .map((f) => Buffer.from((f as { d: string }).d, "base64")),
  );

test("the agent says hello, runs commands with binary output and returns exit codes", async () => {
  const a = startAgent();
  try {
    await a.until((f) => "t" in f && f.t === "hello");
    const id = a.send({ op: "exec", argv: ["sh", "-c", "printf '\\000\\377ok'; echo err >&2; exit 42"] });
    const frames = await a.until((f) => "id" in f && f.id === id && f.t === "exit");
    assert.deepEqual(dataOf(frames, id, "out"), Buffer.from([0, 255, 0x6f, 0x6b]));
    assert.equal(dataOf(frames, id, "err").toString(), "err\n");
    assert.deepEqual(frames.at(-1), { id, t: "exit", code: 42, signal: null });
    const stdin = a.send({ op: "exec", argv: ["cat"], stdin: Buffer.from("fed").toString("base64") });
    const catFrames = await a.until((f) => "id" in f && f.id === stdin && f.t === "exit");
    assert.equal(dataOf(catFrames, stdin, "out").toString(), "fed");
    const missing = a.send({ op: "exec", argv: ["/no/such/program"] });
    const mf = await a.until((f) => "id" in f && f.id === missing && f.t === "exit");
    assert.equal((mf.at(-1) as { code: number }).code, 127);
  } finally {
    a.child.kill();
  }
});

test("the agent kills a command's whole process group on request", async () => {
  const a = startAgent();
  try {
    await a.until((f) => "t" in f && f.t === "hello");
    const id = a.send({ op: "exec", argv: ["sh", "-c", "sleep 60 | cat"] });
    await new Promise((r) => setTimeout(r, 200));
    a.send({ op: "kill", target: id });
    const frames = await a.until((f) => "id" in f && f.id === id && f.t === "exit");
    assert.equal(
      (frames.find((f) => "id" in f && f.id === id && f.t === "exit") as { signal: string }).signal,
      "SIGKILL",
    );
  } finally {
    a.child.kill();
  }
});

test("the agent reads and writes files, and reports errors by errno code", async () => {
  const dir = tempDir();
  const big = Buffer.alloc(200_000, 0xab);
  writeFileSync(join(dir, "big"), big);
  const a = startAgent();
  try {
    await a.until((f) => "t" in f && f.t === "hello");
    const r = a.send({ op: "read", path: join(dir, "big") });
    const rf = await a.until((f) => "id" in f && f.id === r && f.t === "done");
    assert.deepEqual(dataOf(rf, r, "data"), big);
    const w = a.send({
      op: "write",
      path: join(dir, "new", "f"),
      data: Buffer.from("written").toString("base64"),
    });
    await a.until((f) => "id" in f && f.id === w && f.t === "done");
    assert.equal(readFileSync(join(dir, "new", "f"), "utf8"), "written");
    const e = a.send({ op: "read", path: join(dir, "absent") });
    const ef = await a.until((f) => "id" in f && f.id === e);
    assert.equal((ef.find((f) => "id" in f && f.id === e) as { code: string }).code, "ENOENT");
  } finally {
    a.child.kill();
  }
});
