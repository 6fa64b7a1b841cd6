// The Review page's pair pane: holds the next pairs of this reviewer's queue in the browser, shows
// the next one the moment a key is pressed, and sends the decisions to the server behind it.
//
// Decisions wait in an outbox (kept in localStorage, so a reload or a closed tab loses none) that
// goes to the server as the component's "outbox" state; the server applies each once (by its id),
// answers with acks, and refills the queue. A refused decision (a conflict, a lost lease) brings
// its pair back first, with the reason. Every text from a model or a document arrives as HTML the
// server escaped; what this file writes itself goes through textContent.

const G = (window.__lbReview = window.__lbReview || { scopes: {}, listening: false, active: null, reviewer: null, times: {} });
// times[decision id] = [made, stored] (performance.now()): what bench/bench_review.py reads.
const KEYS = { a: "approve", s: "swap", x: "reject", k: "skip", u: "undo" };
const DONE = { approve: "Approved", swap: "Swapped and approved", reject: "Rejected", skip: "Skipped",
               pick_chosen: "New chosen for", pick_rejected: "New rejected for", edit_chosen: "Corrected the chosen of",
               undo: "Undid your decision on" };
const CLOSING = new Set(["approve", "swap", "reject"]);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function uid() {
  return (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/-/g, "");
}

function scope(data) {
  let s = G.scopes[data.scope];
  if (!s) {
    s = G.scopes[data.scope] = { outbox: [], decided: new Map(), views: new Map(), front: [], notes: new Map(),
                                 history: [], order: [], shown: null, msg: null, diff: !!data.diff, more: false, asked: "" };
    // This tab's outbox survives a reload (sessionStorage keeps the tab's id); a closed tab's is adopted by
    // the next one on this workspace and reviewer. A live tab's adopted too is harmless: decisions apply once.
    let tab = null;
    try { tab = sessionStorage.getItem("lb-review-tab") || uid(); sessionStorage.setItem("lb-review-tab", tab); } catch (e) { tab = uid(); }
    s.key = `lb-review:${data.scope}:${tab}`;
    const seen = new Set();
    try {
      for (const k of Object.keys(localStorage)) {
        if (!k.startsWith(`lb-review:${data.scope}:`)) continue;
        for (const d of JSON.parse(localStorage.getItem(k) || "[]")) if (d && d.id && !seen.has(d.id)) { seen.add(d.id); s.outbox.push(d); }
        if (k !== s.key) localStorage.removeItem(k);
      }
    } catch (e) { /* no storage: the session still works */ }
    for (const d of s.outbox) if (d.pair_id && d.action !== "undo") s.decided.set(d.pair_id, d.id);
    s.resend = s.outbox.length > 0;
  }
  return s;
}

function save(s) {
  try {
    if (s.outbox.length) localStorage.setItem(s.key, JSON.stringify(s.outbox));
    else localStorage.removeItem(s.key);
  } catch (e) { /* private mode or full: the session still works */ }
}

function send(s) {
  save(s);
  s.set("outbox", s.outbox.slice());
}

function merge(s, data) {
  for (const [id, v] of Object.entries(data.views || {})) s.views.set(id, v);
  for (const a of data.acks || []) {
    const i = s.outbox.findIndex((d) => d.id === a.id);
    if (i < 0) continue;
    const d = s.outbox.splice(i, 1)[0];
    if (G.times[d.id]) G.times[d.id][1] = performance.now();
    if (s.decided.get(d.pair_id) === d.id) s.decided.delete(d.pair_id);
    if (a.pair_id && a.ok && d.action === "undo_last") { s.front = [a.pair_id, ...s.front.filter((x) => x !== a.pair_id)]; }
    if (!a.ok) {
      s.decided.delete(a.pair_id);
      if (a.pair_id && s.views.has(a.pair_id)) {
        s.front = [a.pair_id, ...s.front.filter((x) => x !== a.pair_id)];
        s.notes.set(a.pair_id, a.reason_html);
      } else {
        s.msg = { html: a.reason_html, bad: true };
      }
    }
  }
  if (data.acks && data.acks.length) save(s);
  if (s.queue !== data.queue) {  // another queue (a filter changed): start from its first pair
    s.queue = data.queue;
    s.front = [];
    s.notes.clear();
    s.current = null;
  }
  s.order = data.order || [];
  // The pair on screen stays there until it is decided, even if the server no longer hands it out
  // (a lease lost meanwhile): the reviewer is reading it, and the version check guards the decision.
  if (s.current && !s.decided.has(s.current) && !s.order.includes(s.current) && !s.front.includes(s.current)) s.front.unshift(s.current);
  // Front pairs the server answered for (a new version) lose their "updating" mark.
  for (const id of s.front) { const v = s.views.get(id); if (v && v.stale && data.views && data.views[id]) v.stale = false; }
  const missing = s.order.filter((id) => !s.views.has(id));
  if (missing.length && missing.join() !== s.asked) { s.asked = missing.join(); s.set("missing", missing); }
}

