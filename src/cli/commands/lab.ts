// `ksplice lab`: the QEMU lab on Debian's binary cloud kernel. `prepare` fills the cache (its last
// stdout line is the prepared source tree); `run` boots a guest, runs one command as root in it
// and exits with that command's status. The work is in src/lab.
import { parseArgs } from "node:util";
import { UsageError } from "../../errors.js";
import { prepareLab } from "../../lab/prepare.js";
import { LabVM } from "../../lab/vm.js";
import { type Command, type Context, println } from "../context.js";

const usage = `usage: ksplice lab prepare [--json] [--refresh] [--kernel-version ABI:VERSION]
       ksplice lab run [--with PATH]... [--module NAME]... [--smp N] [--memory MB] [--append ARGS]
                       [--timeout SEC] -- CMD [ARG...]

prepare  install the lab's Debian packages, download Debian's cloud kernel (image, headers, source),
         unpack it and prepare the source tree with the image's config and gcc-12; cached under
         $KSPLICE_CACHE (default ~/.cache/ksplice). The last line printed is the source tree.
           --json             print the prepared paths as JSON instead
           --refresh          ask the package registry again even when the cache is complete
           --kernel-version   prefer another kernel, e.g. 6.1.0-50:6.1.176-1 (the default)
run      boot the lab kernel under QEMU and run CMD as root in it; exits with CMD's status.
           --with PATH        make a host file or directory visible at the same path (repeatable)
           --module NAME      carry the image's module NAME and what it depends on, for modprobe
                              in the guest (repeatable)
           --smp N            virtual CPUs (default 2)
           --memory MB        guest memory (default 1024)
           --append ARGS      extra kernel command-line words (e.g. nokaslr)
           --timeout SEC      kill CMD after SEC seconds (default: no limit)
Environment: KSPLICE_CACHE (cache directory), KSPLICE_LAB_ACCEL=kvm|tcg (skip the KVM probe).`;

function progressPrinter(ctx: Context): (step: string, fraction: number) => void {
  const tty = (ctx.stderr as { isTTY?: boolean }).isTTY === true;
  const shown = new Map<string, number>();
  return (step, fraction) => {
    const pct = Math.floor(fraction * 100);
    if (tty) {
      ctx.stderr.write(`\rlab: ${step} ${pct}%${pct >= 100 ? "\n" : ""}`);
      return;
    }
    // Not a terminal (CI logs): one line per quarter.
    const quarter = Math.floor(pct / 25);
    if ((shown.get(step) ?? -1) < quarter) {
      shown.set(step, quarter);
      println(ctx.stderr, `lab: ${step} ${quarter * 25}%`);
    }
  };
}

async function prepare(args: string[], ctx: Context): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      json: { type: "boolean" },
      refresh: { type: "boolean" },
      "kernel-version": { type: "string" },
    },
    allowPositionals: true,
  });
  if (positionals.length) throw new UsageError(`lab prepare takes no arguments (got '${positionals[0]}')`);
  let kernel: { abi: string; version: string } | undefined;
  if (values["kernel-version"]) {
    const m = /^(\d+\.\d+\.\d+-\d+):(\S+)$/.exec(values["kernel-version"]);
    if (!m)
      throw new UsageError(
        `--kernel-version wants ABI:VERSION, e.g. 6.1.0-50:6.1.176-1 (got '${values["kernel-version"]}')`,
      );
    kernel = { abi: m[1], version: m[2] };
  }
  const paths = await prepareLab({
    env: ctx.env,
    kernel,
    refresh: values.refresh,
    signal: ctx.signal,
    log: (l) => println(ctx.stderr, `lab: ${l}`),
    progress: progressPrinter(ctx),
  });
  if (values.json) println(ctx.stdout, JSON.stringify(paths, null, 2));
  else {
    println(
      ctx.stdout,
      `kernel ${paths.release} (Debian ${paths.debianVersion}${paths.pinned ? "" : ", not the pinned version"})`,
    );
    println(ctx.stdout, `headers ${paths.headersDir}`);
    println(ctx.stdout, `vmlinux ${paths.vmlinux}`);
    println(ctx.stdout, paths.sourceDir);
  }
  return 0;
}

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0)
    throw new UsageError(`--${name} wants a positive whole number (got '${v}')`);
  return n;
}

async function run(args: string[], ctx: Context): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      with: { type: "string", multiple: true },
      module: { type: "string", multiple: true },
      smp: { type: "string" },
      memory: { type: "string" },
      append: { type: "string" },
      timeout: { type: "string" },
    },
    allowPositionals: true,
  });
  if (positionals.length === 0)
    throw new UsageError("lab run needs a command: ksplice lab run [options] -- CMD [ARG...]");
  const timeout = positiveInt("timeout", values.timeout);
  const vm = await LabVM.boot({
    env: ctx.env,
    withPaths: (values.with ?? []).map((p) => (p.startsWith("/") ? p : `${ctx.cwd}/${p}`)),
    modules: values.module,
    smp: positiveInt("smp", values.smp),
    memoryMb: positiveInt("memory", values.memory),
    append: values.append,
    signal: ctx.signal,
    log: (l) => println(ctx.stderr, `lab: ${l}`),
  });
  const onAbort = () => void vm.shutdown();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  try {
    const res = await vm.exec(positionals, {
      timeoutMs: timeout === undefined ? 0 : timeout * 1000,
      onStdout: (b) => ctx.stdout.write(b),
      onStderr: (b) => ctx.stderr.write(b),
    });
    if (res.signal) return 128 + (signalNumbers[res.signal] ?? 1);
    return res.code;
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
    await vm.shutdown();
  }
}

const signalNumbers: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGTERM: 15,
};

/** The `lab` verb. */
export const labCommand: Command = {
  name: "lab",
  usage,
  async run(args, ctx) {
    const [sub, ...rest] = args;
    if (sub === "prepare") return prepare(rest, ctx);
    if (sub === "run") return run(rest, ctx);
    throw new UsageError(
      sub ? `unknown lab subcommand '${sub}' (prepare or run)` : "lab needs a subcommand: prepare or run",
    );
  },
};
