// usherd dashboard: polls the admin API every 2 s and redraws in place (no page reload).
// Counts and charts come first; holders and the queue are paged through the API (grouped,
// filtered and searched by the server), so the page stays light with 100,000 holders.
// Everything that comes from the server is inserted as text, never as HTML.
"use strict";

const POLL_MS = 2000;
const CHART_WINDOW_S = 3600;
const TOKEN_KEY = "usherd-token";
const SVG = "http://www.w3.org/2000/svg";

let token = null;
let timer = null;
const cards = new Map(); // feature name -> card elements

function $(id) { return document.getElementById(id); }

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

// --- token --------------------------------------------------------------------------

function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([0-9a-fA-F]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, m[1]);
    // Drop it from the address bar and history.
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function showLogin(message) {
  clearTimeout(timer);
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token-input").focus();
}

function showBoard() {
  $("login").hidden = true;
  $("board").hidden = false;
}

class Unauthorized extends Error {}

async function api(path, options) {
  const res = await fetch("/api/v1/" + path, {
    ...options,
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    cache: "no-store",
  });
  let body = null;
  try { body = await res.json(); } catch (_) { /* empty body */ }
  if (res.status === 401) throw new Unauthorized(body && body.error ? body.error.message : "unauthorized");
  if (!res.ok) {
    const e = new Error(body && body.error ? body.error.message : res.statusText);
    e.status = res.status;
    e.body = body;
    throw e;
  }
  return body;
}

// --- formatting ---------------------------------------------------------------------

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d";
}

