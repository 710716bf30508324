// The stateline inspector: plain JavaScript over the JSON API of `stateline ui`.
// Every piece of stored data reaches the page through textContent, never as HTML.
"use strict";

const state = { info: null };

// h("tag.class", {attr: value, onclick: fn}, child...): an element; strings become text.
function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, params, body) {
  const url = path + (params ? "?" + new URLSearchParams(params) : "");
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "content-type": "application/json", "x-stateline-csrf": state.info.csrf },
    body: JSON.stringify(body),
  };
  const res = await fetch(url, init);
  if (res.status === 401) { location.href = "/login"; throw new Error("a token is needed"); }
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function json(value) { return h("pre", {}, JSON.stringify(value, null, 2)); }
function ttl(ms) { return ms < 0 ? "none" : Math.round(ms / 1000) + " s"; }
function when(ts) { return ts ? ts.replace("T", " ").slice(0, 19) : ""; }
function enc(s) { return encodeURIComponent(s); }
function show(...nodes) { const v = document.getElementById("view"); v.replaceChildren(...nodes); }
function fail(err) { show(h("p.error", { id: "error" }, String(err.message || err))); }

// -- the confirmation dialog ---------------------------------------------------------------

function confirmAction({ title, body, ok, run }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").replaceChildren(...body);
  document.getElementById("confirm-error").textContent = "";
  document.getElementById("confirm-ok").textContent = ok;
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    try { await run(); } catch (err) { alert(err.message); }
    route();
  };
  dialog.returnValue = "";
  dialog.showModal();
}

function writeActions(thread) {
  if (!state.info.allow_writes) return [];
  const del = () => confirmAction({
    title: "Delete this thread?",
    body: [h("p", {}, "Every checkpoint and write of ", h("code", {}, thread), " goes. This cannot be undone.")],
    ok: "Delete",
    run: () => api("/api/delete", null, { thread }).then(() => { location.hash = "#/"; }),
  });
  const prune = async () => {
    const keep = h("input", { type: "number", min: 1, value: 1, id: "keep" });
    const preview = h("p.muted", { id: "prune-preview" });
    const update = async () => {
      const p = await api("/api/prune-preview", { thread, keep: keep.value || 1 });
      preview.textContent = `${p.would_go} checkpoint(s) would go (fewer where a DeltaChannel value needs its ancestors).`;
    };
    keep.addEventListener("input", update);
    await update();
    confirmAction({
      title: "Prune this thread?",
      body: [h("p", {}, "Keep the newest checkpoints of each namespace: ", keep), preview],
      ok: "Prune",
      run: () => api("/api/prune", null, { thread, keep: Number(keep.value || 1) }),
    });
  };
  const copy = () => {
    const target = h("input", { type: "text", id: "copy-target", value: thread + "-copy" });
    confirmAction({
      title: "Copy this thread?",
      body: [h("p", {}, "Copy every checkpoint to a new thread id: ", target)],
      ok: "Copy",
      run: () => api("/api/copy", null, { thread, target: target.value }),
    });
  };
  return [
    h("button.small", { onclick: copy, title: "Copy to a new thread" }, "Copy…"),
    h("button.small", { onclick: prune, title: "Keep the newest checkpoints" }, "Prune…"),
    h("button.small.danger", { onclick: del, title: "Delete the thread" }, "Delete…"),
  ];
}

// -- threads -------------------------------------------------------------------------------

