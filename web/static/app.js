// dfstream's page: wires the modules together. It owns the page's state (window.__dfstream), the one registry of
// streams (name -> Tile), the connection banner, the token dialog and the controls (webcam, screen share, add
// camera).
// Plain ES modules, no build step, nothing loaded from elsewhere.
//
// window.__dfstream exposes the page's state (read by the browser tests and handy in the console).

import { AlertFeed } from "./alerts.js";
import { api, onUnauthorized, setToken, takeTokenFromUrl, withToken } from "./api.js";
import { Notice } from "./notice.js";
import { EvidencePlayer } from "./player.js";
import { cameraErrorText, startWebcam } from "./rtc.js";
import { shareErrorText, startShare, watchEnded } from "./share.js";
import { Socket } from "./socket.js";
import { Tile } from "./tile.js";
import { LocalView, RelayView } from "./views.js";

const BOOT_RETRY_MS = 3000;

const $ = (sel) => document.querySelector(sel);

const tiles = new Map(); // the streams on the page: name -> Tile
const player = new EvidencePlayer($("#evidence-dialog"));
const alerts = new AlertFeed($("#alerts"), $("#no-alerts"), (a) => player.open(a));

const state = {
  ready: false,
  auth: "unknown", // ok | needed | refused
  ws: "connecting", // connecting | open | reconnecting | closed (waiting for the token)
  wsAttempt: 0,
  wsRetryInS: null,
  /** name -> that tile's state */
  get streams() {
    return Object.fromEntries([...tiles].map(([name, tile]) => [name, tile.state]));
  },
  alerts: alerts.alerts,
  get player() { return player.state; }, // the evidence player: status, seekedTo, overlayInk, error
  notice: null,
  model: null, // GET /api/model: the engines and what --model auto decided (its warning when it fell back)
  webcam: null, // {stream, peer, pending, audio} while this page sends its camera (audio: its microphone too)
  share: null, // {stream, peer, pending, surface} while this page shares a screen, window or tab
  inspect: (name) => (tiles.has(name) ? tiles.get(name).inspect() : null),
};
window.__dfstream = state;

const notices = new Notice($("#notice"), (n) => { state.notice = n; });
const notice = (text, kind, sticky) => notices.show(text, kind, sticky);

// ------------------------------------------------------------------ token
onUnauthorized((refused) => {
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
});

$("#token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("#token-input").value.trim();
  if (!value) return;
  setToken(value);
  $("#token-input").value = "";
  $("#token-dialog").close();
  boot();
});

// ------------------------------------------------------------------ streams
const isOurWebcam = (name) => Boolean(state.webcam && state.webcam.stream === name);
const isOurShare = (name) => Boolean(state.share && state.share.stream === name);
/** This page's own stream (webcam or share) is shown from the local media, never relayed back. */
const ours = (name) => (isOurWebcam(name) ? state.webcam : isOurShare(name) ? state.share : null);
let stopWatchingShare = () => {};

function ensureTile(name) {
  let tile = tiles.get(name);
  if (tile) return tile;
  tile = new Tile(name, removeStream);
  tiles.set(name, tile);
  $("#grid").append(tile.el);
  $("#empty").hidden = true;
  if (!ours(name)) tile.attach(new RelayView(api, name, (n) => tiles.has(n))); // ours gets a LocalView
  return tile;
}

function dropTile(name) {
  const tile = tiles.get(name);
  if (!tile) return;
  tile.close();
  tiles.delete(name);
  if (isOurWebcam(name)) setWebcam(null);
  if (isOurShare(name)) setShare(null);
  $("#empty").hidden = tiles.size > 0;
}

/** Make the tiles those of `streams` (the server's GET /api/streams), keeping our own that are still starting. */
function reconcile(streams) {
  for (const [name, status] of Object.entries(streams)) ensureTile(name).onStatus({ stream: name, ...status });
  for (const name of [...tiles.keys()]) {
    if (!(name in streams) && !(ours(name) && ours(name).pending)) dropTile(name);
  }
}

async function removeStream(name) {
  try {
    const own = ours(name);
    if (own && own.peer) {
      await api(`/offer/${own.peer}`, { method: "DELETE" }).catch(() => api(`/api/streams/${encodeURIComponent(name)}`, { method: "DELETE" }));
    } else {
      await api(`/api/streams/${encodeURIComponent(name)}`, { method: "DELETE" });
    }
  } catch (err) {
    if (err.status !== 404) return notice(`Could not remove ${name}: ${err.message}`, "error");
  }
  dropTile(name);
}

// ------------------------------------------------------------------ websocket
const socket = new Socket(
  () => `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${withToken("/ws")}`,
  // a refused token closes the socket too: ask the API, which says so (and opens the token dialog)
  { gate: () => api("/api/streams").then(() => true, (err) => err.status !== 401) },
);