function duration(s) {
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

// --- rendering ----------------------------------------------------------------------

function renderHealth(hl) {
  const box = $("health");
  box.replaceChildren(
    h("span", {}, h("span", { class: "dot" + (hl.status === "ok" ? "" : " bad") }), h("b", {}, hl.status === "ok" ? "healthy" : "degraded")),
    h("span", {}, "v", h("b", {}, hl.version)),
    h("span", {}, "up ", h("b", {}, duration(hl.uptime_s))),
    h("span", {}, h("b", { id: "health-connections" }, hl.connections), " connections"),
    h("span", {}, h("b", {}, hl.sessions), " sessions"),
    h("span", {}, "store ", h("b", {}, hl.store_ok ? "ok" : "failing")),
  );
  $("server-name").textContent = hl.server_name;
}

function card(name) {
  let c = cards.get(name);
  if (c) return c;
  const count = h("span", { class: "inuse", "data-testid": "inuse" }, "0");
  const total = h("span", { class: "total" }, "0");
  const fill = h("span");
  c = {
    root: h("article", { class: "card", "data-feature": name }),
    count, total, fill,
    bar: h("div", { class: "bar" }, fill),
    meta: h("div", { class: "meta" }),
    people: h("div", { class: "meta" }),
    chart: s("svg", { class: "chart", viewBox: "0 0 600 150", preserveAspectRatio: "none", role: "img" }),
    chartNote: h("div", { class: "meta" }),
    chartTitle: h("h3", {}, "Usage"),
    shown: null,
  };
  c.root.append(
    h("div", { class: "card-head" },
      h("div", {}, h("h2", {}, name), c.meta),
      h("div", { class: "count" }, count, h("span", { class: "of" }, " / ", total))),
    c.bar, c.people,
    c.chartTitle, c.chart, c.chartNote,
  );
  $("features").append(c.root);
  cards.set(name, c);
  return c;
}

// A token-based feature has no seats of its own: its card shows its checkouts and what a
// seat costs; the tokens they hold are counted, and their holders listed, in the pools.
function renderTokenFeature(name, t) {
  const c = card(name);
  c.count.textContent = t.in_use;
  if (c.shown !== null && c.shown !== t.in_use) chartsDue = 0;
  c.shown = t.in_use;
  c.total.textContent = "tokens";
  c.fill.style.width = "0%";
  c.bar.className = "bar";
  c.meta.textContent = t.vendor + " v" + t.version + " · token-based: a seat costs " +
    t.tokens.costs.map(k => k.tokens + (k.tokens === 1 ? " token" : " tokens") + " of " + k.pool).join(" or ") +
    (t.expires_at ? " · expires " + new Date(t.expires_at).toLocaleDateString() : " · permanent");
  c.people.replaceChildren(
    h("span", { class: "holders-count" }, number(t.tokens.tokens_in_use) + " tokens in use"));
}

function renderFeature(name, pools) {
  if (pools.length === 1 && pools[0].tokens) return renderTokenFeature(name, pools[0]);
  const c = card(name);
  const total = pools.reduce((a, p) => a + p.total, 0);
  const inUse = pools.reduce((a, p) => a + p.in_use, 0);
  const holders = pools.reduce((a, p) => a + p.holders, 0);
  c.count.textContent = inUse;
  // A change redraws the chart at once rather than at its next turn.
  if (c.shown !== null && c.shown !== inUse) chartsDue = 0;
  c.shown = inUse;
  c.total.textContent = total;
  const pct = total > 0 ? Math.min(100, (inUse / total) * 100) : (inUse > 0 ? 100 : 0);
  c.fill.style.width = pct + "%";
  c.bar.className = "bar" + (inUse > total ? " over" : inUse === total && total > 0 ? " full" : "");
  const expiry = pools.map(p => p.expires_at).filter(Boolean);
  c.meta.textContent = pools.map(p => p.vendor + " v" + p.version).join(", ") +
    (expiry.length ? " · expires " + new Date(Math.min(...expiry)).toLocaleDateString() : " · permanent") +
    (pools.some(p => p.overdraft > 0) ? " · overdraft " + pools.reduce((a, p) => a + p.overdraft, 0) : "");
  c.people.replaceChildren(
    h("span", { class: "holders-count" }, number(holders) + (holders === 1 ? " holder" : " holders")), " · ",
    h("button", { type: "button", class: "link", onclick: () => showHoldersOf(name) }, "list them"));
}

function number(n) { return Number(n).toLocaleString(); }

function stat(id, value, label) {
  return h("div", {}, h("b", { id, "data-value": value }, number(value)), h("span", {}, label));
}

function renderTotals(features, health, queueTotal) {
  // Token-based features hold seats of the pools: counting them again would count twice.
  const pools = features.filter(p => !p.tokens);
  const sum = k => pools.reduce((a, p) => a + p[k], 0);
  $("totals").replaceChildren(
    stat("total-in-use", sum("in_use"), "seats in use"),
    stat("total-seats", sum("total"), "seats licensed"),
    stat("total-holders", sum("holders"), "holders"),
    stat("total-sessions", health.sessions, "sessions"),
    stat("total-queued", queueTotal, "waiting"),
  );
}

// --- paged lists --------------------------------------------------------------------
// The API pages by key: a page's next_cursor starts the next one. `stack` keeps the
// cursor of every page up to the one shown, so "previous" goes back without offsets.

const PAGE = 50;

function pages() { return { stack: [null], at: 0, next: null }; }

const holderList = { ...pages(), feature: "", group: "", search: "", exact: null };
const queueList = pages();

function restart(list) { list.stack = [null]; list.at = 0; list.next = null; }

function pageQuery(list, params) {
  params.set("limit", PAGE);
  const cursor = list.stack[list.at];
  if (cursor) params.set("cursor", cursor);
  return params;
}

function holdersPath() {
  const p = new URLSearchParams();
  if (holderList.feature) p.set("feature", holderList.feature);
  if (holderList.search) p.set("q", holderList.search);
  if (holderList.exact) p.set(holderList.exact.field, holderList.exact.value);
  if (holderList.group) p.set("by", holderList.group);
  pageQuery(holderList, p);
  return (holderList.group ? "holders/groups?" : "holders?") + p;
}

function queuePath() { return "queue?" + pageQuery(queueList, new URLSearchParams()); }

function renderPager(list, answer, shown, name, onChange) {
  list.next = answer.next_cursor;
  const from = list.at * PAGE + 1;
  $(name + "-range").textContent = shown === 0 ? "none" :
    `${number(from)}–${number(from + shown - 1)} of ${number(answer.total)}`;
  $(name + "-range").dataset.total = answer.total;
  $(name + "-prev").disabled = list.at === 0;
  $(name + "-next").disabled = !list.next;
  $(name + "-prev").onclick = () => { if (list.at > 0) { list.at--; onChange(); } };
  $(name + "-next").onclick = () => {
    if (!list.next) return;
    list.stack.length = list.at + 1;
    list.stack.push(list.next);
    list.at++;
    onChange();
  };
}

function holderTags(x) {
  return [
    x.overdraft ? h("span", { class: "tag", title: "granted beyond the count (OVERDRAFT)" }, "overdraft") : "",
    x.borrowed_until ? h("span", { class: "tag", title: "borrowed for offline use until " + new Date(x.borrowed_until).toLocaleString() }, "borrowed") : "",
    x.lingering_until ? h("span", { class: "tag", title: "given back; held until " + new Date(x.lingering_until).toLocaleString() + " (LINGER)" }, "lingering") : "",
    !x.lingering_until && !x.borrowed_until && x.detached ? h("span", { class: "tag", title: "no connection: the client keeps its seats with UDP keepalives" }, "detached") : "",
    !x.lingering_until && !x.borrowed_until && !x.connected ? h("span", { class: "tag", title: "the connection dropped: the seats go back unless the client comes back within the reconnect grace" }, "disconnected") : "",
  ];
}

function renderHolders(answer) {
  const box = $("holders-list");
  if (holderList.group) {
    const groups = answer.groups;
    renderPager(holderList, answer, groups.length, "holders", refresh);
    if (groups.length === 0) return box.replaceChildren(h("p", { class: "empty" }, "Nobody holds a seat."));
    const field = holderList.group;
    box.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, field), h("th", { class: "num" }, "Holders"), h("th", { class: "num" }, "Seats"), h("th", {}, ""))),
      h("tbody", {}, ...groups.map(g => h("tr", { "data-group": g.key },
        h("td", {}, g.key || "(none)"),
        h("td", { class: "num" }, number(g.holders)),
        h("td", { class: "num" }, number(g.seats)),
        h("td", { class: "num" }, h("button", { type: "button", onclick: () => showExact(field, g.key) }, "Show")))))));
    return;
  }
  const holders = answer.holders;
  renderPager(holderList, answer, holders.length, "holders", refresh);
  if (holders.length === 0) {
    const filtered = holderList.feature || holderList.search || holderList.exact;
    return box.replaceChildren(h("p", { class: "empty" }, filtered ? "No holder matches." : "Nobody holds a seat."));
  }
  box.replaceChildren(h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Feature"), h("th", {}, "User"), h("th", {}, "Host"), h("th", {}, "Program"), h("th", { class: "num" }, "Seats"), h("th", {}, "For"), h("th", {}, ""))),
    h("tbody", {}, ...holders.map(x => h("tr", { "data-lease": x.id, "data-feature": x.feature },
      h("td", {}, x.feature),
      h("td", {}, x.user, ...holderTags(x)),
      h("td", {}, x.host + (x.display ? " " + x.display : "")),
      h("td", {}, x.program),
      h("td", { class: "num" }, x.count),
      h("td", { title: new Date(x.since).toLocaleString() }, ago(x.since)),
      h("td", { class: "num" }, x.borrowed_until ? "" : h("button", { type: "button", onclick: () => removeLease(x) }, "Remove")),
    )))));
}

