// The bakery status page: lists Pis, bakeforms and disks from the API, follows the event stream
// (read with fetch so it can send the bearer token; EventSource cannot) and refreshes on
// every event. The token, when the server asks for one, is kept in sessionStorage.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "bakeryToken";
const EVENTS_SHOWN = 50;
let lastEventId = null;
let refreshTimer = null;

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

class Unauthorized extends Error {}

async function api(path) {
  const resp = await fetch(API + path, { headers: headers() });
  if (resp.status === 401) throw new Unauthorized("the server wants a token");
  if (!resp.ok) {
    let message = resp.status + " " + resp.statusText;
    try { message = (await resp.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(path + ": " + message);
  }
  return resp.json();
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function time(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "";
}

function bytes(n) {
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + " KiB";
  return n + " B";
}

function showError(message) {
  const p = document.getElementById("error");
  p.textContent = message || "";
  p.hidden = !message;
}

function askToken(message) {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

function timeline(boot) {
  const list = el("ol", { class: "timeline" });
  for (const r of boot.requests) {
    const offset = r.time - boot.started;
    list.append(el("li", { class: "outcome-" + r.outcome },
      "+" + (offset / 1000).toFixed(2) + "s ", r.via, " ", r.file, " ", r.outcome,
      r.outcome === "sent" || r.outcome === "unconfirmed" ? " " + bytes(r.bytes) : "", r.sizeProbed ? " (size probed)" : ""));
  }
  return list;
}

// Fills an opened boot summary with the timeline of the Pi's latest boot.
async function loadTimeline(details, id) {
  try {
    const boots = await api("/pis/" + id + "/boots");
    const boot = boots.boots && boots.boots[0];
    details.querySelector(".timeline")?.remove();
    if (boot) details.append(timeline(boot));
  } catch (e) {
    showError(e.message);
  }
}

function lastBootCell(pi) {
  const b = pi.lastBoot;
  if (!b) return el("td", { class: "last-boot" }, "never");
  const sent = b.files ? b.files + " files, " + bytes(b.bytes) + " in " +
    (b.timeToLastFileMs / 1000).toFixed(2) + " s" : "nothing sent";
  const summary = el("summary", {},
    time(b.started) + ": " + sent + (b.failed ? ", " + b.failed + " failed" : ""));
  const details = el("details", {}, summary);
  details.addEventListener("toggle", () => { if (details.open) loadTimeline(details, pi.id); });
  return el("td", { class: "last-boot" }, details);
}

async function renderPis() {
  const pis = Object.values(await api("/pis")).sort((a, b) => a.id.localeCompare(b.id));
  const open = new Set([...document.querySelectorAll("#pis details[open]")]
    .map((d) => d.closest("tr").dataset.id));
  const body = el("tbody");
  pis.forEach((pi) => {
    const state = pi.state || { 1: "fridge", 2: "baked", 3: "preparing" }[pi.status];
    const disks = (pi.disks || []).map((d, j) =>
      el("div", { class: "mono" }, (j === 0 ? "root " : "") + d.id.slice(0, 8) + (d.size ? " " + d.size + " MiB" : "")));
    const row = el("tr", { id: "pi-" + pi.id, "data-id": pi.id, "data-state": state },
      el("td", { class: "mono" }, pi.id),
      el("td", {}, el("span", { class: "state state-" + state }, state),
        pi.lastError ? el("div", { class: "error" }, pi.lastError) : null),
      el("td", { class: "power power-" + (pi.powerState || "unknown"),
        title: pi.powerStateAt ? "since " + time(pi.powerStateAt) : "never asked" },
        pi.powerState || ""),
      el("td", {}, pi.sourceBakeform ? pi.sourceBakeform.name : ""),
      el("td", { class: "mono" }, pi.address || ""),
      el("td", {}, ...disks),
      lastBootCell(pi));
    body.append(row);
  });
  document.querySelector("#pis tbody").replaceWith(body);
  for (const id of open) {
    const d = document.querySelector("#pi-" + id + " details");
    if (d) d.open = true;
  }
  const by = {};
  for (const pi of pis) { const s = pi.state || "?"; by[s] = (by[s] || 0) + 1; }
  document.getElementById("counts").textContent =
    pis.length + " Pis" + Object.entries(by).map(([s, n]) => ", " + n + " " + s).join("");
}

async function renderBakeforms() {
  const forms = Object.values(await api("/bakeforms")).sort((a, b) => a.name.localeCompare(b.name));
  const body = el("tbody");
  for (const f of forms) {
    const state = f.state || "ready";
    body.append(el("tr", { id: "bakeform-" + f.name, "data-state": state },
      el("td", {}, f.name),
      el("td", {}, el("span", { class: "state state-" + state }, state)),
      el("td", { class: "error" }, f.error || "")));
  }
  document.querySelector("#bakeforms tbody").replaceWith(body);
}

// Every disk: size, the Pi it is attached to, and whether it is a Pi's root (size 0 on the
// wire), attached, free, or goes with its Pi on unbake (ephemeral).
async function renderDisks() {
  const list = await api("/disks");
  const disks = Object.values(list.disks || {}).sort((a, b) => a.id.localeCompare(b.id));
  const body = el("tbody");
  for (const d of disks) {
    const root = d.size === 0;
    const state = root ? "root" : d.attachedTo ? (d.ephemeral ? "attached, ephemeral" : "attached") : "free";
    body.append(el("tr", { id: "disk-" + d.id, "data-state": d.attachedTo ? "attached" : "free" },
      el("td", { class: "mono" }, d.id),
      el("td", {}, root ? "" : d.size + " MiB"),
      el("td", { class: "mono" }, d.attachedTo || ""),
      el("td", {}, el("span", { class: "state state-" + (d.attachedTo ? "baked" : "fridge") }, state))));
  }
  document.querySelector("#disks tbody").replaceWith(body);
}

function addEvent(e) {
  const list = document.getElementById("events");
  const what = [e.pi && "pi " + e.pi, e.bakeform && "bakeform " + e.bakeform, e.disk && "disk " + e.disk]
    .filter(Boolean).join(", ");
  list.prepend(el("li", { "data-id": e.id, "data-kind": e.kind },
    "#" + e.id + " " + time(e.time) + " " + e.kind + (what ? " " + what : "") + (e.message ? ": " + e.message : "")));
  while (list.children.length > EVENTS_SHOWN) list.lastChild.remove();
}

async function refresh() {
  try {
    await Promise.all([renderPis(), renderBakeforms(), renderDisks()]);
    showError(null);
    document.getElementById("login").hidden = true;
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e instanceof Unauthorized) askToken(token() ? "that token was refused" : "");
    else showError(e.message);
  }
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 150);
}

function setLive(on) {
  const badge = document.getElementById("live");
  badge.textContent = on ? "live" : "offline";
  badge.className = "badge " + (on ? "on" : "off");
}

// Reads the SSE stream with fetch: `id:`/`data:` lines, an empty line ends an event.
async function follow() {
  for (;;) {
    try {
      const h = headers();
      if (lastEventId !== null) h["Last-Event-ID"] = String(lastEventId);
      const resp = await fetch(API + "/events/stream", { headers: h });
      if (resp.status === 401) { setLive(false); askToken(""); return; }
      if (!resp.ok || !resp.body) throw new Error("event stream: " + resp.status);
      setLive(true);
      refreshSoon();
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let data = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl).replace(/\r$/, "");
          buffer = buffer.slice(nl + 1);
          if (line === "") {
            if (data) {
              try { const e = JSON.parse(data); lastEventId = e.id; addEvent(e); } catch (_) { /* skip */ }
              refreshSoon();
            }
            data = "";
          } else if (line.startsWith("data:")) {
            data += line.slice(5).trimStart();
          }
        }
      }
    } catch (e) {
      showError(e.message);
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

async function start() {
  try {
    const head = await api("/events?since=0&limit=1");
    const recent = await api("/events?since=" + Math.max(0, head.lastId - EVENTS_SHOWN));
    document.getElementById("events").replaceChildren();
    for (const e of recent.events) addEvent(e);
    lastEventId = recent.lastId;
  } catch (e) {
    if (e instanceof Unauthorized) { askToken(token() ? "that token was refused" : ""); return; }
    showError(e.message);
  }
  await refresh();
  follow();
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  start();
});

// Boots make no events: refresh now and then so last boots stay current.
setInterval(() => { if (document.body.dataset.loaded) refreshSoon(); }, 10000);

start();
