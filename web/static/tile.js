// One stream on the page: the parts every stream has, whatever shows its video. The overlay canvas (drawn for
// the frame on screen, matched by timestamp), the verdict strip, the stats, the per-engine tooltip, the list of
// participants (every face track of a call or a group, beside the video), the voice under the video (a level
// meter and the voice's verdict, for a stream with sound) and, whenever there is no picture to show, a sentence
// saying why.
//
// The video itself comes from a view (views.js: RelayView for video the server relays, LocalView for this
// browser's own camera), attached with tile.attach(view). A view is:
//   mode             "relay" | "local" (shown as data-mode and in the state)
//   clock            how its frames are timed: "relay" | "capture" | "arrival" (state.sync.clock)
//   words            {connecting, waiting}: what the tile says before the first picture
//   problem          null, or {text, kind}: a trouble of the view's own to say on the tile
//   preview          the canvas it paints its picture on, or null (the <video> shows it)
//   attach(tile)     start; call tile.onPicture(…) for each picture and tile.showFrame(key, w, h) for the frame
//                    on screen
//   overlayKey(msg)  the timestamp an overlay is filed under, comparable with showFrame's keys
//   originOf(key)    when (performance.now() ms) the frame with that key arrived or was captured, or null
//   detach()         stop and let go of everything; hangUp() the same, for a page being closed

import { BaselineControl } from "./baseline.js";
import { colourOf, contentRect, drawOverlay, drawStrip, faceColour, faceLabel, LOW_QUALITY, percent } from "./draw.js";
import { CLOCK, OverlayBuffer, percentile, timeKey } from "./sync.js";

const STRIP_SPAN_MS = 60000;
const FRESH_MS = 1000; // without a clock, an overlay older than this is not drawn
const MAX_DELAY_MS = 2000; // the longest video is held back to wait for its overlays
// A face track stays listed this long after its last overlay, so a face the detector misses for a frame or two
// does not blink out of the list.
const PARTICIPANT_KEEP_MS = 3000;
// The list appears once a stream shows this many faces at once (a call, a group), and then stays, so the
// video does not jump sideways as people come and go; one face needs no list: its box says it all.
const PARTICIPANTS_FROM = 2;
// The level meter spans -60 dBFS (empty: quieter than a quiet room through a microphone) to 0 dBFS (full scale).
const METER_FLOOR_DB = -60;

/** Before a view is attached (a webcam still starting): no picture, no clock. */
const NO_VIEW = {
  mode: null, clock: "none", problem: null, preview: null,
  words: { connecting: "Connecting to the camera…", waiting: "Waiting for the video relay…" },
  attach() {}, overlayKey: timeKey, originOf: () => null, detach() {}, hangUp() {},
};

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v, digits = 1) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}

/** What the link delivered (a WebRTC stream's status.link): "received 1280×720 at 2480 kbps". */
export function linkText(link) {
  if (!link) return "";
  const size = link.received ? `${link.received[0]}×${link.received[1]}` : "–";
  const rate = link.bitrate_kbps === null || link.bitrate_kbps === undefined ? "– kbps"
    : link.bitrate_kbps >= 1000 ? `${fmt(link.bitrate_kbps / 1000, 2)} Mbps` : `${fmt(link.bitrate_kbps, 0)} kbps`;
  return `received ${size} at ${rate}`;
}

/** The status's verdicts side by side: "face real · voice fake → fake (either)". */
export function verdictsText(v) {
  return `face ${v.face || "–"} · voice ${v.voice || "–"} → ${v.stream || "–"} (${v.rule})`;
}

export class Tile {
  /** `onRemove(name)`: the Remove button. */
  constructor(name, onRemove) {
    this.name = name;
    this.onRemove = onRemove;
    this.view = NO_VIEW;
    this.status = null;
    this.offline = false;
    this.overlays = new OverlayBuffer();
    this.history = [];
    this.closed = false;
    this.drawnFaces = [];
    this.frameKey = null; // the timestamp of the frame on screen (null: unknown)
    this.frameSize = []; // its size, where the <video> does not give it
    this.lags = []; // ms from a frame's arrival (or capture) to its overlay's arrival
    this.people = new Map(); // track id -> {face, seen}: the participants listed
    this.state = {
      mode: null, state: "connecting", message: "", messageKind: "", verdict: null,
      video: { width: 0, height: 0, currentTime: 0, frames: 0 },
      overlays: 0, sync: { clock: "none", matched: 0, missed: 0, exact_hits: 0, errorMs: null, delayMs: 0 },
      drawn: { frames: 0, withFaces: 0, faces: [] }, stats: {},
      participants: [], // [{track, verdict, score, reason}] as listed, by track id
      voice: null, // the latest overlay's voice object, for a stream with sound (see messages: VoiceOverlay)
      verdicts: null, // the status's face and voice verdicts side by side, and the stream's by its rule
    };
    this._build();
  }

