// The list of verbs. Each import registers one command.
import "./commands/diff.js";
import "./commands/lab.js";
import "./commands/create.js";
