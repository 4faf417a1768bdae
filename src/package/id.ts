// The update id rule and the names derived from an id. The C core (kmod/core.c) checks the
// same rule on `new ID MODULE`; keep the two in step.
import { randomInt } from "node:crypto";

/** ID_RULE: an update id is 1 to 16 characters from [a-z0-9]. */
export const ID_RULE = /^[a-z0-9]{1,16}$/;
const ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789";

/** isValidId tells whether s follows the id rule. */
export function isValidId(s: unknown): s is string {
  return typeof s === "string" && ID_RULE.test(s);
}

/** ID_RULE_TEXT says the rule in words, for messages. */
export const ID_RULE_TEXT = "1 to 16 characters of [a-z0-9]";

/** newId makes an 8-character update id. */
export function newId(): string {
  let s = "";
  for (let i = 0; i < 8; i++) s += ID_CHARS[randomInt(ID_CHARS.length)];
  return s;
}

/** MODULE_PREFIX starts the kernel module name of every update module. */
export const MODULE_PREFIX = "ksplice_";

/** moduleName is the kernel module name of update ID. */
export function moduleName(id: string): string {
  return `${MODULE_PREFIX}${id}`;
}

/** isUpdateModule tells whether a kernel module name is an update module's. */
export function isUpdateModule(module: string | undefined): boolean {
  return module?.startsWith(MODULE_PREFIX) ?? false;
}

/** packageDirName is the one top directory inside update ID's package. */
export function packageDirName(id: string): string {
  return `ksplice-${id}`;
}

/** packageFileName is the file update ID's package is written to. */
export function packageFileName(id: string): string {
  return `${packageDirName(id)}.tar.gz`;
}
