// The alert feed: one list item per alert id (a started alert is updated in place when it ends), newest first,
// labelled "face" or "voice" (a voice alert: the stream's sound, track -1, no snapshot but its scored windows), with
// the face snapshot (retried while the server is still writing it), a link to the face strip, once the
// full-frame recording is complete a button that opens it in the evidence player (player.js), and an "Explain"
// button: the server builds the alert's cited explanation once (Grad-CAM, passages, optional LLM) and the card
// shows its text, the heatmap and the numbered references.

import { api, withToken } from "./api.js";
import { percent } from "./draw.js";

const MAX_ALERTS_SHOWN = 50;
const SNAPSHOT_RETRIES = 20; // evidence is written in the background: the first tries may 404
const SNAPSHOT_RETRY_MS = 500;

function fileUrl(id, file) {
  return withToken(`/evidence/${encodeURIComponent(id)}/${encodeURIComponent(file)}`);
}

function evidenceUrl(alert, kind) {
  const path = alert.evidence && alert.evidence[kind];
  if (!path) return null;
  const file = String(path).split(/[\\/]/).pop();
  return withToken(`/evidence/${encodeURIComponent(alert.id)}/${encodeURIComponent(file)}`);
}

export class AlertFeed {
  /** `list` is the <ol>, `empty` the sentence shown while there are none. */
  constructor(list, empty, onOpen = null) {
    this.list = list;
    this.empty = empty;
    this.onOpen = onOpen; // (alert) => open its recording
    this.alerts = {}; // id -> {id, event, stream, track, …, snapshot: none|pending|loaded|error, clip}
  }

  onAlert(msg) {
    const a = this.alerts[msg.id] || { id: msg.id, snapshot: "none", clip: null };
    Object.assign(a, {
      event: msg.event, stream: msg.stream, track: msg.track, started_at: msg.started_at, ended_at: msg.ended_at,
      score_max: msg.score_max, engines: msg.engines, modality: msg.modality || "face",
      recording: (msg.evidence && msg.evidence.recording_state) || "none", // none | recording | complete
    });
    this.alerts[msg.id] = a;
    let li = document.getElementById(`alert-${msg.id}`);
    if (!li) li = this._add(msg, a);
    li.dataset.event = msg.event;
    this._fill(li.querySelector(".alert-body"), msg, a);
    this.empty.hidden = true;
  }

  _add(msg, a) {
    const li = document.createElement("li");
    li.id = `alert-${msg.id}`;
    li.className = "alert";
    li.dataset.modality = msg.modality || "face";
    const img = document.createElement("img");
    img.alt = msg.modality === "voice" ? `voice in ${msg.stream}` : `face in ${msg.stream}, track ${msg.track}`;
    const body = document.createElement("div");
    body.className = "alert-body";
    li.append(img, body, this._explainer(msg.id));
    this.list.prepend(li);
    const src = evidenceUrl(msg, "snapshot");
    if (src) {
      a.snapshot = "pending";
      let tries = 0;
      img.onload = () => { a.snapshot = img.naturalWidth > 0 ? "loaded" : "error"; li.dataset.snapshot = a.snapshot; };
      img.onerror = () => {
        tries += 1;
        if (tries > SNAPSHOT_RETRIES) { a.snapshot = "error"; li.dataset.snapshot = "error"; img.alt = "snapshot unavailable"; return; }
        setTimeout(() => { img.src = `${src}${src.includes("?") ? "&" : "?"}try=${tries}`; }, SNAPSHOT_RETRY_MS);
      };
      img.src = src;
    } else {
      img.alt = msg.modality === "voice" ? "voice alert: no face" : "no snapshot";
    }
    a.clip = evidenceUrl(msg, "clip");
    a.sound = evidenceUrl(msg, "voice_sound");
    while (this.list.children.length > MAX_ALERTS_SHOWN) this.list.lastElementChild.remove();
    return li;
  }

