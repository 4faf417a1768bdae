// LabVM: one QEMU guest running the lab kernel, driven through the agent on its second serial
// port. Boot once, then exec commands, read and write files, read the console log; shutdown()
// always ends the qemu process. Every live VM is also killed when the host process exits, and
// the guest powers itself off when the host goes silent (agent watchdog), so no qemu outlives
// its owner.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../errors.js";
import { cacheRoot } from "../files.js";
import { type Accel, chooseAccel, PROBE_TIMEOUT_MS } from "./accel.js";
import { labRoot } from "./cache.js";
import type { SystemImage } from "./debian.js";
import { baseInitramfs, buildInitrd } from "./initramfs.js";
import { resolveModules } from "./modules.js";
import { type LabPaths, prepareLab } from "./prepare.js";
import { encodeFrame, FrameDecoder, type Reply, type Request } from "./protocol.js";

/** BootOptions tune one guest. */
export interface BootOptions {
  /** A prepared lab; default: prepareLab() with the same cacheDir/env. */
  paths?: LabPaths;
  cacheDir?: string;
  env?: NodeJS.ProcessEnv;
  /** Host paths visible at the same absolute path in the guest. */
  withPaths?: string[];
  /** Modules of the lab kernel's image to carry (with their dependencies), for modprobe in the guest. */
  modules?: string[];
  /**
   * Boot the Debian guest with systemd from this disk (lab/debian.ts) instead of the busybox
   * initramfs; withPaths and modules are then what the disk was built with.
   */
  system?: SystemImage;
  smp?: number;
  memoryMb?: number;
  /** Extra kernel command-line words (e.g. `nokaslr`). */
  append?: string;
  /**
   * A QEMU user-mode network whose only way in is host 127.0.0.1:hostPort forwarded to the
   * guest's guestPort, with restrict=on (the guest reaches nothing outside). The guest sees a
   * virtio NIC: carry the virtio_net module and bring eth0 up as 10.0.2.15/24.
   */
  forward?: { hostPort: number; guestPort: number };
  /** How long the guest may take to reach its agent; default 60 s (TCG), 20 s (KVM). */
  bootTimeoutMs?: number;
  /** `auto` (default: KVM when the cached probe says it works), `kvm` or `tcg`. */
  accel?: "auto" | Accel;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

/** ExecOptions tune one command in the guest. */
export interface ExecOptions {
  /** Kill the command (its process group) after this long and reject with `lab_timeout`; default 120 s, 0 = never. */
  timeoutMs?: number;
  cwd?: string;
  env?: Record<string, string>;
  /** Bytes for the command's stdin (closed after). */
  input?: Buffer | string;
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
}

/** ExecResult is how a guest command ended and what it printed. */
export interface ExecResult {
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
  stderrBytes: Buffer;
}

interface Pending {
  onFrame(f: Reply): void;
  fail(err: Error): void;
}

const live = new Set<LabVM>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort (test runner timeouts, uncaught errors): never leave a qemu behind.
  process.on("exit", () => {
    for (const vm of live) vm.killNow();
  });
  // `exit` does not run when a signal ends the process (kill, a benchmark stopped by hand): a
  // wedged guest's agent cannot power it off, so qemu would run on.
  for (const sig of ["SIGTERM", "SIGHUP"] as const)
    if (process.listenerCount(sig) === 0)
      process.once(sig, () => {
        for (const vm of live) vm.killNow();
        process.exit(128 + (sig === "SIGTERM" ? 15 : 1));
      });
}

/** LabVM is one running guest. Create it with LabVM.boot(). */
export class LabVM {
  readonly paths: LabPaths;
  readonly accel: Accel;
  /** Milliseconds from spawning qemu to the agent's hello. */
  bootMs = 0;
  private readonly dir: string;
  private readonly qemu: ChildProcess;
  private readonly server: Server;
  private sock: Socket | null = null;
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private exited = false;
  private exitInfo = "";
  private readonly exitWaiters: (() => void)[] = [];
  private pinger: NodeJS.Timeout | null = null;
  private hello: ((f: Reply) => void) | null = null;

  private constructor(paths: LabPaths, accel: Accel, dir: string, qemu: ChildProcess, server: Server) {
    this.paths = paths;
    this.accel = accel;
    this.dir = dir;
    this.qemu = qemu;
    this.server = server;
  }

