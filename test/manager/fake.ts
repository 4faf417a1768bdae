// A fake machine for the manager's host-side tests: a kernel with updates applied and
// available, actions that print progress and can be held half-way (gate) or made to fail with
// a UserError, as the real client's would. Only for layout, errors and the page's protocol:
// the lab test drives the real backend.
import { UserError } from "../../src/errors.js";
import type { AppliedView, AvailableView, Backend, ManagerState, Progress } from "../../src/manager/index.js";
import { hintFor, planMessage } from "../../src/manager/index.js";

export const NOW = new Date(Date.now() - 12 * 60_000).toISOString();

/** applied makes an applied update. */
export function applied(
  id: string,
  name: string,
  cves: string[],
  functions: AppliedView["functions"],
): AppliedView {
  return {
    id,
    name,
    cves,
    appliedAt: new Date(Date.now() - 3 * 3600_000).toISOString(),
    pauseUs: 212,
    functions,
    modules: [...new Set(functions.map((f) => f.module).filter((m) => m !== "vmlinux"))],
    fromStream: true,
  };
}

/** FakeMachine is a Backend whose state and failures the test sets. */
export class FakeMachine implements Backend {
  state_: Omit<ManagerState, "available"> & { available: AvailableView[] };
  /** The next action of this kind throws this error. */
  failNext: Partial<Record<"check" | "install" | "remove", UserError>> = {};
  /** While set, actions stop after their first progress line until it resolves. */
  gate?: Promise<void>;
  calls: string[] = [];

  constructor() {
    this.state_ = {
      hostname: "web-03.example",
      kernel: {
        release: "6.1.0-50-cloud-amd64",
        buildId: "1d0b6c2a8f",
        version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1",
      },
      effective: "6.1.176-1",
      state: "updates_available",
      applied: [
        applied(
          "upa",
          "proc: show the boot command line with A",
          ["CVE-2026-1001"],
          [{ name: "cmdline_proc_show", module: "vmlinux", state: "live" }],
        ),
      ],
      available: [
        {
          id: "upb",
          name: "overlayfs: fix the options shown in /proc/mounts",
          cves: ["CVE-2026-1002", "CVE-2026-1005"],
          stacksOn: ["upa"],
          effective: null,
        },
        {
          id: "upc",
          name: "tcp: bound tcp_reordering",
          cves: ["CVE-2026-1003"],
          stacksOn: [],
          effective: "6.1.192-3",
        },
      ],
      lastCheck: NOW,
      lastError: null,
      bootReapplyFailed: false,
      log: [
        `${NOW} installed upa: proc: show the boot command line with A`,
        `${NOW} check: 2 updates available`,
      ],
    };
  }

  async state(): Promise<ManagerState> {
    return structuredClone(this.state_);
  }

  private async run(kind: "check" | "install" | "remove", first: string, log: Progress): Promise<void> {
    this.calls.push(kind);
    log(first);
    if (this.gate) await this.gate;
    const err = this.failNext[kind];
    if (err) {
      delete this.failNext[kind];
      this.state_.state = "error";
      this.state_.lastError = {
        code: err.code,
        message: err.message,
        hint: hintFor(err.code),
        at: new Date().toISOString(),
      };
      this.state_.log.push(`${new Date().toISOString()} ${kind} failed: ${err.code}: ${err.message}`);
      throw err;
    }
  }

  private settle(): void {
    this.state_.state = this.state_.available.length ? "updates_available" : "up_to_date";
    this.state_.lastError = null;
    const withEffective = [...this.state_.applied].reverse().find((a) => a.id === "upc");
    this.state_.effective = withEffective ? "6.1.192-3" : "6.1.176-1";
  }

  async check(log: Progress): Promise<string> {
    await this.run("check", "checking the stream", log);
    this.state_.lastCheck = new Date().toISOString();
    this.settle();
    return `Available updates:\n${this.state_.available.map((u) => `[${u.id}] ${u.name} (${u.cves.join(", ")})`).join("\n") || "None"}`;
  }

  async install(ids: string[] | "all", log: Progress): Promise<string> {
    const want = ids === "all" ? this.state_.available.map((u) => u.id) : ids;
    await this.run("install", "checking the stream", log);
    const steps = [];
    for (const id of want) {
      const u = this.state_.available.find((x) => x.id === id);
      if (!u)
        throw new UserError(`update ${id} is not in the stream for this kernel`, { code: "not_in_stream" });
      log(`installing ${u.id}: ${u.name}`);
      log(`${u.id}: matched 1 function against the running kernel`);
      this.state_.available = this.state_.available.filter((x) => x.id !== id);
      this.state_.applied.push(
        applied(u.id, u.name, u.cves, [{ name: `${u.id}_fn`, module: "vmlinux", state: "live" }]),
      );
      steps.push({ action: "install" as const, id });
    }
    this.settle();
    return planMessage(steps);
  }

  async remove(ids: string[], log: Progress): Promise<string> {
    await this.run("remove", `removing ${ids[0]}`, log);
    const steps = [];
    for (const id of ids) {
      const u = this.state_.applied.find((x) => x.id === id);
      if (!u) throw new UserError(`update ${id} is not applied`, { code: "not_applied" });
      this.state_.applied = this.state_.applied.filter((x) => x.id !== id);
      this.state_.available.unshift({ id: u.id, name: u.name, cves: u.cves, stacksOn: [], effective: null });
      steps.push({ action: "remove" as const, id });
    }
    this.settle();
    return planMessage(steps);
  }
}
