// Matching overlays to the video frame on screen, by timestamp (never by arrival order).
//
// Every overlay carries the scored frame's timestamp: `pts` (for a browser webcam, the RTP timestamp the
// browser's sender stamped on it) and `time` (seconds). Each tile keeps a short buffer of overlays and, for the
// frame being displayed, draws the overlay whose timestamp is nearest that frame's, within a tolerance.
//
// - Relayed video (RelayClock): the server stamps each relayed frame with the scored frame's time at 90 kHz
//   plus an epoch offset, and tells us over the "dfstream-sync" data channel how its RTP timestamps map back:
//   time = (rtpTimestamp - base) mod 2^32 / 90000 for the newest epoch whose `from` <= rtpTimestamp.
//   requestVideoFrameCallback gives the displayed frame's rtpTimestamp.
// - Local webcam preview (CaptureClock): Chrome stamps outgoing RTP as 90 * captureTime(ms) + a constant. An
//   encoded-frame transform on the sender sees every frame's RTP timestamp when it is encoded, shortly after
//   capture; requestVideoFrameCallback on the preview gives each frame's captureTime. The constant is found by
//   pairing them, so a preview frame's captureTime gives the RTP timestamp the server will report as its pts.

export const CLOCK = 90000;
const U32 = 2 ** 32;

/** Signed distance a - b between two 32-bit RTP timestamps, in ticks (handles wrap-around). */
export function rtpDiff(a, b) {
  return (a - b) | 0;
}

/** A short, timestamp-keyed buffer of one stream's overlays. */
export class OverlayBuffer {
  constructor(keep = 120, keepMs = 8000) {
    this.keep = keep;
    this.keepMs = keepMs;
    this.items = []; // {key, msg, arrived}
  }

  push(key, msg) {
    const now = performance.now();
    this.items.push({ key: key >>> 0, msg, arrived: now });
    while (this.items.length > this.keep || (this.items.length && now - this.items[0].arrived > this.keepMs)) {
      this.items.shift();
    }
  }

  /** The overlay nearest `key` within `tolerance` ticks, with its distance; null if none is that close. */
  nearest(key, tolerance) {
    let best = null;
    let bestDist = Infinity;
    for (const item of this.items) {
      const d = Math.abs(rtpDiff(key, item.key));
      if (d < bestDist) {
        best = item;
        bestDist = d;
      }
    }
    return best && bestDist <= tolerance ? { ...best, dist: bestDist } : null;
  }

  latest() {
    return this.items.length ? this.items[this.items.length - 1] : null;
  }

  clear() {
    this.items = [];
  }
}

/** Overlay key for relayed video and other pages' streams: the scored frame's time at 90 kHz. */
export function timeKey(msg) {
  return Math.round((msg.time || 0) * CLOCK) % U32;
}

/** Overlay key for this page's own webcam: the RTP timestamp aiortc received (the overlay's pts). */
export function ptsKey(msg) {
  return (msg.pts ?? 0) >>> 0;
}

/** RTP timestamps of relayed video -> scored frame time key, from the server's epochs. */
export class RelayClock {
  constructor() {
    this.epochs = null; // [{from, base}], oldest first
  }

  update(msg) {
    if (msg && Array.isArray(msg.epochs) && msg.epochs.length) this.epochs = msg.epochs;
  }

  get ready() {
    return this.epochs !== null;
  }

  /** The overlay key of the frame with RTP timestamp `rtp`, or null while the mapping is unknown. */
  key(rtp) {
    if (!this.epochs || rtp === undefined || rtp === null) return null;
    let epoch = this.epochs[0];
    for (const e of this.epochs) if (rtpDiff(rtp, e.from) >= 0) epoch = e;
    return (rtp - epoch.base) >>> 0;
  }
}

/**
 * Local capture time (ms, performance.now clock) <-> the RTP timestamps the browser sends <-> the pts the server
 * reports. Chrome stamps outgoing RTP as 90 * captureTime + a constant; aiortc reports a received frame's pts as
 * its RTP timestamp less the RTP timestamp of the first frame it received (`origin`). The constant comes from
 * pairing encoded frames with preview frames; the origin from which of the first frames sent makes the
 * overlays' pts land exactly on frames that were sent (normally the very first).
 */
