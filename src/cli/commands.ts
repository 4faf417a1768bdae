// The list of verbs, in the order `ksplice --help` shows them. A verb's module is imported only
// when it runs: under TCG in the lab, importing every command cost a second on each run.
import type { Command } from "./context.js";

/** Verb is what --help needs of a command without loading it. */
export interface Verb {
  name: string;
  summary: string;
  load(): Promise<Command>;
}

export const VERBS: readonly Verb[] = [
  {
    name: "diff",
    summary: "compare two builds of one object file, function by function",
    load: async () => (await import("./commands/diff.js")).diffCommand,
  },
  {
    name: "lab",
    summary: "prepare and boot the QEMU lab on Debian's cloud kernel",
    load: async () => (await import("./commands/lab.js")).labCommand,
  },
  {
    name: "create",
    summary: "build a rebootless update from a kernel source patch",
    load: async () => (await import("./commands/create.js")).createCommand,
  },
  {
    name: "apply",
    summary: "apply an update to the running kernel",
    load: async () => (await import("./commands/apply.js")).applyCommand,
  },
  {
    name: "undo",
    summary: "reverse an applied update",
    load: async () => (await import("./commands/undo.js")).undoCommand,
  },
  {
    name: "view",
    summary: "list the updates applied to the running kernel",
    load: async () => (await import("./commands/view.js")).viewCommand,
  },
  {
    name: "stream",
    summary: "publish updates as a signed stream (init, add, remove, promote, resign, ls, serve)",
    load: async () => (await import("./commands/stream.js")).streamCommand,
  },
  {
    name: "upgrade",
    summary: "install every update of the stream for the running kernel (uptrack-upgrade)",
    load: async () => (await import("./commands/uptrack.js")).upgradeCommand,
  },
  {
    name: "install",
    summary: "install updates of the stream, and what they stack on (uptrack-install)",
    load: async () => (await import("./commands/uptrack.js")).installCommand,
  },
  {
    name: "remove",
    summary: "remove installed updates, and what stacks on them (uptrack-remove)",
    load: async () => (await import("./commands/uptrack.js")).removeCommand,
  },
  {
    name: "show",
    summary: "list installed (and available) updates with their CVEs (uptrack-show)",
    load: async () => (await import("./commands/uptrack.js")).showCommand,
  },
  {
    name: "uname",
    summary: "print the effective kernel version (uptrack-uname)",
    load: async () => (await import("./commands/uptrack.js")).unameCommand,
  },
  {
    name: "boot",
    summary: "re-apply installed updates at boot from the verified cache (ksplice.service)",
    load: async () => (await import("./commands/uptrack.js")).bootCommand,
  },
  {
    name: "manager",
    summary: "serve the manager page: what is applied and available, with install and remove buttons",
    load: async () => (await import("./commands/manager.js")).managerCommand,
  },
  {
    name: "module-coming",
    summary: "(run by the core) patch a module that is loading",
    load: async () => (await import("./commands/coming.js")).comingCommand,
  },
];
