// Process entry: wires the real process into a Context and exits with main's code.
import { fileURLToPath } from "node:url";
import { main } from "./main.js";

const controller = new AbortController();
let interrupted = false;
process.on("SIGINT", () => {
  // First Ctrl-C asks commands to clean up; a second one exits at once.
  if (interrupted) process.exit(130);
  interrupted = true;
  controller.abort(new Error("interrupted"));
});
process.on("SIGTERM", () => controller.abort(new Error("terminated")));
// `ksplice view | head`: a reader that went away is not an error of ours.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code !== "EPIPE") throw e;
});

const code = await main(
  process.argv.slice(2),
  {
    cwd: process.cwd(),
    env: process.env,
    stdout: process.stdout,
    stderr: process.stderr,
    signal: controller.signal,
    self: [process.execPath, fileURLToPath(import.meta.url)],
  },
  process.argv[1],
);
process.exitCode = interrupted && code === 0 ? 130 : code;
