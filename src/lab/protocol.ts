// The host side of the framed protocol spoken with the guest agent (guest/agent.ts) over the
// guest's second serial port. A frame is one line of JSON; byte payloads travel as base64 so the
// line is pure ASCII and survives any tty setting. Lines that do not parse as a JSON object
// (noise on the line before the agent starts) are skipped, never fatal.

/** Request is a frame from host to guest. */
export type Request =
  | { id: number; op: "exec"; argv: string[]; cwd?: string; env?: Record<string, string>; stdin?: string }
  | { id: number; op: "kill"; target: number }
  | { id: number; op: "read"; path: string }
  | { id: number; op: "write"; path: string; data: string; mode?: number }
  | { id: number; op: "ping" }
  | { id: number; op: "poweroff" };

/** Reply is a frame from guest to host. */
export type Reply =
  | { t: "hello"; uptime: number }
  | { id: number; t: "out" | "err" | "data"; d: string }
  | { id: number; t: "exit"; code: number; signal: string | null }
  | { id: number; t: "done" }
  | { id: number; t: "error"; message: string; code?: string };

/** encodeFrame turns a frame into its line on the wire. */
export function encodeFrame(frame: object): Buffer {
  // Escape everything outside ASCII so both ends can split and decode lines byte-wise.
  const json = JSON.stringify(frame).replace(
    /[\u0080-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return Buffer.from(`${json}\n`, "latin1");
}

/** FrameDecoder splits a byte stream into frames, keeping a partial line between chunks. */
export class FrameDecoder {
  private partial = "";
  /** Lines that were not frames (kept for diagnostics, bounded). */
  readonly noise: string[] = [];

  /** push feeds bytes and returns the complete frames they finish. */
  push(chunk: Buffer | string): object[] {
    this.partial += typeof chunk === "string" ? chunk : chunk.toString("latin1");
    const lines = this.partial.split("\n");
    this.partial = lines.pop() ?? "";
    const frames: object[] = [];
    for (const raw of lines) {
      const line = raw.replace(/\r$/, "");
      if (!line) continue;
      const start = line.indexOf("{");
      let value: unknown;
      try {
        value = start >= 0 ? JSON.parse(line.slice(start)) : undefined;
      } catch {
        value = undefined;
      }
      if (value && typeof value === "object" && !Array.isArray(value)) frames.push(value);
      else if (this.noise.length < 100) this.noise.push(line);
    }
    return frames;
  }
}
