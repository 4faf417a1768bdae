// The manager's page: plain HTML, CSS and JavaScript kept as strings (no framework, no build
// step), served by server.ts as /, /app.css and /app.js. The script fetches /api/state, draws
// it with DOM calls (text only: nothing from the machine is parsed as HTML), posts actions
// with the token in a header, and follows their progress as server-sent events.

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

/** pageHtml is the page; denied: the page for a visitor without the token, with why. */
export function pageHtml(o: { token?: string; denied?: string }): string {
  const head = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${o.token ? `<meta name="ksplice-token" content="${escapeHtml(o.token)}">` : ""}
<title>ksplice manager</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/app.css">
</head>`;
  if (o.denied !== undefined)
    return `${head}
<body>
<header class="top"><div class="brand">ksplice <span>manager</span></div></header>
<main>
<section class="card problem" id="denied">
<h2>This page needs its token</h2>
<p>${escapeHtml(o.denied)} Open the address that <code>ksplice manager</code> printed when it started:
it ends in <code>/?token=…</code>.</p>
</section>
</main>
</body>
</html>
`;
  return `${head}
<body>
<header class="top">
  <div class="brand">ksplice <span>manager</span></div>
  <div class="host" id="host"></div>
</header>
<main>
  <section class="card summary" id="summary">
    <div class="status" id="status" data-state="loading"><span class="dot"></span><strong id="status-text">Loading…</strong></div>
    <dl class="facts">
      <div><dt>Running kernel</dt><dd id="release">…</dd></div>
      <div><dt>Effective version</dt><dd id="effective">…</dd></div>
      <div><dt>Last check</dt><dd id="last-check">…</dd></div>
    </dl>
    <p class="note" id="boot-note" hidden>The last boot could not re-apply every installed update: see the log below.</p>
    <div class="actions">
      <button type="button" id="check">Check now</button>
      <button type="button" id="install-all" class="primary" disabled>Install all updates</button>
    </div>
  </section>

  <section class="card problem" id="problem" role="alert" hidden>
    <h2 id="problem-title">Something went wrong</h2>
    <p class="message" id="problem-message"></p>
    <p class="hint"><strong>What to do:</strong> <span id="problem-hint"></span></p>
  </section>

  <section class="card progress" id="progress" hidden>
    <h2 id="progress-title"></h2>
    <pre id="progress-lines" aria-live="polite"></pre>
    <p class="result" id="progress-result" role="status"></p>
  </section>

  <section class="card">
    <h2>Available updates <span class="count" id="available-count"></span></h2>
    <div class="list" id="available"></div>
  </section>

  <section class="card">
    <h2>Applied updates <span class="count" id="applied-count"></span></h2>
    <div class="list" id="applied"></div>
  </section>

  <section class="card">
    <h2>Recent log</h2>
    <pre class="log" id="log"></pre>
  </section>
</main>

<dialog id="confirm" aria-labelledby="confirm-title">
  <h2 id="confirm-title">Remove this update?</h2>
  <p id="confirm-text"></p>
  <div class="actions">
    <button type="button" id="confirm-cancel">Cancel</button>
    <button type="button" id="confirm-remove" class="danger solid">Remove</button>
  </div>
</dialog>
<script src="/app.js"></script>
</body>
</html>
`;
}

/** PAGE_CSS is the page's style: one column of cards, wider facts on a laptop, stacked on a phone. */
export const PAGE_CSS = `
:root {
  --bg: #f4f5f7; --card: #fff; --ink: #1d2430; --muted: #5b6573; --line: #dde1e7;
  --accent: #1f5fbf; --accent-ink: #fff; --ok: #1e7d45; --warn: #a35a00; --bad: #b3261e;
  --mono: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
.top { display: flex; align-items: baseline; justify-content: space-between; gap: 1rem;
  padding: .8rem 1.25rem; background: #16202e; color: #fff; }
.brand { font-weight: 700; font-size: 1.1rem; letter-spacing: .01em; }
.brand span { font-weight: 400; opacity: .75; }
.host { font-family: var(--mono); font-size: .85rem; opacity: .8; overflow-wrap: anywhere; text-align: right; }
main { max-width: 960px; margin: 0 auto; padding: 1rem; display: grid; gap: 1rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 1rem 1.25rem; }
.card h2 { font-size: 1rem; margin: 0 0 .75rem; }
.count { color: var(--muted); font-weight: 400; }
.status { display: flex; align-items: center; gap: .6rem; font-size: 1.25rem; margin-bottom: .75rem; }
.status .dot { width: .8rem; height: .8rem; border-radius: 50%; background: var(--muted); flex: none; }
.status[data-state="up_to_date"] .dot { background: var(--ok); }
.status[data-state="up_to_date"] strong { color: var(--ok); }
.status[data-state="updates_available"] .dot { background: var(--warn); }
.status[data-state="updates_available"] strong { color: var(--warn); }
.status[data-state="error"] .dot { background: var(--bad); }
.status[data-state="error"] strong { color: var(--bad); }
.facts { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: .75rem; margin: 0 0 1rem; }
.facts dt, .meta dt { color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; }
.facts dd, .meta dd { margin: .1rem 0 0; font-family: var(--mono); font-size: .9rem; overflow-wrap: anywhere; }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; }
button { font: inherit; padding: .5rem 1rem; border-radius: 7px; border: 1px solid #b8c0cc; background: #fff;
  color: var(--ink); cursor: pointer; min-height: 2.5rem; }
button:hover:not(:disabled) { border-color: var(--accent); }
button:focus-visible { outline: 3px solid #8fb3ef; outline-offset: 1px; }
button:disabled { opacity: .5; cursor: not-allowed; }
button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-ink); font-weight: 600; }
button.danger { color: var(--bad); border-color: #e2b4b0; }
button.danger.solid { background: var(--bad); color: #fff; border-color: var(--bad); }
button.small { padding: .25rem .7rem; min-height: 2.1rem; font-size: .9rem; }
.note { color: var(--bad); margin: 0 0 1rem; }
.problem { border-color: #e2b4b0; background: #fdf3f2; }
.problem h2 { color: var(--bad); }
.problem .message { font-family: var(--mono); font-size: .88rem; white-space: pre-wrap; overflow-wrap: anywhere; margin: 0 0 .6rem; }
.problem .hint { margin: 0; }
.progress pre, .log { font-family: var(--mono); font-size: .8rem; background: #f6f7f9; border: 1px solid var(--line);
  border-radius: 6px; padding: .6rem .75rem; margin: 0; max-height: 16rem; overflow: auto; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.progress .result { font-family: var(--mono); white-space: pre-wrap; margin: .75rem 0 0; font-weight: 600; }
.progress .result.ok { color: var(--ok); }
.progress .result.bad { color: var(--bad); }
.list { display: grid; gap: .75rem; }
.empty { color: var(--muted); margin: 0; }
.update { border: 1px solid var(--line); border-radius: 8px; padding: .75rem .9rem; }
.update .head { display: flex; align-items: center; gap: .6rem; flex-wrap: wrap; }
.update .id { font-family: var(--mono); font-weight: 700; background: #eef2f8; border-radius: 5px; padding: .05rem .4rem; }
.update .name { flex: 1 1 12rem; min-width: 0; overflow-wrap: anywhere; }
.update .head button { margin-left: auto; }
.cves { display: flex; flex-wrap: wrap; gap: .35rem; margin-top: .5rem; }
.cve { font-family: var(--mono); font-size: .78rem; background: #fff4e0; color: #7a4300; border: 1px solid #f0d29c;
  border-radius: 999px; padding: .05rem .55rem; }
.meta { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: .5rem; margin: .6rem 0 0; }
.functions { margin: .6rem 0 0; font-size: .88rem; color: var(--muted); }
.functions code { font-family: var(--mono); font-size: .82rem; color: var(--ink); background: #f1f3f6;
  border-radius: 4px; padding: 0 .3rem; margin: 0 .15rem .2rem 0; display: inline-block; }
.functions code.failed { color: var(--bad); }
.stack { font-size: .85rem; color: var(--muted); margin: .4rem 0 0; }
dialog { border: 1px solid var(--line); border-radius: 10px; padding: 1.25rem; max-width: min(28rem, 92vw); }
dialog::backdrop { background: rgba(15, 20, 30, .45); }
dialog h2 { margin: 0 0 .5rem; font-size: 1.1rem; }
dialog .actions { justify-content: flex-end; margin-top: 1rem; }
@media (max-width: 640px) {
  body { font-size: 15px; }
  .top { padding: .7rem .9rem; flex-direction: column; gap: .1rem; }
  .host { text-align: left; }
  main { padding: .6rem; gap: .6rem; }
  .card { padding: .85rem .9rem; }
  .facts, .meta { grid-template-columns: 1fr; gap: .45rem; }
  .actions button { flex: 1 1 auto; }
  .update .head button { margin-left: 0; width: 100%; }
}
`;

/** PAGE_JS is the page's script. */
export const PAGE_JS = `"use strict";
(function () {
  var token = (document.querySelector('meta[name="ksplice-token"]') || {}).content || "";
  var $ = function (id) { return document.getElementById(id); };
  var busy = false;
  var current = null;

  function el(tag, props, children) {
    var e = document.createElement(tag);
    if (props) for (var k in props) {
      if (k === "text") e.textContent = props[k];
      else if (k === "class") e.className = props[k];
      else if (k.indexOf("on") === 0) e.addEventListener(k.slice(2), props[k]);
      else e.setAttribute(k, props[k]);
    }
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }

  function when(iso) {
    if (!iso) return "never";
    var d = new Date(iso);
    var s = Math.round((Date.now() - d.getTime()) / 1000);
    var ago = s < 60 ? "just now" : s < 3600 ? Math.round(s / 60) + " min ago"
      : s < 86400 ? Math.round(s / 3600) + " h ago" : Math.round(s / 86400) + " days ago";
    return d.toLocaleString() + " (" + ago + ")";
  }

  var TITLES = {
    stream_unreachable: "The stream cannot be reached",
    metadata_tampered: "The stream failed verification",
    metadata_rollback: "The stream failed verification: old metadata",
    metadata_expired: "The stream's metadata has expired",
    untrusted_root: "The stream is not the one this machine trusts",
    not_configured: "No stream is configured",
    unsupported_kernel: "No updates for this kernel",
    code_busy: "The code to replace is in use",
    locked: "Another ksplice command is running",
    permission_denied: "Not allowed",
    busy: "Another action is running",
    unauthorized: "This page needs its token",
    forbidden: "Refused"
  };

  function showProblem(p) {
    if (!p) { $("problem").hidden = true; return; }
    $("problem-title").textContent = TITLES[p.code] || "Something went wrong";
    $("problem-message").textContent = p.message + (p.code && p.code !== "failed" ? "  [" + p.code + "]" : "");
    $("problem-hint").textContent = p.hint || "";
    $("problem").hidden = false;
  }

  function statusText(s) {
    var n = s.available.length;
    switch (s.state) {
      case "up_to_date": return "Up to date";
      case "updates_available": return n === 1 ? "1 update available" : n + " updates available";
      case "unsupported_kernel": return "The stream has no updates for this kernel";
      case "not_checked": return "Not checked yet: press Check now";
      case "error": return "The last check failed";
      default: return s.state;
    }
  }

  function fact(label, value) {
    return el("div", null, [el("dt", { text: label }), el("dd", { text: value })]);
  }

  function cves(list) {
    if (!list.length) return null;
    return el("div", { class: "cves" }, list.map(function (c) { return el("span", { class: "cve", text: c }); }));
  }

  function render(s) {
    current = s;
    document.title = statusText(s) + " · ksplice manager · " + s.hostname;
    $("host").textContent = s.hostname;
    $("status").dataset.state = s.state;
    $("status-text").textContent = statusText(s);
    $("release").textContent = s.kernel.release;
    $("effective").textContent = s.effective;
    $("last-check").textContent = when(s.lastCheck);
    $("boot-note").hidden = !s.bootReapplyFailed;
    if (!busy) showProblem(s.lastError);

    var av = $("available");
    av.replaceChildren();
    $("available-count").textContent = "(" + s.available.length + ")";
    if (!s.available.length)
      av.appendChild(el("p", { class: "empty", text: s.state === "not_checked" ? "Not checked yet." : "None." }));
    s.available.forEach(function (u) {
      av.appendChild(el("article", { class: "update", "data-id": u.id }, [
        el("div", { class: "head" }, [
          el("span", { class: "id", text: u.id }),
          el("span", { class: "name", text: u.name }),
          el("button", { type: "button", class: "small", "data-action": "install", text: "Install",
            "aria-label": "Install " + u.id, onclick: function () { act("install", [u.id]); } })
        ]),
        cves(u.cves),
        u.stacksOn.length ? el("p", { class: "stack", text: "Stacks on " + u.stacksOn.join(", ") }) : null
      ]));
    });

    var ap = $("applied");
    ap.replaceChildren();
    $("applied-count").textContent = "(" + s.applied.length + ")";
    if (!s.applied.length) ap.appendChild(el("p", { class: "empty", text: "No updates applied." }));
    s.applied.forEach(function (u) {
      var fns = el("p", { class: "functions" }, [document.createTextNode(u.functions.length + " function(s): ")]);
      u.functions.forEach(function (f) {
        var where = [];
        if (f.module !== "vmlinux") where.push(f.module);
        if (f.state !== "live") where.push(f.state);
        var c = el("code", { text: f.name + (where.length ? " [" + where.join(": ") + "]" : ""),
          class: f.state === "failed" ? "failed" : "" });
        if (f.reason) c.title = f.reason;
        fns.appendChild(c);
      });
      ap.appendChild(el("article", { class: "update", "data-id": u.id }, [
        el("div", { class: "head" }, [
          el("span", { class: "id", text: u.id }),
          el("span", { class: "name", text: u.name }),
          u.fromStream
            ? el("button", { type: "button", class: "small danger", "data-action": "remove", text: "Remove",
                "aria-label": "Remove " + u.id, onclick: function () { confirmRemove(u); } })
            : el("span", { class: "stack", text: "applied by hand (ksplice undo " + u.id + ")" })
        ]),
        cves(u.cves),
        el("dl", { class: "meta" }, [
          fact("Applied", when(u.appliedAt)),
          fact("Pause", u.pauseUs === null ? "unknown" : u.pauseUs + " µs"),
          fact("Modules", u.modules.length ? u.modules.join(", ") : "kernel image only")
        ]),
        fns
      ]));
    });

    $("log").textContent = s.log.length ? s.log.join("\\n") : "(empty)";
    $("log").scrollTop = $("log").scrollHeight;
    setBusy(busy || !!s.running);
  }

  function setBusy(b) {
    document.querySelectorAll("button").forEach(function (btn) {
      if (btn.closest("dialog")) return;
      btn.disabled = b || (btn.id === "install-all" && !(current && current.available.length));
    });
  }

  function load() {
    return fetch("/api/state", { credentials: "same-origin" }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { showProblem(body.error); return; }
        render(body);
      });
    }).catch(function (e) {
      showProblem({ code: "failed", message: "the manager did not answer: " + e.message,
        hint: "Is ksplice manager still running? Start it again and open the address it prints." });
    });
  }

  var LABELS = { check: "Checking the stream", install: "Installing", remove: "Removing" };

  function act(action, ids) {
    if (busy) return;
    busy = true;
    setBusy(true);
    showProblem(null);
    $("progress").hidden = false;
    $("progress-title").textContent = LABELS[action] + (ids && ids !== "all" && ids.length ? " " + ids.join(", ") : action === "install" ? " every available update" : "") + "…";
    $("progress-lines").textContent = "";
    var result = $("progress-result");
    result.textContent = "";
    result.className = "result";
    fetch("/api/actions", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-ksplice-token": token },
      body: JSON.stringify({ action: action, ids: ids })
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw body.error;
        var es = new EventSource(body.events);
        es.addEventListener("progress", function (ev) {
          var pre = $("progress-lines");
          pre.textContent += JSON.parse(ev.data).line + "\\n";
          pre.scrollTop = pre.scrollHeight;
        });
        es.addEventListener("done", function (ev) {
          es.close();
          var d = JSON.parse(ev.data);
          busy = false;
          if (d.ok) {
            result.textContent = d.message;
            result.className = "result ok";
            $("progress-title").textContent = LABELS[action] + ": done";
          } else {
            result.textContent = "Failed: " + d.problem.code;
            result.className = "result bad";
            $("progress-title").textContent = LABELS[action] + ": failed";
          }
          load().then(function () { if (!d.ok) showProblem(d.problem); });
        });
        es.onerror = function () {
          if (es.readyState === EventSource.CLOSED && busy) {
            busy = false;
            showProblem({ code: "failed", message: "lost the connection to the manager during the action",
              hint: "Reload the page: it shows what was done." });
            load();
          }
        };
      });
    }).catch(function (p) {
      busy = false;
      $("progress").hidden = true;
      showProblem(p && p.code ? p : { code: "failed", message: String(p && p.message || p), hint: "Reload the page and try again." });
      load();
    });
  }

  function confirmRemove(u) {
    var d = $("confirm");
    $("confirm-title").textContent = "Remove " + u.id + "?";
    $("confirm-text").textContent = "This takes " + u.id + " (" + u.name + ") out of the running kernel, and first every update that stacks on it. The fixes it brings stop protecting this machine.";
    $("confirm-remove").onclick = function () { d.close(); act("remove", [u.id]); };
    $("confirm-cancel").onclick = function () { d.close(); };
    d.showModal();
  }

  $("check").addEventListener("click", function () { act("check"); });
  $("install-all").addEventListener("click", function () { act("install", "all"); });
  load();
})();
`;
