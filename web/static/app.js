// dfstream's page: the stream grid, the websocket with reconnect back-off, the token, webcam and camera
// controls, and the alert feed. Plain ES modules, no build step, nothing loaded from elsewhere.
//
// window.__dfstream exposes the page's state (read by the browser tests and handy in the console).

import { Tile } from "./tile.js";
import { cameraErrorText, startWebcam } from "./rtc.js";
import { percent } from "./draw.js";

const TOKEN_KEY = "dfstream-token";
const WS_BACKOFF_MAX_S = 30;
const MAX_ALERTS_SHOWN = 50;
const SNAPSHOT_RETRIES = 20; // evidence is written in the background: the first tries may 404

const $ = (sel) => document.querySelector(sel);

const state = {
  ready: false,
  auth: "unknown", // ok | needed | refused
  ws: "connecting", // connecting | open | reconnecting
  wsAttempt: 0,
  wsRetryInS: null,
  streams: {},
  alerts: {},
  notice: null,
  webcam: null, // {stream, peer} while this page sends its camera
  inspect: (name) => (tiles.get(name) ? tiles.get(name).inspect() : null),
};
window.__dfstream = state;

const tiles = new Map();
let knownStreams = new Set();
let ws = null;

// ------------------------------------------------------------------ token
function takeTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash); // keep it out of history and screenshots
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function withToken(path) {
  const t = token();
  if (!t) return path;
  return `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(t)}`;
}

class HttpError extends Error {
  constructor(status, text) {
    super(text || `HTTP ${status}`);
    this.status = status;
  }
}

/** fetch with the token; JSON in and out. Throws HttpError (status, server's words). */
async function api(path, { method = "GET", json, keepalive = false } = {}) {
  const init = { method, headers: {}, keepalive };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  const t = token();
  if (t) init.headers.Authorization = `Bearer ${t}`;
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new HttpError(0, "The server cannot be reached.");
  }
  if (resp.status === 401) {
    askForToken(Boolean(t));
    throw new HttpError(401, "This server needs its access token.");
  }
  const text = await resp.text();
  if (!resp.ok) throw new HttpError(resp.status, text.trim() || resp.statusText);
  return text ? JSON.parse(text) : null;
}

function askForToken(refused) {
  state.auth = refused ? "refused" : "needed";
  $("#conn").textContent = "Access token needed";
  document.body.dataset.auth = state.auth;
  const dialog = $("#token-dialog");
  $("#token-error").textContent = refused ? "That token was refused. Check the address `dfstream serve` printed." : "";
  if (!dialog.open) {
    if (dialog.showModal) dialog.showModal();
    else dialog.setAttribute("open", "");
  }
  $("#token-input").focus();
}

$("#token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("#token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("#token-input").value = "";
  $("#token-dialog").close();
  boot();
});

// ------------------------------------------------------------------ notices
let noticeTimer = null;
function notice(text, kind = "info", sticky = false) {
  const n = $("#notice");
  state.notice = text ? { text, kind } : null;
  n.textContent = text || "";
  n.dataset.kind = kind;
  n.hidden = !text;
  clearTimeout(noticeTimer);
  if (text && !sticky) noticeTimer = setTimeout(() => notice(null), 15000);
}

function connBanner() {
  const c = $("#conn");
  c.dataset.state = state.ws;
  if (state.ws === "open") c.textContent = "Live";
  else if (state.ws === "connecting") c.textContent = "Connecting…";
  else c.textContent = `Disconnected from the server. Reconnecting in ${state.wsRetryInS} s (attempt ${state.wsAttempt})…`;
}

// ------------------------------------------------------------------ streams
function hasStream(name) {
  return knownStreams.has(name);
}

function ensureTile(name) {
  let tile = tiles.get(name);
  if (tile) return tile;
  tile = new Tile(name, { api, removeStream, hasStream });
  tiles.set(name, tile);
  state.streams[name] = tile.state;
  $("#grid").append(tile.el);
  $("#empty").hidden = true;
  if (!(state.webcam && state.webcam.stream === name)) tile.startRelay();
  return tile;
}

function dropTile(name) {
  const tile = tiles.get(name);
  if (!tile) return;
  tile.close();
  tiles.delete(name);
  delete state.streams[name];
  if (state.webcam && state.webcam.stream === name) setWebcam(null);
  $("#empty").hidden = tiles.size > 0;
}