  /** boot starts a guest and resolves once its agent answers; on failure nothing is left running. */
  static async boot(opts: BootOptions = {}): Promise<LabVM> {
    const env = opts.env ?? process.env;
    const log = opts.log ?? (() => {});
    const paths = opts.paths ?? (await prepareLab({ cacheDir: opts.cacheDir, env, log }));
    const lab = labRoot(opts.cacheDir ?? cacheRoot(env));
    const accel =
      opts.accel && opts.accel !== "auto"
        ? opts.accel
        : await chooseAccel(lab, env, log, () => probeKvm(paths, env));
    const dir = mkdtempSync(join(tmpdir(), "ksplice-lab-"));
    const watchdogSeconds = 30;
    try {
      if (!opts.system)
        buildInitrd(baseInitramfs(lab, log), join(dir, "initrd.cpio"), {
          withPaths: opts.withPaths ?? [],
          watchdogSeconds,
          modules: opts.modules?.length
            ? resolveModules(paths.modulesDir, paths.release, opts.modules)
            : undefined,
        });
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    const sockPath = join(dir, "agent.sock");
    const server = createServer();
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(sockPath, resolve));
    const args = qemuArgs({
      accel,
      kernel: paths.vmlinuz,
      initrd: opts.system?.initrd ?? join(dir, "initrd.cpio"),
      disk: opts.system?.disk,
      consoleLog: join(dir, "console.log"),
      agentSocket: sockPath,
      smp: opts.smp ?? 2,
      memoryMb: opts.memoryMb ?? 1024,
      append: opts.append ?? "",
      forward: opts.forward,
    });
    const started = Date.now();
    const qemu = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "ignore", "pipe"] });
    const vm = new LabVM(paths, accel, dir, qemu, server);
    live.add(vm);
    installExitHook();
    const bootTimeout = opts.system
      ? accel === "kvm"
        ? 60_000
        : 300_000
      : accel === "kvm"
        ? 20_000
        : 60_000;
    await vm.waitForAgent(opts.bootTimeoutMs ?? bootTimeout, opts.signal);
    vm.bootMs = Date.now() - started;
    return vm;
  }

  private async waitForAgent(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    let stderr = "";
    this.qemu.stderr?.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    this.qemu.on("exit", (code, sig) => {
      this.exited = true;
      this.exitInfo = `qemu exited (${sig ?? `status ${code}`})${stderr.trim() ? `: ${stderr.trim()}` : ""}`;
      const err = new UserError(`the lab guest is gone: ${this.exitInfo}\n${this.consoleTail()}`, {
        code: "lab_guest_died",
      });
      for (const p of this.pending.values()) p.fail(err);
      this.pending.clear();
      for (const w of this.exitWaiters.splice(0)) w();
      this.cleanup();
    });
    this.qemu.on("error", () => {});
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(
            new UserError(
              `the lab guest did not come up within ${timeoutMs / 1000} s (${this.accel}); retry, and if it persists set KSPLICE_LAB_ACCEL=tcg or delete ${join(labRoot(cacheRoot()), "accel.json")}.\n${this.consoleTail()}`,
              { code: "lab_timeout" },
            ),
          );
        }, timeoutMs);
        const onAbort = () =>
          reject(new UserError("interrupted while the lab guest was booting", { code: "interrupted" }));
        signal?.addEventListener("abort", onAbort, { once: true });
        this.exitWaiters.push(() =>
          reject(
            new UserError(
              `the lab guest stopped before its agent started: ${this.exitInfo}\n${this.consoleTail()}`,
              { code: "lab_boot" },
            ),
          ),
        );
        this.hello = () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          resolve();
        };
        this.server.once("connection", (sock) => {
          this.sock = sock;
          sock.on("data", (d: Buffer) => this.onData(d));
          sock.on("error", () => {});
        });
      });
    } catch (err) {
      await this.shutdown();
      throw err;
    }
    // Keep the guest's watchdog fed.
    this.pinger = setInterval(() => this.sendRaw({ id: 0, op: "ping" }), 5000);
    this.pinger.unref();
  }

  private onData(d: Buffer): void {
    for (const f of this.decoder.push(d) as Reply[]) {
      if ("t" in f && f.t === "hello") {
        this.hello?.(f);
        this.hello = null;
        continue;
      }
      const id = (f as { id?: number }).id;
      if (id === undefined || id === 0) continue;
      this.pending.get(id)?.onFrame(f);
    }
  }

  private sendRaw(req: Request): void {
    if (this.sock && !this.sock.destroyed) this.sock.write(encodeFrame(req));
  }

  private request(req: object, onFrame: (f: Reply) => boolean, onId?: (id: number) => void): Promise<void> {
    if (this.exited)
      return Promise.reject(
        new UserError(`the lab guest is gone: ${this.exitInfo}`, { code: "lab_guest_died" }),
      );
    const id = this.nextId++;
    onId?.(id);
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, {
        onFrame: (f) => {
          try {
            if (onFrame(f)) {
              this.pending.delete(id);
              resolve();
            }
          } catch (err) {
            this.pending.delete(id);
            reject(err);
          }
        },
        fail: reject,
      });
      this.sendRaw({ ...req, id } as Request);
    });
  }

  /** exec runs a command in the guest as root; a string runs under `sh -c`. */
  async exec(cmd: string | string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const argv = typeof cmd === "string" ? ["sh", "-c", cmd] : cmd;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let result: { code: number; signal: string | null } = { code: -1, signal: null };
    let execId = 0;
    const timeoutMs = opts.timeoutMs ?? 120_000;
    let timedOut = false;
    let snapshot = "";
    const timer =
      timeoutMs > 0
        ? setTimeout(async () => {
            timedOut = true;
            // What the guest was doing while the command hung, taken before it is killed.
            snapshot = await this.snapshot();
            if (execId) this.sendRaw({ id: this.nextId++, op: "kill", target: execId });
          }, timeoutMs)
        : undefined;
    try {
      await this.request(
        {
          op: "exec",
          argv,
          cwd: opts.cwd,
          env: opts.env,
          stdin: opts.input === undefined ? undefined : Buffer.from(opts.input).toString("base64"),
        },
        (f) => {
          if (f.t === "out" || f.t === "err") {
            const b = Buffer.from(f.d, "base64");
            (f.t === "out" ? out : err).push(b);
            (f.t === "out" ? opts.onStdout : opts.onStderr)?.(b);
            return false;
          }
          if (f.t === "exit") {
            result = { code: f.code, signal: f.signal };
            return true;
          }
          if (f.t === "error") throw new Error(`guest agent: ${f.message}`);
          return false;
        },
        (id) => {
          execId = id;
        },
      );
    } finally {
      clearTimeout(timer);
    }
    const stdoutBytes = Buffer.concat(out);
    const stderrBytes = Buffer.concat(err);
    if (timedOut) {
      throw new UserError(
        `'${argv.join(" ")}' did not finish within ${timeoutMs / 1000} s in the lab guest and was killed; output so far:\n${stdoutBytes.toString().slice(-2000)}${stderrBytes.toString().slice(-2000)}\n${snapshot}`,
        { code: "lab_timeout" },
      );
    }
    return {
      ...result,
      stdout: stdoutBytes.toString(),
      stderr: stderrBytes.toString(),
      stdoutBytes,
      stderrBytes,
    };
  }

  /**
   * snapshot describes the guest's processes (state and kernel stack of each) and the tail of
   * its kernel log, for reporting a command that hung. Never throws.
   */
  async snapshot(): Promise<string> {
    const script = `for p in /proc/[0-9]*; do
  [ -r $p/stat ] || continue
  set -- $(cat $p/stat 2>/dev/null); [ -n "$3" ] || continue
  [ "$(cat $p/cmdline 2>/dev/null | wc -c)" -gt 0 ] || [ "$3" = D ] || continue
  echo "== \${p#/proc/} $3 $(tr '\\0' ' ' < $p/cmdline 2>/dev/null)"
  sed 's/^/   /' $p/stack 2>/dev/null
done
echo "== modules: $(cut -d' ' -f1,3,5 /proc/modules | tr '\\n' ';')"
echo "== dmesg (tail)"; dmesg | tail -40`;
    try {
      const r = await this.exec(["sh", "-c", script], { timeoutMs: 60_000 });
      return `guest snapshot:\n${r.stdout}${r.stderr}`;
    } catch (e) {
      return `guest snapshot failed: ${(e as Error).message.split("\n")[0]}`;
    }
  }

  /** readFile returns a guest file's bytes (rejects with code `lab_guest_file` when it cannot be read). */
  async readFile(path: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    await this.request({ op: "read", path }, (f) => {
      if (f.t === "data") parts.push(Buffer.from(f.d, "base64"));
      else if (f.t === "error")
        throw new UserError(`reading ${path} in the lab guest: ${f.message}`, { code: "lab_guest_file" });
      return f.t === "done";
    });
    return Buffer.concat(parts);
  }

  /** writeFile creates or replaces a guest file (parents created). */
  async writeFile(path: string, data: Buffer | string, mode = 0o644): Promise<void> {
    await this.request({ op: "write", path, data: Buffer.from(data).toString("base64"), mode }, (f) => {
      if (f.t === "error")
        throw new UserError(`writing ${path} in the lab guest: ${f.message}`, { code: "lab_guest_file" });
      return f.t === "done";
    });
  }

  /** console returns the kernel console log (ttyS0) so far. */
  console(): string {
    try {
      return readFileSync(join(this.dir, "console.log"), "latin1");
    } catch {
      return this.consoleText;
    }
  }

  private consoleText = "";

  private consoleTail(lines = 25): string {
    const text = this.console().trimEnd().split("\n").slice(-lines).join("\n");
    return text ? `last console lines:\n${text}` : "the console printed nothing";
  }

  /**
   * stopped resolves when qemu has ended (a guest that reboots ends it: -no-reboot), and rejects
   * with `lab_timeout` after timeoutMs.
   */
  async stopped(timeoutMs = 120_000): Promise<void> {
    if (this.exited) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new UserError(`the lab guest did not stop within ${timeoutMs / 1000} s\n${this.consoleTail()}`, {
              code: "lab_timeout",
            }),
          ),
        timeoutMs,
      );
      this.exitWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** pid is the qemu process id. */
  get pid(): number | undefined {
    return this.qemu.pid;
  }

  /** running says whether qemu is still alive. */
  get running(): boolean {
    return !this.exited;
  }

  /** shutdown powers the guest off (kills qemu after 3 s) and removes the run's files. Idempotent. */
  async shutdown(): Promise<void> {
    if (!this.exited) {
      const gone = new Promise<void>((resolve) => this.exitWaiters.push(resolve));
      this.sendRaw({ id: this.nextId++, op: "poweroff" });
      const kill = setTimeout(() => this.qemu.kill("SIGKILL"), 3000);
      await gone;
      clearTimeout(kill);
    }
    this.cleanup();
  }

  /** killNow ends qemu at once (synchronous; for exit hooks). */
  killNow(): void {
    if (!this.exited) this.qemu.kill("SIGKILL");
    this.cleanup();
  }

  private cleanup(): void {
    if (this.pinger) clearInterval(this.pinger);
    this.pinger = null;
    if (!live.has(this)) return;
    live.delete(this);
    this.consoleText = (() => {
      try {
        return readFileSync(join(this.dir, "console.log"), "latin1");
      } catch {
        return "";
      }
    })();
    this.sock?.destroy();
    this.server.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** QemuSpec is what qemuArgs needs. */
export interface QemuSpec {
  accel: Accel;
  kernel: string;
  initrd: string;
  /** A raw disk image, as /dev/vda (the Debian guest). */
  disk?: string;
  consoleLog: string;
  agentSocket: string;
  smp: number;
  memoryMb: number;
  append: string;
  /** Host 127.0.0.1:hostPort forwarded to the guest's guestPort, on a restricted user network. */
  forward?: { hostPort: number; guestPort: number };
}

/**
 * qemuArgs is the qemu-system-x86_64 command line of a lab guest. Under TCG the CPU model is
 * `max` unless KSPLICE_LAB_CPU names another (for experiments, e.g. `max,avx=off`).
 */
export function qemuArgs(s: QemuSpec): string[] {
  const cpu =
    s.accel === "kvm"
      ? ["-accel", "kvm", "-cpu", "host"]
      : ["-accel", "tcg", "-cpu", process.env.KSPLICE_LAB_CPU ?? "max"];
  return [
    ...["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
    ...cpu,
    ...["-smp", String(s.smp), "-m", String(s.memoryMb)],
    ...["-kernel", s.kernel, "-initrd", s.initrd],
    ...(s.disk ? ["-drive", `file=${s.disk},if=virtio,format=raw,cache=unsafe`] : []),
    ...(s.forward
      ? [
          ...[
            "-netdev",
            `user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:${s.forward.hostPort}-:${s.forward.guestPort}`,
          ],
          ...["-device", "virtio-net-pci,netdev=net0"],
        ]
      : []),
    // loglevel=6 keeps notices (the kernel banner), warnings and oopses on the console but not the
    // boot chatter of pr_info;
    // tsc=reliable skips the clocksource watchdog, which TCG's jittery clock keeps tripping.
    ...["-append", `console=ttyS0 panic=-1 rdinit=/init loglevel=6 tsc=reliable ${s.append}`.trim()],
    ...["-serial", `file:${s.consoleLog}`],
    ...["-chardev", `socket,id=agent,path=${s.agentSocket}`, "-serial", "chardev:agent"],
  ];
}

/** withLab boots a guest, runs fn with it and always shuts it down. */
export async function withLab<T>(fn: (vm: LabVM) => Promise<T>, opts: BootOptions = {}): Promise<T> {
  const vm = await LabVM.boot(opts);
  try {
    return await fn(vm);
  } finally {
    await vm.shutdown();
  }
}

/** probeKvm boots a guest under KVM and says whether it reached its agent in time. */
async function probeKvm(paths: LabPaths, env: NodeJS.ProcessEnv): Promise<{ ok: boolean; detail: string }> {
  try {
    const vm = await LabVM.boot({ paths, accel: "kvm", bootTimeoutMs: PROBE_TIMEOUT_MS, env });
    const res = await vm.exec(["true"], { timeoutMs: PROBE_TIMEOUT_MS });
    await vm.shutdown();
    return { ok: res.code === 0, detail: `KVM guest reached its agent in ${vm.bootMs} ms` };
  } catch (err) {
    return { ok: false, detail: `KVM guest failed: ${(err as Error).message.split("\n")[0]}` };
  }
}