function current(s) {
  const seen = new Set();
  for (const id of [...s.front, ...s.order]) {
    if (seen.has(id)) continue;
    seen.add(id);
    if (!s.decided.has(id) && s.views.has(id)) return s.views.get(id);
  }
  return null;
}

function pending(s) {
  let n = 0;
  for (const d of s.outbox) n += CLOSING.has(d.action) ? 1 : d.action.startsWith("undo") ? -1 : 0;
  return n;
}

function decide(s, action, extra) {
  const v = current(s);
  if (action === "undo") return undo(s);
  if (!v) return;
  if (action === "skip" && s.notes.has(v.id) && v.status !== "pending") {  // keep theirs: nothing to record
    s.front = s.front.filter((x) => x !== v.id);
    s.notes.delete(v.id);
    s.decided.set(v.id, "kept");
    s.msg = { text: `Kept the other reviewer's decision on pair ${v.id}` };
    return render(s);
  }
  const d = { id: uid(), pair_id: v.id, action, version: v.version, ...(extra || {}) };
  G.times[d.id] = [performance.now(), null];
  s.outbox.push(d);
  s.notes.delete(v.id);
  s.history.push({ pair_id: v.id, action, version: v.version, id: d.id });
  if (action.startsWith("pick") || action === "edit_chosen") {  // the pair stays open, at its next version
    v.version += 1;
    v.stale = true;
    if (!s.front.includes(v.id)) s.front.unshift(v.id);
  } else {
    s.decided.set(v.id, d.id);
    s.front = s.front.filter((x) => x !== v.id);
  }
  s.msg = { text: `${DONE[action]} pair ${v.id}`, undo: true };
  send(s);
  render(s);
}

function undo(s) {
  const h = s.history.pop();
  if (!h) {
    s.outbox.push({ id: uid(), action: "undo_last" });
    s.msg = { text: "Undoing your last decision…" };
    send(s);
    return render(s);
  }
  s.decided.delete(h.pair_id);
  s.front = [h.pair_id, ...s.front.filter((x) => x !== h.pair_id)];
  const v = s.views.get(h.pair_id);
  if (h.action === "skip") {
    s.msg = { text: `Back to pair ${h.pair_id} (the skip stays recorded)` };
    return render(s);
  }
  s.outbox.push({ id: uid(), pair_id: h.pair_id, action: "undo", version: h.version + 1 });
  if (v) { v.version = h.version + 2; v.stale = true; }
  s.msg = { text: `Undid your decision on pair ${h.pair_id}` };
  send(s);
  render(s);
}

function isTyping(t) {
  if (!t || !t.tagName) return false;
  if (t.isContentEditable || t.tagName === "TEXTAREA" || t.tagName === "SELECT") return true;
  if (t.tagName !== "INPUT") return false;
  return !["checkbox", "radio", "button", "submit", "reset", "range", "color", "file", "image"].includes((t.type || "text").toLowerCase());
}