  // ------------------------------------------------------------------ DOM
  _build() {
    const root = el("article", "tile");
    root.dataset.stream = this.name;
    const head = el("header", "tile-head");
    this.titleEl = el("h3", "tile-name", this.name);
    this.urlEl = el("span", "tile-url");
    this.badgeEl = el("span", "badge state");
    this.verdictEl = el("span", "badge verdict");
    this.removeBtn = el("button", "remove", "Remove");
    this.removeBtn.type = "button";
    this.removeBtn.title = "Stop this stream for everyone";
    this.removeBtn.addEventListener("click", () => this.onRemove(this.name));
    head.append(this.titleEl, this.urlEl, this.verdictEl, this.badgeEl, this.removeBtn);

    this.stage = el("div", "stage");
    this.video = el("video");
    this.video.muted = true;
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.canvas = el("canvas", "overlay");
    this.messageEl = el("div", "message");
    this.tooltip = el("div", "tooltip");
    this.tooltip.hidden = true;
    this.stage.append(this.video, this.canvas, this.messageEl, this.tooltip);
    this.canvas.addEventListener("mousemove", (e) => this._hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tooltip.hidden = true; });

    const stripRow = el("div", "strip-row");
    this.strip = el("canvas", "strip");
    this.strip.height = 10;
    stripRow.append(el("span", "strip-label", "verdict, last 60 s"), this.strip);
    this.statsEl = el("div", "stats", "waiting for the first status…");
    this.peopleEl = el("ol", "participants");
    this.peopleEl.setAttribute("aria-label", "participants: face tracks");
    this.peopleEl.hidden = true;
    const body = el("div", "tile-body");
    body.append(this.stage, this.peopleEl);
    // the voice, under the video: shown once the stream has sound
    this.voiceEl = el("div", "voice");
    this.voiceEl.hidden = true;
    this.meterEl = el("span", "voice-meter");
    this.meterEl.setAttribute("role", "meter");
    this.meterEl.setAttribute("aria-label", "sound level");
    this.levelEl = el("i");
    this.meterEl.append(this.levelEl);
    this.voiceVerdictEl = el("span", "voice-verdict");
    this.voiceEl.append(el("span", "voice-label", "voice"), this.meterEl, this.voiceVerdictEl);
    this.baseline = new BaselineControl(this.name); // "Learn normal": the camera's own bar (baseline.js)
    this.state.baseline = this.baseline.state;
    root.append(head, body, this.voiceEl, stripRow, this.statsEl, this.baseline.el);
    this.el = root;
    this.setMessage("Connecting…", "connecting");
  }

  /** Show the stream's video through `view` (see the top of this file). */
  attach(view) {
    this.view.detach();
    this.view = view;
    this.state.mode = view.mode;
    this.el.dataset.mode = view.mode;
    this.state.sync.clock = view.clock;
    view.attach(this);
    this.refreshMessage();
  }

  setMessage(text, kind = "") {
    this.state.message = text || "";
    this.state.messageKind = text ? kind : "";
    this.messageEl.textContent = text || "";
    this.messageEl.hidden = !text;
    this.messageEl.dataset.kind = kind;
    this.el.dataset.message = text ? kind : "";
  }

  /** Say the most important thing wrong, or nothing when the picture is live. */
  refreshMessage() {
    const st = this.status && this.status.state;
    const err = this.status && this.status.error;
    const problem = this.view.problem;
    if (this.offline) return this.setMessage("No connection to the server: this picture and its scores are not live.", "offline");
    if (problem) return this.setMessage(problem.text, problem.kind);
    if (st === "reconnecting") {
      const n = this.status.reconnects || 0;
      return this.setMessage(`The camera is reconnecting (attempt ${n})…${err ? ` Last error: ${err}` : ""}`, "reconnecting");
    }
    if (st === "failed") return this.setMessage(`This stream failed${err ? `: ${err}` : "."}`, "failed");
    if (st === "ended") return this.setMessage("The video ended.", "ended");
    if (st === "stopped") return this.setMessage("This stream was stopped.", "stopped");
    if (this.status && this.status.shed) {
      return this.setMessage(`Paused by the scheduler: ${this.status.reason || "the server is overloaded."}`, "shed");
    }
    if (this.state.video.frames === 0) {
      if (st === "connecting" || st === "idle" || !st) return this.setMessage(this.view.words.connecting, "connecting");
      return this.setMessage(this.view.words.waiting, "waiting");
    }
    return this.setMessage("");
  }

  setOffline(offline) {
    this.offline = offline;
    this.el.classList.toggle("offline", offline);
    this.refreshMessage();
  }

  // ------------------------------------------------------------------ from the view
  /** A new picture from the view: `frames` counts them. */
  onPicture(width, height, frames) {
    const v = this.state.video;
    v.width = width;
    v.height = height;
    v.currentTime = this.video.currentTime;
    v.frames = frames;
    if (frames === 1 || this.state.message) this.refreshMessage();
  }

  /** The frame on screen has timestamp `key` (null: unknown) and, where the <video> does not say, this size. */
  showFrame(key, frameW, frameH) {
    this.frameKey = key;
    this.frameSize = [frameW, frameH];
    this._drawFor(key, frameW, frameH);
  }

  /** How far to hold video back so the overlays of the frame on screen have arrived. */
  delayMs() {
    const p = percentile(this.lags, 90);
    return p === null ? 300 : Math.min(MAX_DELAY_MS, p + 40);
  }

  /** Size `canvas` to the stage (in device pixels, drawn in CSS pixels); returns the CSS size. */
  fit(canvas) {
    const w = this.stage.clientWidth;
    const h = this.stage.clientHeight;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    canvas.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
    return { w, h };
  }

  // ------------------------------------------------------------------ messages from the server
  onStatus(msg) {
    this.status = msg;
    this.state.state = msg.state;
    this.state.stats = {
      fps: msg.fps, analysed_fps: msg.analysed_fps, target_fps: msg.target_fps, dropped: msg.dropped,
      received: msg.received, latency_ms: msg.latency_ms, tracks: msg.tracks, reconnects: msg.reconnects,
      gated_faces: msg.gated_faces, link: msg.link || null, reason: msg.reason || null,
      priority: msg.priority, watched: msg.watched,
    };
    this.el.dataset.state = msg.state;
    this.badgeEl.textContent = msg.state;
    this.badgeEl.dataset.state = msg.state;
    if (msg.url) this.urlEl.textContent = msg.url;
    const lat = msg.latency_ms || {};
    const parts = [
      `${fmt(msg.fps)} fps`,
      `analysed ${fmt(msg.analysed_fps)}${msg.target_fps ? ` / ${fmt(msg.target_fps)}` : ""} fps`,
      `dropped ${msg.dropped ?? "–"}`,
      `latency p50 ${fmt(lat.p50, 0)} ms · p95 ${fmt(lat.p95, 0)} ms`,
    ];
    if (msg.link) parts.push(linkText(msg.link));
    if (msg.tracks !== undefined) parts.push(`${msg.tracks} track${msg.tracks === 1 ? "" : "s"}`);
    if (msg.gated_faces !== undefined) parts.push(`${msg.gated_faces} low-quality face-frame${msg.gated_faces === 1 ? "" : "s"}`);
    if (msg.reconnects) parts.push(`${msg.reconnects} reconnect${msg.reconnects === 1 ? "" : "s"}`);
    // Slowed (not paused) under load: say so and why, on the tile (the governor's reason, scheduler/governor.py).
    const slowed = !msg.shed && msg.reason ? msg.reason : "";
    if (slowed) parts.push(`slowed: ${slowed}`);
    this.el.dataset.slowed = slowed ? "true" : "";
    this.state.verdicts = msg.verdicts || null;
    if (msg.verdicts) parts.unshift(verdictsText(msg.verdicts));
    this.statsEl.textContent = parts.join(" · ");
    this.baseline.onStatus(msg.baseline);
    this.refreshMessage();
    this._drawStrip();
  }

  onOverlay(msg) {
    const key = this.view.overlayKey(msg);
    this.overlays.push(key, msg);
    this.state.overlays += 1;
    this.state.verdict = msg.verdict;
    this.verdictEl.textContent = msg.verdict || "no face";
    this.verdictEl.style.background = msg.verdict ? colourOf(msg.verdict) : "";
    this.history.push({ t: Date.now(), verdict: msg.verdict, faces: msg.faces.length });
    this._listParticipants(msg.faces);
    if (msg.voice) this._showVoice(msg.voice);
    while (this.history.length && this.history[0].t < Date.now() - STRIP_SPAN_MS - 5000) this.history.shift();
    this._measureLag(key);
    if (this.frameKey !== null) this._drawFor(this.frameKey, ...this.frameSize); // it may be a closer match
    if (!this._stripQueued) {
      this._stripQueued = true;
      setTimeout(() => { this._stripQueued = false; this._drawStrip(); }, 250);
    }
  }

  /** The participants beside the video: every face track seen in the last PARTICIPANT_KEEP_MS. */
  _listParticipants(faces) {
    const now = performance.now();
    for (const face of faces) this.people.set(face.track, { face, seen: now });
    for (const [id, p] of this.people) if (now - p.seen > PARTICIPANT_KEEP_MS) this.people.delete(id);
    if (faces.length >= PARTICIPANTS_FROM) this.peopleEl.hidden = false;
    const listed = [...this.people.values()].map((p) => p.face).sort((a, b) => a.track - b.track);
    this.state.participants = listed.map((f) => ({ track: f.track, verdict: f.verdict, score: f.score,
      reason: f.reason ?? null }));
    if (this.peopleEl.hidden) return;
    this.peopleEl.replaceChildren(...listed.map((f) => {
      const li = el("li", "participant");
      li.dataset.track = String(f.track);
      li.dataset.verdict = f.verdict || "";
      const swatch = el("i");
      swatch.style.background = faceColour(f);
      const words = f.verdict === LOW_QUALITY ? "low quality" : f.score === null ? "scoring…" : f.verdict;
      li.append(swatch, el("b", "", `#${f.track}`), el("span", "verdict", words),
        el("span", "score", f.verdict === LOW_QUALITY ? "" : percent(f.score)));
      li.title = f.verdict === LOW_QUALITY ? `Not judged: ${f.reason || "below every engine's quality floor"}`
        : `Track #${f.track}: smoothed p(fake) ${percent(f.score)}`;
      return li;
    }));
  }

  /** The voice under the video: its sound level and its verdict (or why its latest window was not judged). */
  _showVoice(v) {
    this.voiceEl.hidden = false;
    const level = v.level_db === null || v.level_db === undefined ? 0
      : Math.max(0, Math.min(1, (v.level_db - METER_FLOOR_DB) / -METER_FLOOR_DB));
    this.levelEl.style.width = `${Math.round(level * 100)}%`;
    this.meterEl.setAttribute("aria-valuenow", String(v.level_db ?? METER_FLOOR_DB));
    const judged = v.verdict !== LOW_QUALITY;
    this.voiceVerdictEl.textContent = judged ? `${v.verdict} ${percent(v.score)}` : `not judged: ${v.reason || "no speech"}`;
    this.voiceVerdictEl.style.color = judged ? colourOf(v.verdict) : "";
    this.voiceEl.dataset.verdict = v.verdict;
    const span = v.start === null ? "" : ` · window ${fmt(v.start)}–${fmt(v.end)} s, ${percent(v.voiced)} speech`;
    const engines = Object.entries(v.engines || {}).map(([k, p]) => `${k} ${percent(p)}`).join(", ");
    this.voiceEl.title = `Voice: latest window p(fake) ${percent(v.p_fake)}${engines ? ` (${engines})` : ""}, smoothed `
      + `${percent(v.score)}${span} · ${v.windows} windows scored, ${v.skipped} skipped`;
    this.state.voice = { ...v };
  }

  _measureLag(key) {
    const origin = this.view.originOf(key);
    if (origin === null || origin === undefined) return;
    this.lags.push(Math.max(0, performance.now() - origin));
    if (this.lags.length > 40) this.lags.shift();
  }

  /** Half the analysed-frame interval and a bit: the farthest an overlay may be from the frame it is drawn on. */
  _toleranceTicks() {
    const fps = (this.status && (this.status.analysed_fps || this.status.target_fps)) || 5;
    const seconds = Math.max(0.08, Math.min(1.0, 0.75 / fps));
    return seconds * CLOCK;
  }

  // ------------------------------------------------------------------ overlay
  /** Draw the overlay that belongs to the frame on screen (timestamp `key`), or none if none is close enough. */
  _drawFor(key, frameW, frameH) {
    let item = null;
    const sync = this.state.sync;
    if (key === null) {
      const latest = this.overlays.latest(); // no clock (yet): the newest, if recent
      item = latest && performance.now() - latest.arrived < FRESH_MS ? latest : null;
      sync.errorMs = null;
    } else {
      item = this.overlays.nearest(key, this._toleranceTicks());
      if (item) {
        sync.matched += 1;
        sync.errorMs = Math.round((item.dist / CLOCK) * 1000);
        if (item.dist <= CLOCK / 2000) sync.exact_hits += 1; // within 0.5 ms: the very frame that was scored
      } else {
        sync.missed += 1;
      }
    }
    const { w, h } = this.fit(this.canvas);
    const vw = frameW || this.video.videoWidth || (item && item.msg.frame_size[0]);
    const vh = frameH || this.video.videoHeight || (item && item.msg.frame_size[1]);
    const ctx = this.canvas.getContext("2d");
    this.drawnFaces = drawOverlay(ctx, item && item.msg, contentRect(vw, vh, w, h), w, h);
    const d = this.state.drawn;
    d.frames += 1;
    d.faces = this.drawnFaces.map(({ face, x, y, w: bw, h: bh }) => ({
      track: face.track, score: face.score, verdict: face.verdict, engines: face.engines,
      reason: face.reason ?? null, quality: face.quality || {}, label: faceLabel(face),
      colour: faceColour(face),
      box: [Math.round(x), Math.round(y), Math.round(bw), Math.round(bh)], // CSS px within the stage
    }));
    if (d.faces.length) d.withFaces += 1;
    this.el.dataset.faces = String(d.faces.length);
  }

  _hover(e) {
    const r = this.canvas.getBoundingClientRect();
    const x = e.clientX - r.left;
    const y = e.clientY - r.top;
    const hit = this.drawnFaces.find((b) => x >= b.x && x <= b.x + b.w && y >= b.y && y <= b.y + b.h);
    if (!hit) { this.tooltip.hidden = true; return; }
    const f = hit.face;
    this.tooltip.replaceChildren();
    this.tooltip.append(el("strong", "", `Track #${f.track}: ${f.verdict}`));
    if (f.verdict === LOW_QUALITY) {
      this.tooltip.append(el("div", "reason", `Not judged: ${f.reason || "below every engine's quality floor"}`));
    }
    const rows = [["fused p(fake), smoothed", percent(f.score)], ["fused p(fake), this frame", percent(f.raw)]];
    const unused = f.verdict === LOW_QUALITY ? " (not used)" : "";
    for (const [name, p] of Object.entries(f.engines || {})) rows.push([`${name}${unused}`, percent(p)]);
    rows.push(["face detector confidence", percent(f.prob)]);
    const q = f.quality || {};
    if (q.face_px !== undefined) rows.push(["face size", `${fmt(q.face_px, 0)} px`]);
    if (q.sharpness !== undefined) rows.push(["sharpness", fmt(q.sharpness, 0)]);
    if (q.received !== undefined || q.bitrate_kbps !== undefined) rows.push(["link", linkText(q).replace(/^received /, "")]);
    for (const [k, v] of rows) {
      const row = el("div", "row");
      row.append(el("span", "", k), el("span", "v", v));
      this.tooltip.append(row);
    }
    this.tooltip.hidden = false;
    this.tooltip.style.left = `${Math.min(x + 12, r.width - 220)}px`;
    this.tooltip.style.top = `${Math.min(y + 12, r.height - 40)}px`;
  }

  _drawStrip() {
    const w = this.strip.clientWidth || 300;
    if (this.strip.width !== w) this.strip.width = w;
    drawStrip(this.strip.getContext("2d"), this.history, w, this.strip.height, STRIP_SPAN_MS);
  }

  /** For tests and debugging: how much the canvases show. */
  inspect() {
    const ink = (canvas) => {
      if (!canvas.width || !canvas.height) return 0;
      const data = canvas.getContext("2d", { willReadFrequently: true }).getImageData(0, 0, canvas.width, canvas.height).data;
      let n = 0;
      for (let i = 3; i < data.length; i += 16) if (data[i] > 0 && (data[i - 3] | data[i - 2] | data[i - 1])) n++;
      return n;
    };
    return { overlayInk: ink(this.canvas), previewInk: this.view.preview ? ink(this.view.preview) : null };
  }

  /** The page is going away: hang up without waiting. */
  hangUp() {
    this.view.hangUp();
  }

  close() {
    this.closed = true;
    this.view.detach();
    this.el.remove();
  }
}
