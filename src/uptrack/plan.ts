// Planning on the client: which updates to install or remove, in which order, given what the
// stream's index for this kernel lists (in order, with what each stacks on) and what is applied.
// Pure functions: no kernel, no network.
import { UserError } from "../errors.js";

/** Entry is an update as planning sees it. */
export interface Entry {
  id: string;
  stacksOn: string[];
}

/** Step is one thing to do: install (apply) or remove (undo) an update. */
export interface Step {
  action: "install" | "remove";
  id: string;
}

/** planUpgrade installs every update of the index that is not applied, in the index's order. */
export function planUpgrade(index: Entry[], applied: string[]): Step[] {
  return planInstall(
    index,
    applied,
    index.map((e) => e.id),
  );
}

/**
 * planInstall installs the given updates and what they stack on (transitively) that is not
 * applied, in the index's order, which puts each after what it stacks on.
 */
export function planInstall(index: Entry[], applied: string[], ids: string[]): Step[] {
  const byId = new Map(index.map((e) => [e.id, e]));
  const want = new Set<string>();
  const visit = (id: string, from?: string) => {
    const e = byId.get(id);
    if (!e)
      throw new UserError(
        from
          ? `update ${from} stacks on ${id}, which the stream's index for this kernel does not list`
          : `the stream has no update ${id} for this kernel and channel (ksplice show --available lists them)`,
        { code: "not_in_stream" },
      );
    if (want.has(id) || applied.includes(id)) return;
    want.add(id);
    for (const b of e.stacksOn) visit(b, id);
  };
  for (const id of ids) visit(id);
  const order = index.map((e) => e.id);
  for (const id of want)
    for (const b of byId.get(id)!.stacksOn)
      if (order.indexOf(b) > order.indexOf(id))
        throw new UserError(`the stream's index lists ${id} before ${b}, which it stacks on`, {
          code: "metadata_tampered",
        });
  return order.filter((id) => want.has(id)).map((id) => ({ action: "install", id }));
}

/**
 * planRemove removes the given updates and every installed update that stacks on them
 * (transitively), newest first; installed is in the order they were applied.
 */
export function planRemove(installed: Entry[], ids: string[] | "all"): Step[] {
  const want = new Set<string>();
  const visit = (id: string) => {
    if (want.has(id)) return;
    want.add(id);
    for (const e of installed) if (e.stacksOn.includes(id)) visit(e.id);
  };
  for (const id of ids === "all" ? installed.map((e) => e.id) : ids) {
    if (!installed.some((e) => e.id === id))
      throw new UserError(`update ${id} is not installed from the stream (ksplice show lists what is)`, {
        code: "not_applied",
      });
    visit(id);
  }
  return installed
    .filter((e) => want.has(e.id))
    .reverse()
    .map((e) => ({ action: "remove", id: e.id }));
}

/** planMessage is what upgrade, install and remove print (the CLI and the manager page). */
export function planMessage(steps: Step[], done = true): string {
  if (!steps.length) return "Nothing to be done.";
  const verb = (s: Step) =>
    s.action === "install" ? (done ? "Installed" : "Install") : done ? "Removed" : "Remove";
  return steps.map((s) => `${verb(s)} [${s.id}]`).join("\n");
}

/** availableMessage is the part of `show --available` that lists what the stream offers. */
export function availableMessage(
  available: Array<{ id: string; name: string; cves: string[] }>,
  supported: boolean,
): string {
  const lines = ["Available updates:"];
  if (!supported) lines.push("None: the stream has no updates for this kernel");
  else if (!available.length) lines.push("None");
  for (const u of available)
    lines.push(`[${u.id}] ${u.name}${u.cves.length ? ` (${u.cves.join(", ")})` : ""}`);
  return lines.join("\n");
}
