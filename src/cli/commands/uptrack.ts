// Uptrack's verbs, the client of an update stream (src/uptrack): `ksplice upgrade|install|
// remove|show|uname|boot`, also reachable as uptrack-upgrade, uptrack-install, uptrack-remove,
// uptrack-show and uptrack-uname.
import { createInterface } from "node:readline/promises";
import { parseArgs } from "node:util";
import { UsageError } from "../../errors.js";
import { boot, install, remove, type ShowResult, show, uname, upgrade } from "../../uptrack/index.js";
import { availableMessage, planMessage, type Step } from "../../uptrack/plan.js";
import { type Command, type Context, println, progress } from "../context.js";

const CONFIG_HELP = `The stream is set in /etc/ksplice/uptrack.conf ([Network] update_repo_url, https_proxy;
[Settings] channel, autoinstall, install_on_reboot) and trusted through its root metadata,
/etc/ksplice/root.json. The log is /var/log/ksplice.log.`;

const helperOf = (ctx: Context) => (ctx.self ? [...ctx.self, "module-coming"] : undefined);

function printPlan(ctx: Context, steps: Step[], done: boolean): void {
  println(ctx.stdout, planMessage(steps, done));
}

/** `upgrade [-y|-n]`: install every update of the stream for this kernel. */
export const upgradeCommand: Command = {
  name: "upgrade",
  usage: `usage: ksplice upgrade [-y | -n | --auto] [--json]   (also uptrack-upgrade)

Checks the stream, then installs every update for the running kernel that is not applied, in
order. -y installs without asking; -n only says what would be installed. Without either, it
asks on a terminal and only says otherwise. --auto (ksplice-upgrade.timer) installs when the
configuration says autoinstall = yes, and only checks otherwise. A failure undoes what the
command had installed.
${CONFIG_HELP}`,
  async run(args, ctx) {
    const { values } = parseArgs({
      args,
      options: {
        y: { type: "boolean", short: "y" },
        n: { type: "boolean", short: "n" },
        auto: { type: "boolean" },
        json: { type: "boolean" },
      },
    });
    if ([values.y, values.n, values.auto].filter(Boolean).length > 1)
      throw new UsageError("upgrade takes one of -y, -n and --auto");
    const log = progress(ctx, "upgrade");
    if (values.auto) {
      const res = await upgrade({ log, helper: helperOf(ctx), auto: true });
      if (values.json) println(ctx.stdout, JSON.stringify({ schemaVersion: 1, ...res }, null, 2));
      else printPlan(ctx, res.plan, res.done);
      return 0;
    }
    let yes = values.y === true;
    if (!yes && !values.n) {
      const peek = await upgrade({ log, helper: helperOf(ctx), dryRun: true });
      if (!peek.plan.length || !(ctx.stdout as { isTTY?: boolean }).isTTY || values.json) {
        printPlan(ctx, peek.plan, false);
        if (peek.plan.length) println(ctx.stdout, "Run with -y to install them.");
        return 0;
      }
      printPlan(ctx, peek.plan, false);
      const rl = createInterface({ input: process.stdin, output: ctx.stdout });
      yes = /^y(es)?$/i.test((await rl.question("Go ahead [y/N]? ")).trim());
      rl.close();
      if (!yes) return 0;
    }
    const res = await upgrade({ log, helper: helperOf(ctx), dryRun: !yes });
    if (values.json) println(ctx.stdout, JSON.stringify({ schemaVersion: 1, ...res }, null, 2));
    else printPlan(ctx, res.plan, res.done);
    return 0;
  },
};

/** `install ID...`. */
export const installCommand: Command = {
  name: "install",
  usage: `usage: ksplice install ID... [-n] [--json]   (also uptrack-install)

Installs the given updates of the stream, and the ones they stack on first. -n only says what
would be installed. ${CONFIG_HELP}`,
  async run(args, ctx) {
    const { values, positionals } = parseArgs({
      args,
      options: {
        n: { type: "boolean", short: "n" },
        y: { type: "boolean", short: "y" },
        json: { type: "boolean" },
      },
      allowPositionals: true,
    });
    if (!positionals.length) throw new UsageError("install needs at least one update ID");
    const res = await install({
      ids: positionals,
      log: progress(ctx, "install"),
      helper: helperOf(ctx),
      dryRun: values.n,
    });
    if (values.json) println(ctx.stdout, JSON.stringify({ schemaVersion: 1, ...res }, null, 2));
    else printPlan(ctx, res.plan, res.done);
    return 0;
  },
};

/** `remove ID...|--all`. */
export const removeCommand: Command = {
  name: "remove",
  usage: `usage: ksplice remove ID... | --all [-n] [--json]   (also uptrack-remove)

Removes the given updates installed from the stream (or all of them), and first every update
that stacks on them, newest first. Needs no network. -n only says what would be removed.`,
  async run(args, ctx) {
    const { values, positionals } = parseArgs({
      args,
      options: {
        all: { type: "boolean" },
        n: { type: "boolean", short: "n" },
        y: { type: "boolean", short: "y" },
        json: { type: "boolean" },
      },
      allowPositionals: true,
    });
    if (values.all === positionals.length > 0) throw new UsageError("remove takes update IDs, or --all");
    const res = await remove({
      ids: values.all ? "all" : positionals,
      log: progress(ctx, "remove"),
      dryRun: values.n,
    });
    if (values.json) println(ctx.stdout, JSON.stringify({ schemaVersion: 1, ...res }, null, 2));
    else printPlan(ctx, res.plan, res.done);
    return 0;
  },
};