function renderQueue(answer) {
  const queue = answer.queue;
  renderPager(queueList, answer, queue.length, "queue", refresh);
  if (queue.length === 0) return $("queue-list").replaceChildren(h("p", { class: "empty" }, "Nobody is waiting."));
  $("queue-list").replaceChildren(h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Feature"), h("th", {}, "#"), h("th", {}, "User"), h("th", {}, "Host"), h("th", { class: "num" }, "Seats"), h("th", {}, "Waiting"))),
    h("tbody", {}, ...queue.map(q => h("tr", { "data-queued": q.id },
      h("td", {}, q.feature), h("td", {}, q.position), h("td", {}, q.user), h("td", {}, q.host),
      h("td", { class: "num" }, q.count), h("td", {}, ago(q.since)))))));
}

function renderFeatureChoice(names) {
  const select = $("holders-feature");
  const have = [...select.options].slice(1).map(o => o.value);
  if (have.join("\n") === names.join("\n")) return;
  select.replaceChildren(h("option", { value: "" }, "all"), ...names.map(n => h("option", { value: n }, n)));
  select.value = names.includes(holderList.feature) ? holderList.feature : "";
}

function renderExact() {
  const chip = $("holders-exact");
  chip.hidden = !holderList.exact;
  if (holderList.exact) {
    chip.replaceChildren(holderList.exact.field + ": " + (holderList.exact.value || "(none)"),
      h("button", { type: "button", title: "clear", onclick: () => showExact(null) }, "×"));
  }
}

