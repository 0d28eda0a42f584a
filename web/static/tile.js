// One stream on the page: its video (relayed by the server, or this browser's own camera preview), the overlay
// canvas kept in step with it by timestamp, the verdict strip, the stats and, whenever there is no picture to
// show, a sentence saying why.

import { colourOf, contentRect, drawOverlay, drawStrip, percent } from "./draw.js";
import { CLOCK, OverlayBuffer, RelayClock, percentile, ptsKey, timeKey } from "./sync.js";
import { startRelay } from "./rtc.js";

const STRIP_SPAN_MS = 60000;
const FRESH_MS = 1000; // without a clock, an overlay older than this is not drawn
const MAX_DELAY_MS = 2000; // the longest the local preview is held back to wait for its overlays
const RELAY_RETRY_MAX_S = 30;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v, digits = 1) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}

export class Tile {
  constructor(name, app) {
    this.name = name;
    this.app = app;
    this.mode = null; // "relay" | "local"
    this.status = null;
    this.overlays = new OverlayBuffer();
    this.history = [];
    this.closed = false;
    this.drawnFaces = [];
    this.frameKey = null;
    this.lags = []; // ms from a frame's arrival (or capture) to its overlay's arrival
    this.relay = null;
    this.relayAttempt = 0;
    this.local = null;
    this.frames = []; // local preview: [{bmp, cap}]
    this.state = {
      mode: null, state: "connecting", message: "", messageKind: "", verdict: null,
      video: { width: 0, height: 0, currentTime: 0, frames: 0 },
      overlays: 0, sync: { clock: "none", matched: 0, missed: 0, exact_hits: 0, errorMs: null, delayMs: 0 },
      drawn: { frames: 0, withFaces: 0, faces: [] }, stats: {},
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
    this.removeBtn.addEventListener("click", () => this.app.removeStream(this.name));
    head.append(this.titleEl, this.urlEl, this.verdictEl, this.badgeEl, this.removeBtn);

    this.stage = el("div", "stage");
    this.video = el("video");
    this.video.muted = true;
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.preview = el("canvas", "preview");
    this.canvas = el("canvas", "overlay");
    this.messageEl = el("div", "message");
    this.tooltip = el("div", "tooltip");
    this.tooltip.hidden = true;
    this.stage.append(this.video, this.preview, this.canvas, this.messageEl, this.tooltip);
    this.canvas.addEventListener("mousemove", (e) => this._hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tooltip.hidden = true; });

    const stripRow = el("div", "strip-row");
    this.strip = el("canvas", "strip");
    this.strip.height = 10;
    stripRow.append(el("span", "strip-label", "verdict, last 60 s"), this.strip);
    this.statsEl = el("div", "stats", "waiting for the first status…");
    root.append(head, this.stage, stripRow, this.statsEl);
    this.el = root;
    this.setMessage("Connecting…", "connecting");
  }

  setMessage(text, kind = "") {
    this.state.message = text || "";
    this.state.messageKind = text ? kind : "";
    this.messageEl.textContent = text || "";
    this.messageEl.hidden = !text;
    this.messageEl.dataset.kind = kind;
    this.el.dataset.message = text ? kind : "";
  }

  _refreshMessage() {
    const st = this.status && this.status.state;
    const err = this.status && this.status.error;
    const hasVideo = this.state.video.frames > 0;
    if (this.offline) return this.setMessage("No connection to the server: this picture and its scores are not live.", "offline");
    if (this.relayError) return this.setMessage(this.relayError, "relay");
    if (st === "reconnecting") {
      const n = this.status.reconnects || 0;
      return this.setMessage(`The camera is reconnecting (attempt ${n})…${err ? ` Last error: ${err}` : ""}`, "reconnecting");
    }
    if (st === "failed") return this.setMessage(`This stream failed${err ? `: ${err}` : "."}`, "failed");
    if (st === "ended") return this.setMessage("The video ended.", "ended");
    if (st === "stopped") return this.setMessage("This stream was stopped.", "stopped");
    if (this.status && this.status.shed) return this.setMessage("Paused by the scheduler: the server is overloaded.", "shed");
    if (!hasVideo) {
      if (st === "connecting" || st === "idle" || !st) {
        return this.setMessage(this.mode === "local" ? "Starting your camera…" : "Connecting to the camera…", "connecting");
      }
      return this.setMessage(this.mode === "local" ? "Waiting for your camera…" : "Waiting for the video relay…", "waiting");
    }
    return this.setMessage("");
  }

  setOffline(offline) {
    this.offline = offline;
    this.el.classList.toggle("offline", offline);
    this._refreshMessage();
  }