function connBanner() {
  const c = $("#conn");
  c.dataset.state = state.ws;
  if (state.ws === "open") c.textContent = "Live";
  else if (state.ws === "connecting") c.textContent = "Connecting…";
  else if (state.ws === "reconnecting") {
    c.textContent = `Disconnected from the server. Reconnecting in ${state.wsRetryInS} s (attempt ${state.wsAttempt})…`;
  } // closed: the token dialog has said why
}

socket.onState(({ state: ws, attempt, retryInS }) => {
  const was = state.ws;
  Object.assign(state, { ws, wsAttempt: attempt, wsRetryInS: retryInS });
  connBanner();
  if (ws === "open") {
    for (const tile of tiles.values()) tile.setOffline(false);
    api("/api/streams").then(reconcile).catch(() => {});
  } else if (ws === "reconnecting" && was !== "reconnecting") {
    for (const tile of tiles.values()) tile.setOffline(true);
  }
});

socket.subscribe("overlay", (msg) => {
  const tile = tiles.get(msg.stream);
  if (tile) tile.onOverlay(msg);
});

socket.subscribe("status", (msg) => {
  if (msg.removed) dropTile(msg.stream);
  else if (msg.stream) ensureTile(msg.stream).onStatus(msg);
});

socket.subscribe("alert", (msg) => alerts.onAlert(msg));

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
  setWebcam({ stream: local.stream, peer: local.peer, pending: false, audio: local.audio });
  ensureTile(local.stream).attach(new LocalView(api, local)); // no relay: it is ours
  local.media.getVideoTracks()[0].addEventListener("ended", () => {
    notice("Your camera stopped (unplugged, or permission withdrawn).", "camera-error", true);
    removeStream(local.stream);
  });
});

/** A name this page claimed for its own stream belongs to another's: its tile (if the server announced it
 * meanwhile) shows that stream's relayed video. */
function disown(name) {
  if (tiles.has(name)) tiles.get(name).attach(new RelayView(api, name, (n) => tiles.has(n)));
}

function setShare(value) {
  if (!value) stopWatchingShare();
  state.share = value;
  const b = $("#share");
  b.disabled = Boolean(value);
  b.textContent = value ? (value.pending ? "Starting share…" : "Sharing") : "Share screen";
}

$("#share").addEventListener("click", async () => {
  if (state.share) return;
  setShare({ stream: null, pending: true });
  notice(null);
  let local;
  try {
    local = await startShare(api, () => tiles.keys(), (name) => {
      const taken = state.share && state.share.stream; // refused (409): another page's stream has that name
      state.share = { stream: name, pending: true };
      if (taken && taken !== name) disown(taken);
    });
  } catch (err) {
    const name = state.share && state.share.stream;
    setShare(null);
    if (name && err.status === 409) disown(name);
    else if (name) dropTile(name);
    const text = err.status !== undefined ? `The server refused the screen share: ${err.message}` : shareErrorText(err);
    if (text) notice(text, "share-error", true);
    return;
  }
  setShare({ stream: local.stream, peer: local.peer, pending: false, surface: local.surface });
  ensureTile(local.stream).attach(new LocalView(api, local, {
    connecting: "Starting the screen share…", waiting: "Waiting for the shared screen…",
  }));
  // The browser's "Stop sharing" (or the shared tab closing) ends the track: the stream goes, quietly, since
  // the user did it.
  stopWatchingShare = watchEnded(local.media.getVideoTracks()[0], () => {
    if (isOurShare(local.stream)) removeStream(local.stream);
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
  for (const tile of tiles.values()) tile.hangUp();
});

// ------------------------------------------------------------------ the model
/** Say, for as long as the page is open, when `--model auto` runs a weaker model than this machine could. */
async function showModel() {
  try {
    state.model = await api("/api/model");
  } catch (err) {
    return;
  }
  const warning = state.model.auto && state.model.auto.warning;
  const box = $("#model-warning");
  box.textContent = warning ? `Weaker detector: ${warning}` : "";
  box.hidden = !warning;
}

// ------------------------------------------------------------------ start
async function boot() {
  let streams;
  try {
    streams = await api("/api/streams");
  } catch (err) {
    if (err.status !== 401) {
      notice(`${err.message} Retrying…`, "error", true);
      setTimeout(boot, BOOT_RETRY_MS);
    }
    return;
  }
  state.auth = "ok";
  document.body.dataset.auth = "ok";
  notice(null);
  showModel();
  reconcile(streams);
  socket.connect();
  state.ready = true;
}

takeTokenFromUrl();
connBanner();
boot();