function showExact(field, value) {
  holderList.exact = field ? { field, value } : null;
  holderList.group = "";
  $("holders-group").value = "";
  restart(holderList);
  renderExact();
  refresh();
}

function showHoldersOf(feature) {
  holderList.feature = feature;
  $("holders-feature").value = feature;
  restart(holderList);
  refresh();
  $("holders").scrollIntoView({ block: "start" });
}

function wireControls() {
  $("holders-feature").addEventListener("change", ev => { holderList.feature = ev.target.value; restart(holderList); refresh(); });
  $("holders-group").addEventListener("change", ev => { holderList.group = ev.target.value; restart(holderList); refresh(); });
  let typing = null;
  $("holders-search").addEventListener("input", ev => {
    clearTimeout(typing);
    typing = setTimeout(() => { holderList.search = ev.target.value.trim(); restart(holderList); refresh(); }, 250);
  });
}

function renderChart(c, u) {
  const W = 600, H = 150, top = 14, bottom = 18;
  // Start shortly before the first change in the window (at least 5 minutes back), so a
  // quiet hour does not squash the activity against the right edge.
  const firstChange = u.points.length > 2 ? u.points[1][0] : u.to;
  const start = Math.max(u.from, Math.min(u.to - 300000, firstChange - (u.to - firstChange) * 0.15));
  const span = Math.max(1, u.to - start);
  const max = Math.max(1, u.total, u.peak[1]);
  const x = t => Math.min(W, Math.max(0, ((t - start) / span) * W));
  const y = v => top + (1 - v / max) * (H - top - bottom);
  c.chartTitle.textContent = "Usage since " + clock(start);
  const kids = [];
  for (const f of [0, 0.5, 1]) kids.push(s("line", { class: "grid", x1: 0, x2: W, y1: y(max * f), y2: y(max * f) }));
  if (u.total > 0) kids.push(s("line", { class: "cap", x1: 0, x2: W, y1: y(u.total), y2: y(u.total) }));
  // Steps: the level holds until the next point.
  let d = "";
  u.points.forEach(([t, v], i) => {
    if (i === 0) d += `M0,${y(v)}`;
    else d += `H${x(t)}V${y(v)}`;
  });
  d += `H${W}`;
  kids.push(s("path", { class: "area", d: d + `V${y(0)}H0Z` }));
  kids.push(s("path", { class: "line", d }));
  if (u.peak[1] > 0) {
    const px = Math.min(W - 4, Math.max(4, x(u.peak[0])));
    kids.push(s("circle", { class: "peak", cx: px, cy: y(u.peak[1]), r: 4 }));
    const left = px > 80;
    const label = s("text", { x: left ? px - 6 : px + 6, y: Math.max(11, y(u.peak[1]) - 6), "text-anchor": left ? "end" : "start" });
    label.textContent = "peak " + u.peak[1];
    kids.push(label);
  }
  for (const dn of u.denials) {
    const dx = Math.min(W - 5, Math.max(5, x(dn.at)));
    kids.push(s("path", { class: "denial", d: `M${dx - 4},${H - 2}L${dx + 4},${H - 2}L${dx},${H - 10}Z` }));
  }
  const from = s("text", { x: 2, y: H - 4 }); from.textContent = clock(start);
  const to = s("text", { x: W - 2, y: H - 4, "text-anchor": "end" }); to.textContent = clock(u.to);
  kids.push(from, to);
  c.chart.replaceChildren(...kids);
  c.chartNote.textContent = `peak ${u.peak[1]} of ${u.total}` +
    (u.peak[1] > 0 ? ` at ${clock(u.peak[0])}` : "") +
    ` · ${number(u.denied)} denial${u.denied === 1 ? "" : "s"}` +
    (u.complete ? "" : " · older records not read");
}