/** Exit codes of `show --check`, for monitoring. */
export const CHECK_CODES = { up_to_date: 0, updates_available: 3, unsupported_kernel: 4 } as const;

function showJson(r: ShowResult) {
  return {
    schemaVersion: 1,
    kernel: r.kernel,
    effectiveVersion: r.effective,
    state: r.state,
    installed: r.installed.map((u) => ({
      id: u.id,
      name: u.name,
      cves: u.cves,
      effective: u.effective,
      stacksOn: u.stacksOn,
    })),
    othersApplied: r.others,
    available:
      r.available?.map((u) => ({ id: u.id, name: u.name, cves: u.cves, stacksOn: u.stacksOn })) ?? null,
    lastCheck: r.status.lastCheck ?? null,
    lastError: r.status.lastError ?? null,
    bootReapplyFailed: r.status.bootReapplyFailed ?? false,
  };
}

/** `show [--available] [--json] [--check]`. */
export const showCommand: Command = {
  name: "show",
  usage: `usage: ksplice show [--available] [--json] [--check]   (also uptrack-show)

Lists the updates installed from the stream, with their CVEs, and the effective kernel version.
--available  also check the stream and list the updates not installed yet
--json       the same as JSON: {schemaVersion, kernel, effectiveVersion, state, installed,
             othersApplied, available, lastCheck, lastError, bootReapplyFailed}
--check      check the stream and exit with the state, for monitoring: 0 up to date,
             3 updates available, 4 the stream has no updates for this kernel, 1 error`,
  async run(args, ctx) {
    const { values } = parseArgs({
      args,
      options: { available: { type: "boolean" }, json: { type: "boolean" }, check: { type: "boolean" } },
    });
    const r = await show({ log: progress(ctx, "show"), available: values.available || values.check });
    if (values.json) println(ctx.stdout, JSON.stringify(showJson(r), null, 2));
    else {
      println(ctx.stdout, "Installed updates:");
      if (!r.installed.length) println(ctx.stdout, "None");
      for (const u of r.installed)
        println(ctx.stdout, `[${u.id}] ${u.name}${u.cves.length ? ` (${u.cves.join(", ")})` : ""}`);
      if (r.others.length) println(ctx.stdout, `Also applied, not from the stream: ${r.others.join(", ")}`);
      if (r.available) {
        println(ctx.stdout, `\n${availableMessage(r.available, r.state !== "unsupported_kernel")}`);
      }
      println(ctx.stdout, `\nEffective kernel version is ${r.effective}`);
    }
    if (values.check) return CHECK_CODES[r.state as keyof typeof CHECK_CODES] ?? 1;
    return 0;
  },
};

/** `uname [-r|-a]`. */
export const unameCommand: Command = {
  name: "uname",
  usage: `usage: ksplice uname [-r | -a]   (also uptrack-uname)

Prints the kernel's effective version: the version its installed updates make it as good as
(each update's --effective in the stream), or the running release when none says.
-r  the effective version alone (the default); -a  as uname -a, with the effective version`,
  async run(args, ctx) {
    const { values } = parseArgs({
      args,
      options: { r: { type: "boolean", short: "r" }, a: { type: "boolean", short: "a" } },
    });
    const u = uname();
    if (values.a) {
      const os = await import("node:os");
      println(ctx.stdout, `Linux ${os.hostname()} ${u.effective} ${u.version} ${os.machine()} GNU/Linux`);
    } else println(ctx.stdout, u.effective);
    return 0;
  },
};

/** `boot`: the boot-time re-apply (ksplice.service). */
export const bootCommand: Command = {
  name: "boot",
  usage: `usage: ksplice boot [--json]

Run by ksplice.service early at boot, before the network: re-applies the updates installed
before the restart, in order, from the verified cache alone (no network, no metadata refresh).
Does nothing with ksplice=off on the kernel command line, with /etc/ksplice/disabled, or with
install_on_reboot = no. Exits 1 when an update could not be re-applied (the log says why).`,
  async run(args, ctx) {
    const { values } = parseArgs({ args, options: { json: { type: "boolean" } } });
    const r = await boot({ log: progress(ctx, "boot"), helper: helperOf(ctx) });
    if (values.json) println(ctx.stdout, JSON.stringify({ schemaVersion: 1, ...r }, null, 2));
    else if (r.skipped) println(ctx.stdout, `Not applying updates: ${r.skipped}`);
    else {
      for (const id of r.applied) println(ctx.stdout, `Re-applied [${id}]`);
      for (const f of r.failed) println(ctx.stdout, `Could not re-apply [${f.id}]: ${f.reason}`);
      if (!r.applied.length && !r.failed.length) println(ctx.stdout, "Nothing to re-apply.");
    }
    return r.failed.length ? 1 : 0;
  },
};
