// Fleet visibility through Debian's own Prometheus and node_exporter, on loopback: the client's
// textfile (uptrack/state.ts metricsText) is read by node_exporter's textfile collector,
// Prometheus scrapes it and loads monitoring/ksplice.rules.yml, a query through its HTTP API
// returns the client's state, the alerts without a delay fire, and every query of the Grafana
// dashboard (monitoring/ksplice-grafana.json) runs and returns data. `promtool check rules`
// accepts the rules, and `promtool test rules` shows each alert fires when it should and not
// before.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type Installed, metricsText } from "../../src/uptrack/state.js";
import { tempDir } from "../helpers/compile.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
const RULES = join(REPO, "monitoring/ksplice.rules.yml");
const DASHBOARD = join(REPO, "monitoring/ksplice-grafana.json");
const BIN = {
  prometheus: "/usr/bin/prometheus",
  promtool: "/usr/bin/promtool",
  nodeExporter: "/usr/bin/prometheus-node-exporter",
};

for (const [name, path] of Object.entries(BIN))
  assert.ok(existsSync(path), `${name} (${path}) is missing: run scripts/install-deps.sh`);

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill("SIGKILL");
});

/** freePort asks the kernel for a free loopback port. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

function start(bin: string, args: string[], logFile: string): ChildProcess {
  const c = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  const out: Buffer[] = [];
  c.stdout?.on("data", (d) => out.push(d));
  c.stderr?.on("data", (d) => out.push(d));
  c.on("exit", () => writeFileSync(logFile, Buffer.concat(out)));
  children.push(c);
  return c;
}

/** until polls fn until it returns a value, or fails after timeoutMs with the last error. */
async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${what}: not within ${timeoutMs / 1000} s${last ? ` (${(last as Error).message})` : ""}`);
}

type Sample = { metric: Record<string, string>; value: [number, string] };

const installed = (id: string, effective: string | null): Installed => ({
  id,
  kernel: { release: "6.1.0-50-cloud-amd64", buildId: "abc" },
  name: `update ${id}`,
  description: `update ${id}`,
  cves: ["CVE-2026-1001"],
  effective,
  stacksOn: [],
  added: "2026-01-01T00:00:00Z",
  target: `updates/${id}.tar.gz`,
});

const NEAR_EXPIRY =
  "The signed stream metadata this machine holds is about to expire (the client refreshes it on every check, hourly): the machine cannot reach the stream, or the publisher has stopped re-signing it (ksplice stream resign). Once it expires, the client refuses the stream (metadata_expired) until fresh metadata is published.";

test("fleet: promtool accepts the rules, and each alert fires when it should and not before", () => {
  const check = execFileSync(BIN.promtool, ["check", "rules", RULES], { encoding: "utf8" });
  assert.match(check, /SUCCESS: 6 rules found/);
  const dir = tempDir();
  // Series one sample a minute: a machine with an update available for 30 h; one whose boot
  // re-apply failed; one whose metadata expires 8 h after the start (so within 6 h from 2 h on).
  const hour = 60;
  const tests = {
    rule_files: [RULES],
    evaluation_interval: "1m",
    tests: [
      {
        interval: "1m",
        input_series: [
          { series: 'ksplice_updates_available{instance="a"}', values: `1x${30 * hour}` },
          { series: 'ksplice_boot_reapply_failed{instance="b"}', values: `0 1x${hour}` },
          {
            series: 'ksplice_metadata_expiry_timestamp_seconds{instance="c"}',
            values: `${8 * 3600}x${4 * hour}`,
          },
          // One whose metadata expired 10 minutes in, for two hours.
          { series: 'ksplice_metadata_expiry_timestamp_seconds{instance="d"}', values: `600x${2 * hour}` },
        ],
        alert_rule_test: [
          { eval_time: "23h", alertname: "KspliceUpdatesAvailable", exp_alerts: [] },
          {
            eval_time: "25h",
            alertname: "KspliceUpdatesAvailable",
            exp_alerts: [
              {
                exp_labels: { severity: "warning", instance: "a" },
                exp_annotations: {
                  summary: "a: 1 kernel update(s) available for over 24 hours",
                  description:
                    "The stream has updates for this machine's running kernel that have not been installed for a day. Install them with `uptrack-upgrade -y` (or the manager page: ksplice manager), or set autoinstall = yes in /etc/ksplice/uptrack.conf.",
                },
              },
            ],
          },
          { eval_time: "0m", alertname: "KspliceBootReapplyFailed", exp_alerts: [] },
          {
            eval_time: "2m",
            alertname: "KspliceBootReapplyFailed",
            exp_alerts: [
              {
                exp_labels: { severity: "critical", instance: "b" },
                exp_annotations: {
                  summary: "b: ksplice could not re-apply its updates at boot",
                  description:
                    "The kernel booted without every update installed before the restart, so fixes are missing. See /var/log/ksplice.log and `journalctl -u ksplice.service`; then run `uptrack-upgrade -y`.",
                },
              },
            ],
          },
          { eval_time: "10m", alertname: "KspliceMetadataNearExpiry", exp_alerts: [] },
          {
            eval_time: "1h",
            alertname: "KspliceMetadataNearExpiry",
            exp_alerts: [
              {
                exp_labels: { severity: "warning", instance: "d" },
                exp_annotations: {
                  summary: "d: the stream's metadata has expired",
                  description: NEAR_EXPIRY,
                },
              },
            ],
          },
          {
            eval_time: "2h30m",
            alertname: "KspliceMetadataNearExpiry",
            exp_alerts: [
              {
                exp_labels: { severity: "warning", instance: "c" },
                exp_annotations: {
                  summary: "c: the stream's metadata expires in 5h 30m 0s",
                  description: NEAR_EXPIRY,
                },
              },
            ],
          },
        ],
      },
    ],
  };
  // JSON is YAML.
  const file = join(dir, "ksplice.rules.test.yml");
  writeFileSync(file, JSON.stringify(tests, null, 2));
  const r = execFileSync(BIN.promtool, ["test", "rules", file], { encoding: "utf8" });
  assert.match(r, /SUCCESS/);
});

test("fleet: node_exporter reads the client's textfile, Prometheus scrapes it, alerts and the dashboard's queries work", {
  timeout: 5 * 60_000,
}, async () => {
  const dir = tempDir();
  const textDir = join(dir, "node-exporter");
  mkdirSync(textDir);
  // The client's state: two updates applied, one available, booted without re-applying them
  // all, metadata expiring in 3 hours.
  const lastCheck = new Date(Date.now() - 20 * 60_000);
  writeFileSync(
    join(textDir, "ksplice.prom"),
    metricsText({
      release: "6.1.0-50-cloud-amd64",
      effective: "6.1.192-3",
      installed: [installed("upa", null), installed("upb", "6.1.192-3")],
      status: {
        lastCheck: lastCheck.toISOString(),
        lastSuccess: lastCheck.toISOString(),
        available: ["upc"],
        supported: true,
        bootReapplyFailed: true,
      },
      metadataExpires: new Date(Date.now() + 3 * 3600_000),
    }),
  );
  const exporterPort = await freePort();
  start(
    BIN.nodeExporter,
    [
      `--web.listen-address=127.0.0.1:${exporterPort}`,
      "--collector.disable-defaults",
      "--collector.textfile",
      `--collector.textfile.directory=${textDir}`,
    ],
    join(dir, "node-exporter.log"),
  );
  const scraped = await until("node_exporter serves the textfile", async () => {
    const t = await (await fetch(`http://127.0.0.1:${exporterPort}/metrics`)).text();
    return /^ksplice_updates_available 1$/m.test(t) ? t : undefined;
  });
  assert.match(scraped, /^ksplice_info\{effective="6\.1\.192-3",release="6\.1\.0-50-cloud-amd64"\} 1$/m);
  assert.match(scraped, /^node_textfile_scrape_error 0$/m, "node_exporter parsed the textfile");

  const promPort = await freePort();
  const target = `127.0.0.1:${exporterPort}`;
  const config = join(dir, "prometheus.yml");
  writeFileSync(
    config,
    JSON.stringify({
      global: { scrape_interval: "1s", evaluation_interval: "1s" },
      rule_files: [RULES],
      scrape_configs: [{ job_name: "node", static_configs: [{ targets: [target] }] }],
    }),
  );
  start(
    BIN.prometheus,
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, "tsdb")}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ],
    join(dir, "prometheus.log"),
  );
  const api = `http://127.0.0.1:${promPort}/api/v1`;
  const query = async (q: string): Promise<Sample[]> => {
    const r = (await (await fetch(`${api}/query?query=${encodeURIComponent(q)}`)).json()) as {
      status: string;
      data: { result: Sample[] };
      error?: string;
    };
    assert.equal(r.status, "success", `${q}: ${r.error}`);
    return r.data.result;
  };
  await until("Prometheus has scraped the client's metrics", async () =>
    (await query("ksplice_updates_available")).length ? true : undefined,
  );

  // The client's state, through Prometheus's HTTP API.
  const one = async (q: string) => {
    const r = await query(q);
    assert.equal(r.length, 1, `${q}: ${JSON.stringify(r)}`);
    return r[0];
  };
  assert.equal((await one("ksplice_updates_available")).value[1], "1");
  assert.equal((await one("ksplice_updates_applied")).value[1], "2");
  const info = await one("ksplice_info");
  assert.equal(info.metric.release, "6.1.0-50-cloud-amd64");
  assert.equal(info.metric.effective, "6.1.192-3");
  assert.equal(info.metric.instance, target);
  assert.equal((await one("ksplice_state == 1")).metric.state, "updates_available");
  assert.equal(
    (await one("ksplice_last_check_timestamp_seconds")).value[1],
    String(Math.floor(lastCheck.getTime() / 1000)),
  );

  // The rules loaded, and the alerts that need no waiting are on.
  const rules = (await (await fetch(`${api}/rules`)).json()) as {
    data: { groups: Array<{ name: string; rules: Array<{ name: string; health: string }> }> };
  };
  const group = rules.data.groups.find((g) => g.name === "ksplice");
  assert.ok(group, "the ksplice group is loaded");
  assert.deepEqual(
    group.rules.map((r) => `${r.name} ${r.health}`),
    [
      "KspliceUpdatesAvailable ok",
      "KspliceBootReapplyFailed ok",
      "KspliceMetadataNearExpiry ok",
      "KspliceCheckFailing ok",
      "KspliceNotChecking ok",
      "KspliceKernelUnsupported ok",
    ],
  );
  const alerts = await until("the alerts are evaluated", async () => {
    const r = (await (await fetch(`${api}/alerts`)).json()) as {
      data: { alerts: Array<{ labels: { alertname: string }; state: string }> };
    };
    const by = Object.fromEntries(r.data.alerts.map((a) => [a.labels.alertname, a.state]));
    return by.KspliceBootReapplyFailed === "firing" && by.KspliceMetadataNearExpiry ? by : undefined;
  });
  assert.deepEqual(alerts, {
    KspliceBootReapplyFailed: "firing",
    KspliceMetadataNearExpiry: "pending",
    KspliceUpdatesAvailable: "pending",
  });

  // Every query of the dashboard runs and returns this machine.
  const dash = JSON.parse(readFileSync(DASHBOARD, "utf8")) as {
    panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
  };
  const metrics = new Set([...scraped.matchAll(/^(ksplice_\w+)/gm)].map((m) => m[1]));
  const exprs = dash.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr })));
  assert.ok(exprs.length >= 10, `${exprs.length} queries`);
  const results: Record<string, string> = {};
  for (const { panel, expr } of exprs) {
    for (const m of expr.matchAll(/\bksplice_\w+/g))
      assert.ok(metrics.has(m[0]), `${panel}: ${m[0]} is not written`);
    const r = await query(expr.replaceAll("$instance", ".*"));
    assert.ok(r.length > 0, `${panel}: ${expr} returned nothing`);
    results[`${panel}: ${expr}`] = r[0].value[1];
  }
  assert.equal(results['Machines: count(ksplice_info{instance=~"$instance"})'], "1");
  assert.equal(
    results[
      'With updates available: count(ksplice_updates_available{instance=~"$instance"} > 0) or vector(0)'
    ],
    "1",
  );
  assert.equal(
    results[
      'Boot re-apply failed: count(ksplice_boot_reapply_failed{instance=~"$instance"} == 1) or vector(0)'
    ],
    "1",
  );
  const expiring = Object.entries(results).find(([k]) => k.startsWith("Metadata expiring"));
  assert.equal(expiring?.[1], "1");
});