function reconcile(streams) {
  knownStreams = new Set(Object.keys(streams));
  for (const [name, status] of Object.entries(streams)) ensureTile(name).onStatus({ stream: name, ...status });
  for (const name of [...tiles.keys()]) {
    if (!knownStreams.has(name) && !(state.webcam && state.webcam.stream === name && state.webcam.pending)) dropTile(name);
  }
}

async function removeStream(name) {
  try {
    if (state.webcam && state.webcam.stream === name && state.webcam.peer) {
      await api(`/offer/${state.webcam.peer}`, { method: "DELETE" }).catch(() => api(`/api/streams/${encodeURIComponent(name)}`, { method: "DELETE" }));
    } else {
      await api(`/api/streams/${encodeURIComponent(name)}`, { method: "DELETE" });
    }
  } catch (err) {
    if (err.status !== 404) return notice(`Could not remove ${name}: ${err.message}`, "error");
  }
  knownStreams.delete(name);
  dropTile(name);
}

// ------------------------------------------------------------------ websocket
function connectWs() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const sock = new WebSocket(`${proto}//${location.host}${withToken("/ws")}`);
  ws = sock;
  sock.onopen = () => {
    state.ws = "open";
    state.wsAttempt = 0;
    state.wsRetryInS = null;
    connBanner();
    for (const tile of tiles.values()) tile.setOffline(false);
    api("/api/streams").then(reconcile).catch(() => {});
  };
  sock.onmessage = (e) => {
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    dispatch(msg);
  };
  sock.onclose = () => {
    if (ws !== sock) return;
    state.wsAttempt += 1;
    const delay = Math.min(WS_BACKOFF_MAX_S, 2 ** (state.wsAttempt - 1)) * (0.75 + Math.random() * 0.5);
    state.ws = "reconnecting";
    state.wsRetryInS = Math.max(1, Math.round(delay));
    connBanner();
    for (const tile of tiles.values()) tile.setOffline(true);
    const tick = setInterval(() => {
      state.wsRetryInS = Math.max(0, state.wsRetryInS - 1);
      if (state.ws === "reconnecting") connBanner();
    }, 1000);
    setTimeout(() => {
      clearInterval(tick);
      // a refused token closes the socket too: ask the API, which says so
      api("/api/streams").then(() => connectWs(), (err) => { if (err.status !== 401) connectWs(); });
    }, delay * 1000);
  };
}

function dispatch(msg) {
  if (msg.type === "overlay") {
    const tile = tiles.get(msg.stream);
    if (tile) tile.onOverlay(msg);
  } else if (msg.type === "status") {
    if (msg.removed) {
      knownStreams.delete(msg.stream);
      dropTile(msg.stream);
    } else if (msg.stream) {
      knownStreams.add(msg.stream);
      ensureTile(msg.stream).onStatus(msg);
    }
  } else if (msg.type === "alert") {
    onAlert(msg);
  }
}

// ------------------------------------------------------------------ alerts
function evidenceUrl(alert, kind) {
  const path = alert.evidence && alert.evidence[kind];
  if (!path) return null;
  const file = String(path).split(/[\\/]/).pop();
  return withToken(`/evidence/${encodeURIComponent(alert.id)}/${encodeURIComponent(file)}`);
}

