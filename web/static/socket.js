// The websocket transport, apart from the page's state: it connects, reconnects with back-off (counting down
// to the next try), parses each message and hands it to the subscribers of its `type`. It knows nothing of
// streams, tiles or alerts.
//
//   const socket = new Socket(() => "ws://host/ws", { gate });
//   socket.subscribe("overlay", (msg) => …);   // returns an unsubscribe function
//   socket.onState(({ state, attempt, retryInS }) => …);
//   socket.connect();
//
// state: connecting | open | reconnecting (retryInS counts down each second) | closed (the gate said no: call
// connect() again when it may).

import { Backoff } from "./backoff.js";

export class Socket {
  /**
   * @param url () => string, asked at every (re)connect (the token may have changed)
   * @param gate optional async () => boolean, asked before each reconnect: false leaves the socket closed
   */
  constructor(url, { gate = null, maxBackoffS } = {}) {
    this.url = url;
    this.gate = gate;
    this.backoff = new Backoff(maxBackoffS);
    this.sock = null;
    this.retrying = false;
    this.handlers = new Map(); // type -> Set of callbacks
    this.listeners = new Set();
    this.status = { state: "connecting", attempt: 0, retryInS: null };
  }

  subscribe(type, callback) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(callback);
    return () => this.handlers.get(type).delete(callback);
  }

  onState(callback) {
    this.listeners.add(callback);
    return () => this.listeners.delete(callback);
  }

  /** Open the socket unless it is open, opening, or waiting to retry. */
  connect() {
    if (this.sock || this.retrying) return;
    if (this.status.state === "closed") this._set({ state: "connecting", attempt: 0, retryInS: null });
    this._open();
  }

  _set(status) {
    this.status = status;
    for (const fn of this.listeners) fn(status);
  }

  _open() {
    const sock = new WebSocket(this.url());
    this.sock = sock;
    sock.onopen = () => {
      this.backoff.reset();
      this._set({ state: "open", attempt: 0, retryInS: null });
    };
    sock.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      for (const fn of this.handlers.get(msg && msg.type) || []) fn(msg);
    };
    sock.onclose = () => {
      if (this.sock !== sock) return;
      this.sock = null;
      this._retry();
    };
  }

  _retry() {
    this.retrying = true;
    const delay = this.backoff.next();
    const attempt = this.backoff.attempt;
    let left = Math.max(1, Math.round(delay));
    this._set({ state: "reconnecting", attempt, retryInS: left });
    const tick = setInterval(() => {
      left = Math.max(0, left - 1);
      this._set({ state: "reconnecting", attempt, retryInS: left });
    }, 1000);
    setTimeout(async () => {
      clearInterval(tick);
      let go = true;
      if (this.gate) {
        try {
          go = await this.gate();
        } catch (_) {
          go = true;
        }
      }
      this.retrying = false;
      if (go) this._open();
      else this._set({ state: "closed", attempt, retryInS: null });
    }, delay * 1000);
  }
}