function onKey(e) {
  const s = G.active;
  if (!s || !s.root || !s.root.isConnected || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  const target = (e.composedPath && e.composedPath()[0]) || e.target;
  if (isTyping(target)) return;
  const action = KEYS[(e.key || "").toLowerCase()];
  if (!action) return;
  e.preventDefault();
  e.stopPropagation();
  decide(s, action);
}

function button(label, key, action, primary) {
  const b = el("button", "lb-btn" + (primary ? " lb-primary" : ""));
  b.append(label, el("kbd", null, key));
  b.dataset.act = action;
  return b;
}

function html(cls, markup) {
  const e = el("div", cls);
  e.innerHTML = markup;  // escaped on the server (core/present/pane.py)
  return e;
}

function renderHead(s) {
  const p = s.data.progress || {};
  const n = Math.max(0, pending(s));
  const done = (p.done || 0) + n, left = Math.max(0, (p.left || 0) - n);
  const head = s.root.querySelector(".lb-head");
  head.replaceChildren();
  const bar = el("div", "lb-bar");
  const fill = el("div", "lb-fill");
  fill.style.width = (p.total ? (100 * done) / p.total : 0).toFixed(1) + "%";
  bar.append(fill);
  const line = el("div", "lb-progress", `${done} done · ${left} left · you ${(p.you || 0) + n}`);
  if (p.others_html) line.append(html("lb-others", " · " + p.others_html));
  const sync = el("span", "lb-sync", s.outbox.length ? ` · ${s.outbox.length} sending…` : " · all stored");
  line.append(sync);
  head.append(bar, line);
  if (s.msg) {
    const m = el("div", "lb-confirm" + (s.msg.bad ? " lb-bad" : ""));
    if (s.msg.html !== undefined) m.innerHTML = s.msg.html; else m.textContent = s.msg.text;
    if (s.msg.undo) { const u = button("Undo", "U", "undo"); u.classList.add("lb-link"); m.append(" ", u); }
    head.append(m);
  }
}

function renderPair(s, v) {
  const body = s.root.querySelector(".lb-body");
  body.replaceChildren();
  s.shown = v ? `${v.id}@${v.version}@${v.diff}@${s.more}@${!!v.stale}@${s.notes.get(v.id) || ""}` : null;
  if (!v) {
    const waiting = s.outbox.length > 0 || !s.data.empty;
    body.append(el("div", waiting ? "lb-wait" : "lb-empty", waiting ? "Loading the next pairs…" : "Nothing left in this queue."));
    if (!waiting) body.append(button("Undo my last decision", "U", "undo"));
    return;
  }
  if (s.notes.has(v.id)) {
    const w = html("lb-warn", s.notes.get(v.id));
    w.append(el("div", null, `Below is its current state (${v.status}). Decide again, or press K to keep theirs and go on.`));
    body.append(w);
  }
  if (v.stale) body.append(el("div", "lb-wait", "Updating this pair…"));
  const bar = el("div", "lb-buttons");
  bar.append(button("Approve", "A", "approve", true), button("Swap", "S", "swap"), button("Reject pair", "X", "reject"),
             button("Skip", "K", "skip"), button("Undo", "U", "undo"));
  bar.querySelector('[data-act="swap"]').title = "swap chosen and rejected, and approve";
  body.append(bar);
  const doc = el("details", "lb-doc");
  doc.open = true;
  const sum = el("summary");
  sum.innerHTML = v.title_html;
  doc.append(sum);
  const docBody = el("div", v.image && (v.image.src || v.image.note) ? "lb-doc-cols" : "");
  docBody.append(html("lb-doc-text", v.doc_html));
  if (v.image && v.image.src) { const img = el("img", "lb-page"); img.alt = "page image"; img.src = v.image.src; docBody.append(img); }
  else if (v.image && v.image.note) docBody.append(el("div", "lb-caption", v.image.note));
  doc.append(docBody);
  body.append(doc);
  const diff = el("label", "lb-toggle");
  const box = el("input");
  box.type = "checkbox";
  box.checked = !!s.diff;
  box.disabled = !v.has_reference;
  box.dataset.act = "diff";
  diff.append(box, " Diff against the reference");
  body.append(diff);
  const sides = el("div", "lb-sides");
  for (const side of [v.chosen, v.rejected]) {
    const col = html("lb-side", side.html);
    if (s.diff && side.diff) col.append(html("lb-diff", side.diff));
    else if (s.diff && v.has_reference) col.append(el("div", "lb-wait", "Loading the diff…"));
    sides.append(col);
  }
  body.append(sides);
  body.append(html("lb-pair-id", v.footer_html));
  const more = el("label", "lb-toggle");
  const mbox = el("input");
  mbox.type = "checkbox";
  mbox.checked = s.more;
  mbox.dataset.act = "more";
  more.append(mbox, " Pick another candidate, or correct the chosen");
  body.append(more);
  if (s.more) body.append(renderMore(s, v));
}

function renderMore(s, v) {
  const box = el("div", "lb-more");
  const chosenScore = v.chosen.score;
  v.candidates.forEach((c, i) => {
    const row = el("div", "lb-cand" + (c.role ? " lb-" + c.role : ""));
    const head = html("lb-cand-label", c.label_html);
    if (c.role) head.prepend(el("span", "lb-role", c.role === "chosen" ? "current chosen" : "current rejected"));
    row.append(head, html("lb-cand-preview", c.preview_html));
    const acts = el("div", "lb-cand-acts");
    const asChosen = el("button", "lb-btn lb-small", "Use as chosen");
    asChosen.dataset.act = "pick_chosen";
    asChosen.dataset.cand = i;  // an index: ids come from documents, and stay out of the markup
    asChosen.disabled = c.role === "chosen";
    const asRejected = el("button", "lb-btn lb-small", "Use as rejected");
    asRejected.dataset.act = "pick_rejected";
    asRejected.dataset.cand = i;
    asRejected.disabled = c.role === "rejected";
    acts.append(asChosen, asRejected);
    if (c.score !== null && chosenScore !== null && c.score > chosenScore && c.role !== "chosen")
      acts.append(el("span", "lb-warn-inline", (c.role === "rejected" ? "the rejected scores above the chosen" : "as rejected it would score above the chosen")
                                                + ` (${c.score.toFixed(2)} > ${chosenScore.toFixed(2)})`));
    row.append(acts);
    box.append(row);
  });
  const label = el("label", "lb-label", "Corrected chosen");
  const area = el("textarea", "lb-edit");
  area.value = v.chosen_text;
  area.rows = 8;
  label.append(area);
  const save = el("button", "lb-btn", "Save corrected chosen");
  save.dataset.act = "edit_chosen";
  box.append(label, save);
  return box;
}

function render(s) {
  renderHead(s);
  const v = current(s);
  s.current = v ? v.id : null;
  const key = v ? `${v.id}@${v.version}@${v.diff}@${s.more}@${!!v.stale}@${s.notes.get(v.id) || ""}` : null;
  if (key !== s.shown || !v) renderPair(s, v);
}

function onClick(e) {
  const s = G.active;
  const t = e.target.closest && e.target.closest("[data-act]");
  if (!s || !t || !s.root.contains(t)) return;
  const act = t.dataset.act;
  if (act === "diff") {
    s.diff = t.checked;
    s.set("diff", s.diff);
    s.shown = null;
    return render(s);
  }
  if (act === "more") { s.more = t.checked; s.shown = null; return render(s); }
  const v = current(s);
  const cand = v && t.dataset.cand !== undefined ? v.candidates[Number(t.dataset.cand)] : null;
  if (act === "pick_chosen" && cand) return decide(s, act, { chosen_candidate_id: cand.id });
  if (act === "pick_rejected" && cand) return decide(s, act, { rejected_candidate_id: cand.id });
  if (act === "edit_chosen") {
    const text = s.root.querySelector(".lb-edit").value;
    if (!text.trim()) { s.msg = { text: "A corrected chosen text cannot be empty.", bad: true }; return render(s); }
    return decide(s, act, { chosen_text: text });
  }
  decide(s, act);
}

export default function (component) {
  const { data, setStateValue, parentElement } = component;
  const s = scope(data);
  s.set = setStateValue;
  s.data = data;
  let root = parentElement.querySelector(".lb-pane");
  if (!root) {
    root = el("div", "lb-pane");
    root.tabIndex = -1;
    root.append(el("div", "lb-head"), el("div", "lb-body"));
    parentElement.append(root);
    root.addEventListener("click", onClick);
    s.shown = null;
  }
  s.root = root;
  G.active = s;
  merge(s, data);
  if (!G.listening) { document.addEventListener("keydown", onKey, true); G.listening = true; }
  if (G.reviewer !== data.reviewer) {  // just named: the keys go to the pane, not to the name field
    G.reviewer = data.reviewer;
    const a = document.activeElement;
    if (a && a !== document.body && isTyping(a)) a.blur();
    root.focus({ preventScroll: true });
  }
  render(s);
  if (s.resend) { s.resend = false; if (s.outbox.length) send(s); }  // decisions a reload left unsent
  return () => { if (G.active === s) G.active = null; };
}
