// The two ways a tile gets its picture, behind the interface described at the top of tile.js.
//
// - RelayView: video the server relays back over WebRTC (cameras, files, other pages' webcams). The <video>
//   shows it; each displayed frame's RTP timestamp maps to the scored frame's time (RelayClock).
// - LocalView: this browser's own camera or shared screen, sent up by rtc.sendMedia. The <video> only decodes it; a preview
//   canvas shows the frames slightly delayed, so that their overlays have arrived (CaptureClock).

import { Backoff, sleep } from "./backoff.js";
import { contentRect } from "./draw.js";
import { startRelay } from "./rtc.js";
import { RelayClock, ptsKey, timeKey } from "./sync.js";
import { el } from "./tile.js";

const MAX_PREVIEW_WIDTH = 1280;

export class RelayView {
  /** `api`: the HTTP client; `hasStream(name)`: whether the page still knows the stream (a 404 then retries). */
  constructor(api, name, hasStream) {
    this.api = api;
    this.name = name;
    this.hasStream = hasStream;
    this.mode = "relay";
    this.clock = "relay";
    this.words = { connecting: "Connecting to the camera…", waiting: "Waiting for the video relay…" };
    this.problem = null;
    this.preview = null;
    this.relay = null; // {pc, peer, media, receiver, channel} while connected
    this.backoff = new Backoff();
    this.rtpClock = new RelayClock();
    this.receivedAt = new Map(); // overlay key -> when its frame arrived
    this.detached = false;
  }

  attach(tile) {
    this.tile = tile;
    this._connect();
  }

  async _connect() {
    const tile = this.tile;
    while (!this.detached) {
      try {
        this.relay = await startRelay(this.api, this.name, (m) => this.rtpClock.update(m));
        break;
      } catch (err) {
        if (this.detached || (err.status === 404 && !this.hasStream(this.name))) return;
        await this._retry(`Could not open the video relay: ${err.message}`);
      }
    }
    if (this.detached) { this._close(); return; }
    this.problem = null;
    this.backoff.reset();
    const { pc, media } = this.relay;
    pc.addEventListener("connectionstatechange", () => {
      if (this.detached || this.relay === null || this.relay.pc !== pc) return;
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        this.relay = null;
        pc.close();
        this._retry("Lost the video relay").then(() => !this.detached && this._connect());
      }
    });
    tile.video.srcObject = media;
    tile.video.play().catch(() => {});
    this._onVideoFrame();
  }

  async _retry(text) {
    const delay = this.backoff.next();
    this.problem = { text: `${text}. Retrying in ${Math.round(delay)} s…`, kind: "relay" };
    this.tile.refreshMessage();
    await sleep(delay);
    this.problem = null;
  }

  _onVideoFrame() {
    const video = this.tile.video;
    if (this.detached || !video.requestVideoFrameCallback) return;
    video.requestVideoFrameCallback((now, meta) => {
      if (this.detached) return;
      this.tile.onPicture(meta.width || video.videoWidth, meta.height || video.videoHeight, meta.presentedFrames);
      const key = this.rtpClock.key(meta.rtpTimestamp);
      if (key !== null) {
        this.receivedAt.set(key, meta.receiveTime ?? now);
        if (this.receivedAt.size > 200) this.receivedAt.delete(this.receivedAt.keys().next().value);
      }
      this.tile.showFrame(key);
      this._tuneJitterBuffer();
      this._onVideoFrame();
    });
  }

  /** Ask the browser to hold the video back as long as overlays take to arrive. */
  _tuneJitterBuffer() {
    const receiver = this.relay && this.relay.receiver;
    if (!receiver || !("jitterBufferTarget" in receiver)) return;
    const target = Math.round(this.tile.delayMs() / 10) * 10;
    const sync = this.tile.state.sync;
    if (sync.delayMs !== target) {
      try {
        receiver.jitterBufferTarget = target;
        sync.delayMs = target;
      } catch (_) { /* out of range in this browser */ }
    }
  }

  overlayKey(msg) {
    return timeKey(msg);
  }

  originOf(key) {
    return this.receivedAt.get(key) ?? null;
  }

  _close(keepalive = false) {
    if (!this.relay) return;
    const peer = this.relay.peer;
    this.relay.pc.close();
    this.relay = null;
    this.api(`/relay/peer/${peer}`, { method: "DELETE", keepalive }).catch(() => {});
  }

  detach() {
    this.detached = true;
    this._close();
  }

  hangUp() {
    if (this.relay) this.api(`/relay/peer/${this.relay.peer}`, { method: "DELETE", keepalive: true }).catch(() => {});
  }
}

