// The list of verbs, in the order `ksplice --help` shows them.
import { applyCommand } from "./commands/apply.js";
import { comingCommand } from "./commands/coming.js";
import { createCommand } from "./commands/create.js";
import { diffCommand } from "./commands/diff.js";
import { labCommand } from "./commands/lab.js";
import { managerCommand } from "./commands/manager.js";
import { streamCommand } from "./commands/stream.js";
import { undoCommand } from "./commands/undo.js";
import {
  bootCommand,
  installCommand,
  removeCommand,
  showCommand,
  unameCommand,
  upgradeCommand,
} from "./commands/uptrack.js";
import { viewCommand } from "./commands/view.js";
import type { Command } from "./context.js";

export const COMMANDS: readonly Command[] = [
  diffCommand,
  labCommand,
  createCommand,
  applyCommand,
  undoCommand,
  viewCommand,
  streamCommand,
  upgradeCommand,
  installCommand,
  removeCommand,
  showCommand,
  unameCommand,
  bootCommand,
  managerCommand,
  comingCommand,
];