  /** The "Explain" button and the panel it fills: text with numbered citations, heatmap, references. */
  _explainer(id) {
    const box = document.createElement("div");
    box.className = "explain";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "explain-button";
    button.textContent = "Explain";
    const panel = document.createElement("div");
    panel.className = "explanation";
    panel.hidden = true;
    button.onclick = async () => {
      button.disabled = true;
      button.textContent = "Explaining…";
      box.dataset.state = "loading";
      try {
        const record = await api(`/api/alerts/${encodeURIComponent(id)}/explanation`, { method: "POST", json: {} });
        this._showExplanation(panel, id, record);
        box.dataset.state = "shown";
        button.textContent = "Explained";
      } catch (err) {
        panel.replaceChildren(Object.assign(document.createElement("p"), { className: "error", textContent: err.message }));
        panel.hidden = false;
        box.dataset.state = "error";
        button.disabled = false;
        button.textContent = "Explain";
      }
    };
    box.append(button, panel);
    return box;
  }

  _showExplanation(panel, id, record) {
    const parts = [];
    if (record.image) {
      const heat = document.createElement("img");
      heat.className = "heatmap";
      heat.alt = "Grad-CAM evidence";
      heat.src = fileUrl(id, record.image);
      parts.push(heat);
    }
    for (const para of String(record.text).split(/\n\n+/)) {
      const p = document.createElement("p");
      p.className = "explanation-text";
      p.textContent = para.replace(/\*\*/g, "");
      parts.push(p);
    }
    const notes = [record.llm_note, ...((record.retrieval && record.retrieval.notes) || [])].filter(Boolean);
    for (const note of notes) {
      parts.push(Object.assign(document.createElement("p"), { className: "note", textContent: `Note: ${note}` }));
    }
    const refs = document.createElement("ol");
    refs.className = "citations";
    for (const c of record.citations || []) {
      const li = document.createElement("li");
      li.value = c.n;
      li.dataset.n = c.n;
      const url = c.citation && c.citation.url;
      if (url && /^https?:\/\//.test(url)) {
        const a = Object.assign(document.createElement("a"), { href: url, target: "_blank", rel: "noopener", textContent: c.reference });
        li.append(a);
      } else {
        li.textContent = c.reference;
      }
      li.title = `${c.heading}: ${c.text}`;
      refs.append(li);
    }
    parts.push(refs);
    panel.replaceChildren(...parts);
    panel.hidden = false;
  }

  _fill(body, msg, a) {
    body.replaceChildren();
    const title = document.createElement("strong");
    const voice = msg.modality === "voice";
    const label = document.createElement("span");
    label.className = "modality";
    label.dataset.modality = voice ? "voice" : "face";
    label.textContent = voice ? "voice" : "face";
    title.textContent = `${msg.stream}${voice ? "" : ` · track #${msg.track}`}`; // the label goes before it
    const when = new Date(msg.started_at * 1000).toLocaleTimeString();
    const what = document.createElement("div");
    what.textContent = msg.event === "end"
      ? `fake, peak ${percent(msg.score_max)} · ${when}–${new Date((msg.ended_at || msg.ts) * 1000).toLocaleTimeString()}`
      : `FAKE now, peak ${percent(msg.score_max)} · since ${when}`;
    const engines = document.createElement("div");
    engines.className = "engines";
    engines.textContent = Object.entries(msg.engines || {}).map(([k, v]) => `${k} ${percent(v)}`).join(" · ");
    body.append(label, title, what, engines);
    for (const [url, words] of [[a.clip, "evidence clip"], [a.sound, "windows heard"]]) {
      if (!url) continue;
      const link = document.createElement("a");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = words;
      body.append(link);
    }
    if (a.recording === "complete" && this.onOpen) {
      const play = document.createElement("button");
      play.type = "button";
      play.className = "play-recording";
      play.textContent = "▶ recording";
      play.addEventListener("click", () => this.onOpen(a));
      body.append(play);
    } else if (a.recording === "recording") {
      const note = document.createElement("span");
      note.className = "recording-note";
      note.textContent = "recording…";
      body.append(note);
    }
  }
}
