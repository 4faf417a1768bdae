// Folder src/manager: `ksplice manager`, Uptrack Manager as a web page. It owns the page
// (page.ts: HTML, CSS and script as strings, no framework and no build step), the server that
// guards and serves it (server.ts: token, cookie, CSRF checks, TLS off loopback, actions one at
// a time with their progress as server-sent events), the Backend interface the server is given
// and how errors are shown with what to do (backend.ts), and the real backend over this machine
// (real.ts). It reads and changes the machine only through src/uptrack (the client's verbs and
// state) and src/kernel (what is applied, as `ksplice view` shows); it must not import
// src/cli, src/lab, src/update or src/stream's publishing side, and it adds no kernel logic.

export { availableMessage, planMessage } from "../uptrack/plan.js";
export {
  type AppliedView,
  type AvailableView,
  type Backend,
  hintFor,
  type ManagerState,
  type Problem,
  type Progress,
  problemOf,
} from "./backend.js";
export { PAGE_CSS, PAGE_JS, pageHtml } from "./page.js";
export { realBackend } from "./real.js";
export { isLoopback, type Manager, type ManagerOptions, startManager } from "./server.js";