async function threadsView(params) {
  const q = params.get("q") || "";
  const cursor = params.get("cursor") || "";
  const limit = params.get("limit") || "25";
  const data = await api("/api/threads", { q, cursor, limit });
  const search = h("input", { type: "search", id: "search", placeholder: "thread id contains…", value: q });
  const go = () => { location.hash = "#/?" + new URLSearchParams({ q: search.value, limit }); };
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  const rows = data.threads.map((t) => h("tr.thread", { dataset: { thread: t.thread_id } },
    h("td.id", {}, h("a", { href: "#/thread/" + enc(t.thread_id) }, t.thread_id)),
    h("td.num", {}, t.checkpoints), h("td.num", {}, t.writes), h("td.num", {}, t.step ?? ""),
    h("td", {}, when(t.updated)), h("td.num.size", {}, t.size), h("td", {}, ttl(t.ttl_ms)),
    h("td", {}, ...writeActions(t.thread_id))));
  const pager = h("div.toolbar", {},
    cursor ? h("a", { href: "#/?" + new URLSearchParams({ q, limit }), id: "first" }, "← first page") : null,
    data.next ? h("a", { href: "#/?" + new URLSearchParams({ q, limit, cursor: data.next }), id: "next" }, "next page →") : null);
  show(
    h("h2", {}, "Threads"),
    h("div.toolbar", {}, search, h("button", { onclick: go, id: "search-go" }, "Search")),
    rows.length ? h("table", { id: "threads" },
      h("thead", {}, h("tr", {}, ...["thread", "checkpoints", "writes", "step", "updated", "size", "ttl", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, ...rows)) : h("p.muted", { id: "no-threads" }, q ? "No thread id contains that." : "No threads."),
    pager);
}

// -- a thread: its checkpoints as a tree -------------------------------------------------------

function tree(cps, selected, pick) {
  // cps: one namespace's checkpoints. A checkpoint's children are drawn oldest first: the
  // oldest continues the line, each newer one is a fork drawn as a branch under it.
  const ids = new Set(cps.map((c) => c.checkpoint_id));
  const children = new Map();
  const roots = [];
  for (const c of [...cps].sort((a, b) => (a.checkpoint_id < b.checkpoint_id ? -1 : 1))) {
    if (c.parent_id && ids.has(c.parent_id)) {
      if (!children.has(c.parent_id)) children.set(c.parent_id, []);
      children.get(c.parent_id).push(c);
    } else roots.push(c);
  }
  const node = (c) => {
    const kids = children.get(c.checkpoint_id) || [];
    const li = h("li.node", { dataset: { id: c.checkpoint_id, ns: c.checkpoint_ns } },
      h("div.cp", { onclick: () => pick(c) },
        h("span.step", {}, "step " + (c.metadata.step ?? "?")),
        h("span.source", {}, c.metadata.source || ""),
        h("span.id.muted", { title: c.checkpoint_id }, c.checkpoint_id),
        h("button.small.diff-a", { title: "diff from here", onclick: (e) => { e.stopPropagation(); pick(c, "a"); } }, "A"),
        h("button.small.diff-b", { title: "diff to here", onclick: (e) => { e.stopPropagation(); pick(c, "b"); } }, "B")));
    if (!kids.length) li.classList.add("tip");
    if (selected && selected === c.checkpoint_id) li.classList.add("selected");
    return [li, kids];
  };
  const chain = (start) => {
    const ol = h("ol.chain");
    let c = start;
    while (c) {
      const [li, kids] = node(c);
      ol.append(li);
      for (const fork of kids.slice(1)) {
        ol.append(h("li.branch", {}, h("div.fork-label", {}, "fork from step " + (c.metadata.step ?? "?")), chain(fork)));
      }
      c = kids[0];
    }
    return ol;
  };
  return h("div.tree", {}, ...roots.map(chain));
}

async function threadView(thread, rest) {
  const data = await api("/api/checkpoints", { thread });
  const byNs = new Map();
  for (const c of data.checkpoints) {
    if (!byNs.has(c.checkpoint_ns)) byNs.set(c.checkpoint_ns, []);
    byNs.get(c.checkpoint_ns).push(c);
  }
  const spaces = [...byNs.keys()].sort();
  const [mode, ...args] = rest.map(decodeURIComponent);
  const selected = mode === "cp" ? args[1] : null;
  const marks = { a: mode === "diff" ? args[1] : null, b: mode === "diff" ? args[3] : null };
  const pick = (c, which) => {
    const ns = enc(c.checkpoint_ns), id = enc(c.checkpoint_id);
    const base = "#/thread/" + enc(thread);
    if (!which) { location.hash = `${base}/cp/${ns}/${id}`; return; }
    state.marks = state.marks && state.marks.thread === thread ? state.marks : { thread };
    state.marks[which] = c;
    const { a, b } = state.marks;
    if (a && b) location.hash = `${base}/diff/${enc(a.checkpoint_ns)}/${enc(a.checkpoint_id)}/${enc(b.checkpoint_ns)}/${enc(b.checkpoint_id)}`;
    else route();
  };
  const left = h("div.panel", { id: "tree" },
    h("div.toolbar", {}, h("span.muted", {}, "A and B pick two checkpoints to compare."), ...writeActions(thread)),
    ...spaces.map((ns) => h("section.ns", { dataset: { ns } },
      h("h3", {}, ns === "" ? "root namespace" : "subgraph namespace " + ns),
      tree(byNs.get(ns), selected, pick))),
    data.truncated ? h("p.muted", {}, `The newest ${data.checkpoints.length} of ${data.total} checkpoints.`) : null);
  for (const [which, id] of Object.entries(marks)) {
    const chosen = id || (state.marks && state.marks.thread === thread && state.marks[which] && state.marks[which].checkpoint_id);
    if (chosen) left.querySelectorAll(`li.node`).forEach((li) => { if (li.dataset.id === chosen) li.querySelector(".diff-" + which).classList.add("on"); });
  }
  const right = h("div", { id: "detail" }, h("p.muted", {}, "Pick a checkpoint to see its state."));
  show(
    h("h2", {}, h("a", { href: "#/" }, "Threads"), " / ", h("span.id", { id: "thread-id" }, thread)),
    h("p.muted", {}, `${data.total} checkpoints, ${data.writes} pending writes, ${data.size} in Redis, TTL ${ttl(data.ttl_ms)}`),
    h("div.split", {}, left, right));
  if (mode === "cp") right.replaceChildren(await checkpointPanel(thread, args[0], args[1]));
  else if (mode === "diff") right.replaceChildren(await diffPanel(thread, ...args));
  else if (data.checkpoints.length) {
    const head = data.checkpoints.find((c) => c.checkpoint_ns === "") || data.checkpoints[0];
    right.replaceChildren(await checkpointPanel(thread, head.checkpoint_ns, head.checkpoint_id));
  }
}

// -- a checkpoint: state, conversation, pending writes, interrupts ---------------------------------

function isMessage(v) { return v && typeof v === "object" && typeof v.type === "string" && "content" in v; }

function message(m) {
  const content = typeof m.content === "string" ? m.content : JSON.stringify(m.content, null, 2);
  return h("div.msg." + m.type.replace(/[^a-z]/gi, ""), { dataset: { type: m.type } },
    h("span.role", {}, m.type + (m.name ? " · " + m.name : "") + (m.tool_call_id ? " · result of " + m.tool_call_id : "")),
    content,
    ...(m.tool_calls || []).map((c) => h("span.tool-call", {}, `→ ${c.name}(${JSON.stringify(c.args)})`, h("span.muted", {}, "  " + (c.id || "")))));
}

function interrupts(writes) {
  const found = writes.filter((w) => w.channel === "__interrupt__");
  return found.map((w) => h("div.interrupt", { id: "interrupt" },
    h("strong", {}, "⏸ Interrupted: the graph waits for input"),
    ...(Array.isArray(w.value) ? w.value : [w.value]).map((i) => json(i && i.interrupt !== undefined ? i.interrupt : i))));
}

async function checkpointPanel(thread, ns, id) {
  const t = await api("/api/checkpoint", { thread, ns, id });
  const conversations = [];
  const rest = {};
  for (const [ch, v] of Object.entries(t.values)) {
    if (Array.isArray(v) && v.length && v.every(isMessage)) conversations.push([ch, v]);
    else rest[ch] = v;
  }
  const base = "#/thread/" + enc(thread);
  return h("div.panel", { id: "checkpoint" },
    h("dl.kv", {},
      h("dt", {}, "checkpoint"), h("dd.id", { id: "checkpoint-id" }, t.checkpoint_id),
      h("dt", {}, "namespace"), h("dd", {}, t.checkpoint_ns === "" ? "root" : t.checkpoint_ns),
      h("dt", {}, "step"), h("dd", {}, t.metadata.step ?? ""),
      h("dt", {}, "source"), h("dd", {}, t.metadata.source ?? ""),
      h("dt", {}, "written"), h("dd", {}, when(t.ts)),
      h("dt", {}, "parent"), h("dd.id", {}, t.parent_id
        ? h("a", { href: `${base}/cp/${enc(t.checkpoint_ns)}/${enc(t.parent_id)}` }, t.parent_id) : "none")),
    t.parent_id ? h("div.toolbar", {}, h("a", { id: "diff-parent", href: `${base}/diff/${enc(t.checkpoint_ns)}/${enc(t.parent_id)}/${enc(t.checkpoint_ns)}/${enc(t.checkpoint_id)}` }, "diff with its parent")) : null,
    ...interrupts(t.pending_writes),
    ...conversations.map(([ch, msgs]) => h("section", {}, h("h3", {}, `conversation (${ch}, ${msgs.length} messages)`),
      h("div.conversation", { id: "conversation" }, ...msgs.map(message)))),
    h("h3", {}, "state"),
    Object.keys(rest).length ? h("table", { id: "state" }, h("tbody", {}, ...Object.entries(rest).map(([k, v]) =>
      h("tr", { dataset: { channel: k } }, h("th", {}, k), h("td", {}, json(v)))))) : h("p.muted", {}, "no other channels"),
    h("h3", {}, `pending writes (${t.pending_writes.length})`),
    t.pending_writes.length ? h("table", { id: "writes" },
      h("thead", {}, h("tr", {}, h("th", {}, "task"), h("th", {}, "channel"), h("th", {}, "value"))),
      h("tbody", {}, ...t.pending_writes.map((w) => h("tr", {}, h("td.id", {}, w.task_id), h("td", {}, w.channel), h("td", {}, json(w.value))))))
      : h("p.muted", {}, "none"),
    h("h3", {}, "metadata"), json(t.metadata));
}

// -- a diff between two checkpoints -----------------------------------------------------------------

const OPS = { "+": ["add", "added"], "-": ["remove", "removed"], "~": ["change", "changed"] };

async function diffPanel(thread, fromNs, from, toNs, to) {
  const d = await api("/api/diff", { thread, from, from_ns: fromNs, to, to_ns: toNs });
  const label = (c) => `step ${c.metadata.step ?? "?"} · ${c.checkpoint_id}`;
  const cell = (v) => (v === undefined ? "" : isMessage(v) ? message(v) : json(v));
  return h("div.panel", { id: "diff" },
    h("h3", {}, "Diff"),
    h("dl.kv", {}, h("dt", {}, "A (from)"), h("dd.id", {}, label(d.from)), h("dt", {}, "B (to)"), h("dd.id", {}, label(d.to))),
    d.changes.length ? h("table", { id: "changes" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "path"), h("th", {}, "A"), h("th", {}, "B"))),
      h("tbody", {}, ...d.changes.map((c) => h(`tr.op-${OPS[c.op][0]}`, { dataset: { path: c.path }, title: OPS[c.op][1] },
        h("td.op", {}, c.op), h("td.id", {}, c.path), h("td.old", {}, cell(c.old)), h("td.new", {}, cell(c.new))))))
      : h("p.muted", { id: "no-changes" }, "No difference in the channel values."));
}

// -- routing ------------------------------------------------------------------------------------------

async function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const parts = path.replace(/^\//, "").split("/"); // (an empty part is the root namespace)
  try {
    if (parts[0] === "thread" && parts[1]) await threadView(decodeURIComponent(parts[1]), parts.slice(2));
    else await threadsView(new URLSearchParams(query || ""));
    document.body.dataset.ready = location.hash;
  } catch (err) { fail(err); }
}

async function start() {
  try {
    state.info = await api("/api/info");
  } catch (err) { fail(err); return; }
  document.getElementById("about").textContent = `prefix ${state.info.prefix} · ${state.info.server}`;
  const mode = document.getElementById("mode");
  mode.textContent = state.info.allow_writes ? "writes allowed" : "read-only";
  if (state.info.allow_writes) mode.classList.add("writes");
  window.addEventListener("hashchange", route);
  route();
}

start();
