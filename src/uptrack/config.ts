// The client's files and its configuration. Paths are the system's (Uptrack's, where Uptrack
// had them); every one is under `root` so tests run a client in a directory of their own.
//   /etc/ksplice/uptrack.conf    configuration (INI, as Uptrack's)
//   /etc/ksplice/root.json       the stream's root metadata this machine trusts
//   /etc/ksplice/disabled        present: boot does not apply updates (as ksplice=off)
//   /var/cache/ksplice/          verified metadata and packages, and what is installed
//   /var/log/ksplice.log         one line per change and per failure
//   /run/ksplice/                effective_version, cves
//   /var/lib/prometheus/node-exporter/ksplice.prom   metrics for node_exporter's textfile collector
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";

/** ClientPaths are the client's files. */
export interface ClientPaths {
  config: string;
  trustedRoot: string;
  disabled: string;
  cache: string;
  log: string;
  run: string;
  textfile: string;
  /** /proc/cmdline, for ksplice=off. */
  cmdline: string;
  /** The kernel's id of this boot: a list of installed updates written in another boot is what to re-apply. */
  bootId: string;
}

/** clientPaths are the client's files under root: "/" on a machine, or $KSPLICE_CLIENT_ROOT. */
export function clientPaths(root = process.env.KSPLICE_CLIENT_ROOT || "/"): ClientPaths {
  return {
    config: join(root, "etc/ksplice/uptrack.conf"),
    trustedRoot: join(root, "etc/ksplice/root.json"),
    disabled: join(root, "etc/ksplice/disabled"),
    cache: join(root, "var/cache/ksplice"),
    log: join(root, "var/log/ksplice.log"),
    run: join(root, "run/ksplice"),
    textfile: join(root, "var/lib/prometheus/node-exporter/ksplice.prom"),
    cmdline: join(root, "proc/cmdline"),
    bootId: join(root, "proc/sys/kernel/random/boot_id"),
  };
}

/** ClientConfig is what uptrack.conf says. */
export interface ClientConfig {
  repoUrl: string;
  httpsProxy?: string;
  channel: string;
  autoinstall: boolean;
  installOnReboot: boolean;
}

/** parseIni reads INI text: [section] headers, key = value, # and ; comments. */
export function parseIni(text: string, name = "config"): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let section: Map<string, string> | undefined;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) return;
    const head = /^\[([^\]]+)\]$/.exec(line);
    if (head) {
      section = out.get(head[1].trim()) ?? new Map();
      out.set(head[1].trim(), section);
      return;
    }
    const kv = /^([^=:]+?)\s*[=:]\s*(.*)$/.exec(line);
    if (!kv || !section)
      throw new UserError(`${name} line ${i + 1}: expected [section] or key = value: ${line}`, {
        code: "not_configured",
      });
    section.set(kv[1].trim().toLowerCase(), kv[2].trim());
  });
  return out;
}

const yes = (v: string | undefined, fallback: boolean, what: string) => {
  if (v === undefined || v === "") return fallback;
  if (/^(yes|true|on|1)$/i.test(v)) return true;
  if (/^(no|false|off|0)$/i.test(v)) return false;
  throw new UserError(`${what} is yes or no, not ${v}`, { code: "not_configured" });
};

/** readConfig reads uptrack.conf; a missing file or update_repo_url says how to set it. */
export function readConfig(paths: ClientPaths): ClientConfig {
  let text: string;
  try {
    text = readFileSync(paths.config, "utf8");
  } catch {
    throw new UserError(
      `${paths.config} is missing: write [Network] update_repo_url = URL of the stream, and install its root metadata as ${paths.trustedRoot}`,
      { code: "not_configured" },
    );
  }
  const ini = parseIni(text, paths.config);
  const net = ini.get("Network") ?? new Map<string, string>();
  const set = ini.get("Settings") ?? new Map<string, string>();
  const repoUrl = net.get("update_repo_url");
  if (!repoUrl)
    throw new UserError(`${paths.config}: [Network] update_repo_url is not set`, { code: "not_configured" });
  let url: URL;
  try {
    url = new URL(repoUrl);
  } catch {
    throw new UserError(`${paths.config}: update_repo_url ${repoUrl} is not a URL`, {
      code: "not_configured",
    });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new UserError(`${paths.config}: update_repo_url must be http: or https:, not ${url.protocol}`, {
      code: "not_configured",
    });
  const channel = set.get("channel") || "stable";
  return {
    repoUrl: repoUrl.replace(/\/+$/, ""),
    httpsProxy: net.get("https_proxy") || undefined,
    channel,
    autoinstall: yes(set.get("autoinstall"), false, `${paths.config}: autoinstall`),
    installOnReboot: yes(set.get("install_on_reboot"), true, `${paths.config}: install_on_reboot`),
  };
}
