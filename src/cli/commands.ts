// The list of verbs. Each import registers one command.
import "./commands/diff.js";
import "./commands/lab.js";
import "./commands/create.js";
import "./commands/apply.js";
import "./commands/undo.js";
import "./commands/view.js";