export class CaptureClock {
  constructor() {
    this.rtp0 = null; // first RTP timestamp seen; offsets are relative to it
    this.encoded = []; // [rtpRel, encodedAt(ms)]
    this.captures = []; // captureTime (ms) of preview frames
    this.offset = null; // rtpRel = offset + 90 * captureTime
    this.exact = false; // offset from paired frames (else bounded by the encoder delay)
    this.first = []; // the first RTP timestamps sent: candidates for the server's origin
    this.votes = [];
    this.sent = new Set(); // recent RTP timestamps sent
    this.sentOrder = [];
  }

  get ready() {
    return this.offset !== null;
  }

  get origin() {
    if (!this.first.length) return null;
    let best = 0;
    for (let k = 1; k < this.votes.length; k++) if (this.votes[k] > this.votes[best]) best = k;
    return this.first[best];
  }

  /** From the sender's encoded-frame transform, for each frame as it is encoded. */
  onEncoded(rtp, at = performance.now()) {
    rtp >>>= 0;
    if (this.rtp0 === null) this.rtp0 = rtp;
    if (this.first.length < 30) { this.first.push(rtp); this.votes.push(0); }
    this.sent.add(rtp);
    this.sentOrder.push(rtp);
    if (this.sentOrder.length > 900) this.sent.delete(this.sentOrder.shift());
    this.encoded.push([(rtp - this.rtp0) >>> 0, at]);
    if (this.encoded.length > 150) this.encoded.shift();
    if (this.encoded.length <= 10 || this.encoded.length % 10 === 0 || !this.exact) this._solve();
  }

  /** From requestVideoFrameCallback on the local preview. */
  onCaptured(captureTime) {
    if (captureTime === undefined || captureTime === null) return;
    this.captures.push(captureTime);
    if (this.captures.length > 300) this.captures.shift();
  }

  /** Each overlay's pts votes for the origins under which it is a frame that was really sent. */
  onOverlayPts(pts) {
    for (let k = 0; k < this.first.length; k++) if (this.sent.has((this.first[k] + pts) >>> 0)) this.votes[k] += 1;
  }

  _solve() {
    // rtpRel - 90 * encodedAt = offset - 90 * (encoder delay): the largest is the offset less the shortest delay.
    let coarse = -Infinity;
    for (const [rel, at] of this.encoded) coarse = Math.max(coarse, rel - (CLOCK / 1000) * at);
    // Pair each encoded frame with the preview frame captured then; the pairs give the offset exactly.
    const exact = [];
    for (const [rel] of this.encoded) {
      const predicted = (rel - coarse) / (CLOCK / 1000);
      let best = null;
      for (const c of this.captures) if (best === null || Math.abs(c - predicted) < Math.abs(best - predicted)) best = c;
      if (best !== null && Math.abs(best - predicted) <= 15) exact.push(rel - (CLOCK / 1000) * best);
    }
    if (exact.length >= 5) {
      exact.sort((a, b) => a - b);
      this.offset = exact[exact.length >> 1];
      this.exact = true;
    } else {
      this.offset = coarse;
      this.exact = false;
    }
  }

  /** The pts the server gives the frame captured at `captureTime`, or null while unknown. */
  ptsOf(captureTime) {
    const origin = this.origin;
    if (this.offset === null || origin === null || captureTime === undefined || captureTime === null) return null;
    const rtp = (this.rtp0 + Math.round(this.offset + (CLOCK / 1000) * captureTime)) >>> 0;
    return (rtp - origin) >>> 0;
  }

  /** The capture time (ms) of the frame the server reports as `pts`. */
  captureTimeOfPts(pts) {
    const origin = this.origin;
    if (this.offset === null || origin === null) return null;
    const rtp = (origin + pts) >>> 0;
    return (((rtp - this.rtp0) >>> 0) - this.offset) / (CLOCK / 1000);
  }
}

/** p-th percentile of numbers (0..100). */
export function percentile(values, p) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