  // ------------------------------------------------------------------ messages from the server
  onStatus(msg) {
    this.status = msg;
    this.state.state = msg.state;
    this.state.stats = {
      fps: msg.fps, analysed_fps: msg.analysed_fps, target_fps: msg.target_fps, dropped: msg.dropped,
      received: msg.received, latency_ms: msg.latency_ms, tracks: msg.tracks, reconnects: msg.reconnects,
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
    if (msg.tracks !== undefined) parts.push(`${msg.tracks} track${msg.tracks === 1 ? "" : "s"}`);
    if (msg.reconnects) parts.push(`${msg.reconnects} reconnect${msg.reconnects === 1 ? "" : "s"}`);
    this.statsEl.textContent = parts.join(" · ");
    this._refreshMessage();
    this._drawStrip();
  }

  onOverlay(msg) {
    const clock = this.mode === "local" && this.local ? this.local.clock : null;
    const key = clock ? ptsKey(msg) : timeKey(msg);
    if (clock) clock.onOverlayPts(key);
    this.overlays.push(key, msg);
    this.state.overlays += 1;
    this.state.verdict = msg.verdict;
    this.verdictEl.textContent = msg.verdict || "no face";
    this.verdictEl.style.background = msg.verdict ? colourOf(msg.verdict) : "";
    this.history.push({ t: Date.now(), verdict: msg.verdict, faces: msg.faces.length });
    while (this.history.length && this.history[0].t < Date.now() - STRIP_SPAN_MS - 5000) this.history.shift();
    this._measureLag(key);
    if (this.mode === "relay" && this.frameKey !== null) this._drawFor(this.frameKey); // it may be a closer match
    if (!this._stripQueued) {
      this._stripQueued = true;
      setTimeout(() => { this._stripQueued = false; this._drawStrip(); }, 250);
    }
  }

  _measureLag(key) {
    let origin = null;
    if (this.mode === "local" && this.local && this.local.clock && this.local.clock.ready) {
      origin = this.local.clock.captureTimeOfPts(key);
    } else if (this.mode === "relay" && this.receivedAt) {
      origin = this.receivedAt.get(key) ?? null;
    }
    if (origin === null) return;
    this.lags.push(Math.max(0, performance.now() - origin));
    if (this.lags.length > 40) this.lags.shift();
  }

  /** How far to hold video back so the overlays of the frame on screen have arrived. */
  _delayMs() {
    const p = percentile(this.lags, 90);
    return p === null ? 300 : Math.min(MAX_DELAY_MS, p + 40);
  }

  /** Half the analysed-frame interval and a bit: the farthest an overlay may be from the frame it is drawn on. */
  _toleranceTicks() {
    const fps = (this.status && (this.status.analysed_fps || this.status.target_fps)) || 5;
    const seconds = Math.max(0.08, Math.min(1.0, 0.75 / fps));
    return seconds * CLOCK;
  }

  // ------------------------------------------------------------------ relayed video
  async startRelay() {
    this.mode = this.state.mode = "relay";
    this.el.dataset.mode = "relay";
    this.preview.hidden = true;
    this.relayClock = new RelayClock();
    this.receivedAt = new Map();
    this.state.sync.clock = "relay";
    while (!this.closed) {
      try {
        this.relay = await startRelay(this.app.api, this.name, (m) => this.relayClock.update(m));
        break;
      } catch (err) {
        if (this.closed || (err.status === 404 && !this.app.hasStream(this.name))) return;
        await this._relayRetry(`Could not open the video relay: ${err.message}`);
      }
    }
    if (this.closed) { this.relay && this.relay.pc.close(); return; }
    this.relayError = null;
    this.relayAttempt = 0;
    const { pc, media } = this.relay;
    pc.addEventListener("connectionstatechange", () => {
      if (this.closed || this.relay === null || this.relay.pc !== pc) return;
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        this.relay = null;
        pc.close();
        this._relayRetry("Lost the video relay").then(() => !this.closed && this.startRelay());
      }
    });
    this.video.srcObject = media;
    this.video.play().catch(() => {});
    this._onVideoFrame();
  }

  async _relayRetry(text) {
    this.relayAttempt += 1;
    const delay = Math.min(RELAY_RETRY_MAX_S, 2 ** (this.relayAttempt - 1)) * (0.75 + Math.random() * 0.5);
    this.relayError = `${text}. Retrying in ${Math.round(delay)} s…`;
    this._refreshMessage();
    await new Promise((r) => setTimeout(r, delay * 1000));
    this.relayError = null;
  }

  _onVideoFrame() {
    if (this.closed || !this.video.requestVideoFrameCallback) return;
    this.video.requestVideoFrameCallback((now, meta) => {
      if (this.closed) return;
      const v = this.state.video;
      v.width = meta.width || this.video.videoWidth;
      v.height = meta.height || this.video.videoHeight;
      v.currentTime = this.video.currentTime;
      v.frames = meta.presentedFrames;
      if (v.frames === 1 || this.state.message) this._refreshMessage();
      const key = this.relayClock.key(meta.rtpTimestamp);
      this.frameKey = key;
      if (key !== null) {
        this.receivedAt.set(key, meta.receiveTime ?? now);
        if (this.receivedAt.size > 200) this.receivedAt.delete(this.receivedAt.keys().next().value);
      }
      this._drawFor(key);
      this._tuneJitterBuffer();
      this._onVideoFrame();
    });
  }