function onAlert(msg) {
  const known = state.alerts[msg.id];
  const a = known || { id: msg.id, snapshot: "none", clip: null };
  Object.assign(a, {
    event: msg.event, stream: msg.stream, track: msg.track, started_at: msg.started_at, ended_at: msg.ended_at,
    score_max: msg.score_max, engines: msg.engines,
  });
  state.alerts[msg.id] = a;
  let li = document.getElementById(`alert-${msg.id}`);
  if (!li) {
    li = document.createElement("li");
    li.id = `alert-${msg.id}`;
    li.className = "alert";
    const img = document.createElement("img");
    img.alt = `face in ${msg.stream}, track ${msg.track}`;
    const body = document.createElement("div");
    body.className = "alert-body";
    li.append(img, body);
    $("#alerts").prepend(li);
    const src = evidenceUrl(msg, "snapshot");
    if (src) {
      a.snapshot = "pending";
      let tries = 0;
      img.onload = () => { a.snapshot = img.naturalWidth > 0 ? "loaded" : "error"; li.dataset.snapshot = a.snapshot; };
      img.onerror = () => {
        tries += 1;
        if (tries > SNAPSHOT_RETRIES) { a.snapshot = "error"; li.dataset.snapshot = "error"; img.alt = "snapshot unavailable"; return; }
        setTimeout(() => { img.src = `${src}${src.includes("?") ? "&" : "?"}try=${tries}`; }, 500);
      };
      img.src = src;
    } else {
      img.alt = "no snapshot";
    }
    a.clip = evidenceUrl(msg, "clip");
    while ($("#alerts").children.length > MAX_ALERTS_SHOWN) $("#alerts").lastElementChild.remove();
  }
  li.dataset.event = msg.event;
  const body = li.querySelector(".alert-body");
  body.replaceChildren();
  const title = document.createElement("strong");
  title.textContent = `${msg.stream} · track #${msg.track}`;
  const when = new Date(msg.started_at * 1000).toLocaleTimeString();
  const what = document.createElement("div");
  what.textContent = msg.event === "end"
    ? `fake, peak ${percent(msg.score_max)} · ${when}–${new Date((msg.ended_at || msg.ts) * 1000).toLocaleTimeString()}`
    : `FAKE now, peak ${percent(msg.score_max)} · since ${when}`;
  const engines = document.createElement("div");
  engines.className = "engines";
  engines.textContent = Object.entries(msg.engines || {}).map(([k, v]) => `${k} ${percent(v)}`).join(" · ");
  body.append(title, what, engines);
  if (a.clip) {
    const link = document.createElement("a");
    link.href = a.clip;
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = "evidence clip";
    body.append(link);
  }
  $("#no-alerts").hidden = true;
}

// ------------------------------------------------------------------ controls
function setWebcam(value) {
  state.webcam = value;
  const b = $("#webcam");
  b.disabled = Boolean(value);
  b.textContent = value ? (value.pending ? "Starting webcam…" : "Webcam on") : "Use my webcam";
}

$("#webcam").addEventListener("click", async () => {
  if (state.webcam) return;
  const name = `webcam-${Math.random().toString(16).slice(2, 6)}`;
  setWebcam({ stream: name, pending: true });
  notice(null);
  let local;
  try {
    local = await startWebcam(api, name);
  } catch (err) {
    setWebcam(null);
    dropTile(name);
    const text = err.status ? `The server refused the webcam: ${err.message}` : cameraErrorText(err);
    notice(text, "camera-error", true);
    return;
  }
  setWebcam({ stream: local.stream, peer: local.peer, pending: false });
  knownStreams.add(local.stream);
  const tile = ensureTile(local.stream); // no relay: it is ours
  tile.startLocal(local);
  local.media.getVideoTracks()[0].addEventListener("ended", () => {
    notice("Your camera stopped (unplugged, or permission withdrawn).", "camera-error", true);
    removeStream(local.stream);
  });
});

$("#add-camera").addEventListener("submit", async (e) => {
  e.preventDefault();
  const url = $("#camera-url").value.trim();
  const name = $("#camera-name").value.trim();
  if (!url) return;
  const button = $("#add-camera button");
  button.disabled = true;
  try {
    const added = await api("/api/streams", { method: "POST", json: name ? { url, name } : { url } });
    knownStreams.add(added.name);
    ensureTile(added.name);
    $("#camera-url").value = "";
    $("#camera-name").value = "";
    notice(null);
  } catch (err) {
    notice(`Could not add that camera: ${err.message}`, "error", true);
  } finally {
    button.disabled = false;
  }
});

// Leaving the page: hang up at once rather than let the server wait for WebRTC to time out.
window.addEventListener("pagehide", () => {
  for (const tile of tiles.values()) {
    if (tile.relay) api(`/relay/peer/${tile.relay.peer}`, { method: "DELETE", keepalive: true }).catch(() => {});
  }
  if (state.webcam && state.webcam.peer) {
    api(`/offer/${state.webcam.peer}`, { method: "DELETE", keepalive: true }).catch(() => {});
  }
});

// ------------------------------------------------------------------ start
async function boot() {
  let streams;
  try {
    streams = await api("/api/streams");
  } catch (err) {
    if (err.status !== 401) {
      notice(`${err.message} Retrying…`, "error", true);
      setTimeout(boot, 3000);
    }
    return;
  }
  state.auth = "ok";
  document.body.dataset.auth = "ok";
  notice(null);
  reconcile(streams);
  if (!ws) connectWs();
  state.ready = true;
}

takeTokenFromUrl();
connBanner();
boot();