// --- actions ------------------------------------------------------------------------

async function removeLease(x) {
  if (!confirm(`Remove ${x.user}'s ${x.count} seat(s) of ${x.feature} on ${x.host}? The application will be told it lost the license.`)) return;
  try {
    await api("remove", { method: "POST", body: JSON.stringify({ lease_id: x.id }) });
    toast(`Removed lease ${x.id} (${x.feature}, ${x.user}).`);
    refresh();
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin(e.message);
    toast("Not removed: " + e.message);
  }
}

// --- polling ------------------------------------------------------------------------

let chartsDue = 0;
let generation = 0;

async function refresh() {
  clearTimeout(timer);
  // An answer to an older refresh (controls changed meanwhile) is dropped.
  const mine = ++generation;
  try {
    const [features, health, holders, queue] = await Promise.all([
      api("features"), api("health"), api(holdersPath()), api(queuePath()),
    ]);
    if (mine !== generation) return;
    showBoard();
    renderHealth(health);
    renderTotals(features, health, queue.total);
    const byName = new Map();
    for (const p of features) {
      if (!byName.has(p.feature)) byName.set(p.feature, []);
      byName.get(p.feature).push(p);
    }
    for (const [name, c] of cards) {
      if (!byName.has(name)) { c.root.remove(); cards.delete(name); }
    }
    for (const [name, pools] of byName) renderFeature(name, pools);
    renderFeatureChoice([...byName.keys()]);
    $("no-features").hidden = byName.size > 0;
    // A page emptied by changes (its holders left): back to the first page.
    const shown = holderList.group ? holders.groups : holders.holders;
    if (shown.length === 0 && holderList.at > 0) { restart(holderList); return refresh(); }
    if (queue.queue.length === 0 && queueList.at > 0) { restart(queueList); return refresh(); }
    renderHolders(holders);
    renderQueue(queue);
    // Charts read the usage log: every 10 s is plenty.
    if (Date.now() >= chartsDue) {
      chartsDue = Date.now() + 10000;
      await Promise.all([...byName.keys()].map(async name => {
        try {
          const u = await api(`usage?feature=${encodeURIComponent(name)}&window_s=${CHART_WINDOW_S}`);
          const c = cards.get(name);
          if (c) renderChart(c, u);
        } catch (e) {
          if (e instanceof Unauthorized) throw e;
        }
      }));
    }
    $("updated").textContent = new Date().toLocaleTimeString();
  } catch (e) {
    if (mine !== generation) return;
    if (e instanceof Unauthorized) return showLogin("That token was refused: " + e.message);
    $("updated").textContent = "failed (" + e.message + "), retrying";
  }
  if (mine === generation) timer = setTimeout(refresh, POLL_MS);
}

function start() {
  token = takeTokenFromFragment();
  wireControls();
  $("login-form").addEventListener("submit", ev => {
    ev.preventDefault();
    token = $("token-input").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    chartsDue = 0;
    refresh();
  });
  $("logout").addEventListener("click", () => showLogin("Token forgotten."));
  if (token) refresh(); else showLogin();
}

start();