  _tuneJitterBuffer() {
    const receiver = this.relay && this.relay.receiver;
    if (!receiver || !("jitterBufferTarget" in receiver)) return;
    const target = Math.round(this._delayMs() / 10) * 10;
    if (this.state.sync.delayMs !== target) {
      try {
        receiver.jitterBufferTarget = target;
        this.state.sync.delayMs = target;
      } catch (_) { /* out of range in this browser */ }
    }
  }

  // ------------------------------------------------------------------ this browser's webcam
  startLocal(local) {
    this.mode = this.state.mode = "local";
    this.el.dataset.mode = "local";
    this.local = local;
    this.state.sync.clock = local.clock ? "capture" : "arrival";
    this.video.srcObject = local.media;
    this.video.classList.add("source"); // decoded, not shown: the preview canvas shows delayed frames
    this.video.play().catch(() => {});
    local.pc.addEventListener("connectionstatechange", () => {
      const s = local.pc.connectionState;
      if (!this.closed && (s === "failed" || s === "disconnected")) {
        this.setMessage(s === "failed" ? "The connection to the server failed; remove this stream and try again." : "The connection to the server was interrupted…", "webrtc");
      }
    });
    const grab = (now, meta) => {
      if (this.closed) return;
      const cap = meta.captureTime ?? now;
      if (local.clock) local.clock.onCaptured(meta.captureTime);
      const w = Math.min(meta.width || this.video.videoWidth, 1280);
      const h = Math.round(w * (meta.height || this.video.videoHeight) / (meta.width || this.video.videoWidth));
      createImageBitmap(this.video, { resizeWidth: w, resizeHeight: h, resizeQuality: "low" })
        .then((bmp) => {
          if (this.closed) return bmp.close();
          this.frames.push({ bmp, cap });
          const v = this.state.video;
          v.width = meta.width; v.height = meta.height; v.currentTime = this.video.currentTime;
          v.frames += 1;
          if (v.frames === 1) this._refreshMessage();
        })
        .catch(() => {});
      this.video.requestVideoFrameCallback(grab);
    };
    this.video.requestVideoFrameCallback(grab);
    const paint = () => {
      if (this.closed) return;
      this._paintLocal();
      requestAnimationFrame(paint);
    };
    requestAnimationFrame(paint);
  }

  _paintLocal() {
    const clock = this.local.clock;
    const delay = clock && clock.ready ? this._delayMs() : 0;
    this.state.sync.delayMs = Math.round(delay);
    this.state.sync.exact = Boolean(clock && clock.exact);
    if (clock) this.state.sync.originVotes = clock.votes.slice(0, 5);
    const due = performance.now() - delay;
    let pick = -1;
    for (let i = 0; i < this.frames.length; i++) if (this.frames[i].cap <= due) pick = i;
    if (pick < 0) return;
    const frame = this.frames[pick];
    for (const old of this.frames.splice(0, pick)) old.bmp.close();
    if (frame === this.shown) return;
    this.shown = frame;
    const { w, h } = this._fitCanvas(this.preview);
    const ctx = this.preview.getContext("2d");
    const rect = contentRect(frame.bmp.width, frame.bmp.height, w, h);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    ctx.drawImage(frame.bmp, rect.x, rect.y, rect.w, rect.h);
    this.frameKey = clock && clock.ready ? clock.ptsOf(frame.cap) : null;
    this._drawFor(this.frameKey, frame.bmp.width, frame.bmp.height);
  }

  // ------------------------------------------------------------------ overlay
  _fitCanvas(canvas) {
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
    const { w, h } = this._fitCanvas(this.canvas);
    const vw = frameW || this.video.videoWidth || (item && item.msg.frame_size[0]);
    const vh = frameH || this.video.videoHeight || (item && item.msg.frame_size[1]);
    const ctx = this.canvas.getContext("2d");
    this.drawnFaces = drawOverlay(ctx, item && item.msg, contentRect(vw, vh, w, h), w, h);
    const d = this.state.drawn;
    d.frames += 1;
    d.faces = this.drawnFaces.map(({ face, x, y, w: bw, h: bh }) => ({
      track: face.track, score: face.score, verdict: face.verdict, engines: face.engines,
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
    const rows = [["fused p(fake), smoothed", percent(f.score)], ["fused p(fake), this frame", percent(f.raw)]];
    for (const [name, p] of Object.entries(f.engines || {})) rows.push([name, percent(p)]);
    rows.push(["face detector confidence", percent(f.prob)]);
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
    return { overlayInk: ink(this.canvas), previewInk: this.mode === "local" ? ink(this.preview) : null };
  }

  close() {
    this.closed = true;
    if (this.relay) {
      const peer = this.relay.peer;
      this.relay.pc.close();
      this.relay = null;
      this.app.api(`/relay/peer/${peer}`, { method: "DELETE" }).catch(() => {});
    }
    if (this.local) {
      this.local.media.getTracks().forEach((t) => t.stop());
      this.local.pc.close();
    }
    for (const f of this.frames) f.bmp.close();
    this.frames = [];
    this.el.remove();
  }
}