export class LocalView {
  /** `local`: what rtc.sendMedia returned ({stream, peer, media, pc, clock, sender}); `words`: what the tile
   * says before the first picture (a webcam's by default). */
  constructor(api, local, words = { connecting: "Starting your camera…", waiting: "Waiting for your camera…" }) {
    this.api = api;
    this.local = local;
    this.mode = "local";
    this.clock = local.clock ? "capture" : "arrival";
    this.words = words;
    this.problem = null;
    this.preview = el("canvas", "preview");
    this.frames = []; // captured, not yet shown: [{bmp, cap}]
    this.shown = null;
    this.count = 0;
    this.detached = false;
  }

  attach(tile) {
    this.tile = tile;
    const { video } = tile;
    const { pc, media, clock } = this.local;
    tile.state.capture = this.local.sender || null; // what the camera gives and the sender was set to
    video.after(this.preview);
    video.srcObject = media;
    video.classList.add("source"); // decoded, not shown: the preview canvas shows delayed frames
    video.play().catch(() => {});
    pc.addEventListener("connectionstatechange", () => {
      if (this.detached) return;
      const s = pc.connectionState;
      if (s === "failed") this.problem = { text: "The connection to the server failed; remove this stream and try again.", kind: "webrtc" };
      else if (s === "disconnected") this.problem = { text: "The connection to the server was interrupted…", kind: "webrtc" };
      else if (s === "connected") this.problem = null;
      else return;
      tile.refreshMessage();
    });
    const grab = (now, meta) => {
      if (this.detached) return;
      const cap = meta.captureTime ?? now;
      if (clock) clock.onCaptured(meta.captureTime);
      const w = Math.min(meta.width || video.videoWidth, MAX_PREVIEW_WIDTH);
      const h = Math.round(w * (meta.height || video.videoHeight) / (meta.width || video.videoWidth));
      createImageBitmap(video, { resizeWidth: w, resizeHeight: h, resizeQuality: "low" })
        .then((bmp) => {
          if (this.detached) return bmp.close();
          this.frames.push({ bmp, cap });
          this.count += 1;
          tile.onPicture(meta.width, meta.height, this.count);
        })
        .catch(() => {});
      video.requestVideoFrameCallback(grab);
    };
    video.requestVideoFrameCallback(grab);
    const paint = () => {
      if (this.detached) return;
      this._paint();
      requestAnimationFrame(paint);
    };
    requestAnimationFrame(paint);
  }

  /** Show the newest frame captured at least the overlays' delay ago. */
  _paint() {
    const tile = this.tile;
    const clock = this.local.clock;
    const delay = clock && clock.ready ? tile.delayMs() : 0;
    const sync = tile.state.sync;
    sync.delayMs = Math.round(delay);
    sync.exact = Boolean(clock && clock.exact);
    if (clock) sync.originVotes = clock.votes.slice(0, 5);
    const due = performance.now() - delay;
    let pick = -1;
    for (let i = 0; i < this.frames.length; i++) if (this.frames[i].cap <= due) pick = i;
    if (pick < 0) return;
    const frame = this.frames[pick];
    for (const old of this.frames.splice(0, pick)) old.bmp.close();
    if (frame === this.shown) return;
    this.shown = frame;
    const { w, h } = tile.fit(this.preview);
    const ctx = this.preview.getContext("2d");
    const rect = contentRect(frame.bmp.width, frame.bmp.height, w, h);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    ctx.drawImage(frame.bmp, rect.x, rect.y, rect.w, rect.h);
    tile.showFrame(clock && clock.ready ? clock.ptsOf(frame.cap) : null, frame.bmp.width, frame.bmp.height);
  }

  overlayKey(msg) {
    const clock = this.local.clock;
    if (!clock) return timeKey(msg);
    const key = ptsKey(msg);
    clock.onOverlayPts(key);
    return key;
  }

  originOf(key) {
    const clock = this.local.clock;
    return clock && clock.ready ? clock.captureTimeOfPts(key) : null;
  }

  detach() {
    if (this.detached) return;
    this.detached = true;
    this.local.media.getTracks().forEach((t) => t.stop());
    this.local.pc.close();
    for (const f of this.frames) f.bmp.close();
    this.frames = [];
  }

  hangUp() {
    this.api(`/offer/${this.local.peer}`, { method: "DELETE", keepalive: true }).catch(() => {});
  }
}
