// "Learn normal" on a tile: the camera learns its baseline from its next N seconds (footage the operator vouches
// for as real) through POST /api/streams/NAME/baseline, shows the progress the stream's status reports, then the
// camera's bar and α. A refusal (too few faces, a stretch the model already calls fake, ...) is said on the tile;
// the bar in force stays. "Forget" (DELETE) goes back to the global bar. Where the server judges the stream's voice,
// the same seconds learn its voice bar too: its progress (voice windows), bar or refusal are said beside the faces'.

import { api } from "./api.js";

const DEFAULT_SECONDS = 60;
const MAX_SECONDS = 3600; // the server's MAX_LEARN_S

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const pct = (p) => `${Number((100 * p).toFixed(2))} %`;

/** One sentence for a learned bar: the camera's threshold against the global one, α, n and the rule. */
export function barText(bar) {
  const when = bar.learned_at ? new Date(bar.learned_at).toLocaleString() : "";
  const from = bar.origin === "config" ? "from the config file" : `learned ${when}`;
  const voice = bar.modality === "voice";
  return `${voice ? "Voice bar" : "Camera bar"} ${bar.threshold.toFixed(voice ? 4 : 2)} ` +
    `(global ${bar.global_threshold.toFixed(2)}), α ${pct(bar.alpha)}, ` +
    `${bar.n_eff} samples of ${bar.faces} ${voice ? "voice windows" : "faces"}, ${bar.rule}` +
    `${bar.clipped ? ` (at the ${bar.clipped})` : ""}, ${from}`;
}

/** The voice's part of the tile's sentence: its bar, or why it was not learned ("" without a voice part). */
function voiceText(voice) {
  if (!voice) return "";
  if (voice.error) return ` Voice: not learned: ${voice.error}${voice.bar ? ` Still: ${barText(voice.bar)}` : ""}`;
  return voice.bar ? ` ${barText(voice.bar)}` : "";
}

export class BaselineControl {
  constructor(name) {
    this.name = name;
    this.state = { learning: null, bar: null, error: null, slowed: false, pending: false, voice: null };
    this.el = el("form", "baseline");
    this.el.autocomplete = "off";
    this.secondsEl = el("input", "baseline-seconds");
    Object.assign(this.secondsEl, { type: "number", min: "1", max: String(MAX_SECONDS), step: "1",
      value: String(DEFAULT_SECONDS), title: "seconds of this camera's footage to learn from" });
    this.secondsEl.setAttribute("aria-label", "seconds to learn from");
    this.learnBtn = el("button", "learn", "Learn normal");
    this.learnBtn.type = "submit";
    this.learnBtn.title = "Learn this camera's normal from its next seconds of footage, which you vouch for as real";
    this.forgetBtn = el("button", "forget", "Forget");
    this.forgetBtn.type = "button";
    this.forgetBtn.title = "Forget the learned bar: back to the global one";
    this.forgetBtn.hidden = true;
    this.textEl = el("span", "baseline-text", "Global bar");
    this.el.append(this.secondsEl, el("span", "unit", "s"), this.learnBtn, this.forgetBtn, this.textEl);
    this.el.addEventListener("submit", (e) => { e.preventDefault(); this.learn(); });
    this.forgetBtn.addEventListener("click", () => this.forget());
  }

  /** The stream's status said this of its baseline (undefined: the global bar, nothing learned). */
  onStatus(baseline) {
    const b = baseline || {};
    this.state.learning = b.learning || null;
    this.state.bar = b.bar || null;
    this.state.slowed = Boolean(b.slowed);
    if (!this.state.pending) {
      this.state.error = b.error || null;
      this.state.voice = b.voice || null;
    }
    this.render();
  }

  render() {
    const { learning, bar, error, slowed, pending, voice } = this.state;
    let text = "Global bar";
    let kind = "";
    if (learning) {
      const heard = voice && voice.learning ? `, ${voice.learning.windows} voice window` +
        `${voice.learning.windows === 1 ? "" : "s"}` : "";
      text = `Learning normal… ${Math.floor(learning.done)} / ${learning.seconds} s, ${learning.faces} face` +
        `${learning.faces === 1 ? "" : "s"}${heard} so far`;
      kind = "learning";
    } else if (error) {
      text = `Not learned: ${error}${bar ? ` Still: ${barText(bar)}` : ""}`;
      kind = "error";
    } else if (bar) {
      text = barText(bar) + (slowed ? ` (analysed below the learned ${bar.fps} fps: the server is loaded)` : "");
      kind = "learned";
    }
    if (!learning) text += voiceText(voice);
    this.textEl.textContent = text;
    this.el.dataset.kind = kind;
    this.learnBtn.disabled = pending || Boolean(learning);
    this.learnBtn.textContent = pending || learning ? "Learning…" : "Learn normal";
    const learned = (bar && bar.origin === "learned") || (voice && voice.bar && voice.bar.origin === "learned");
    this.forgetBtn.hidden = !learned || Boolean(learning);
  }

  async learn() {
    const seconds = Number(this.secondsEl.value || DEFAULT_SECONDS);
    if (!(seconds > 0 && seconds <= MAX_SECONDS)) {
      this.state.error = `the seconds must be between 1 and ${MAX_SECONDS}`;
      return this.render();
    }
    this.state.pending = true;
    this.state.error = null;
    this.state.learning = { seconds, done: 0, faces: 0 };
    this.render();
    try {
      const learned = await api(`/api/streams/${encodeURIComponent(this.name)}/baseline`,
        { method: "POST", json: { seconds } });
      if (learned.bar) this.state.bar = learned.bar; // else the bar in force stays
      this.state.error = learned.error || null; // the faces refused while the voice was learned
      this.state.voice = learned.voice || null;
    } catch (err) {
      this.state.error = err.message;
    } finally {
      this.state.pending = false;
      this.state.learning = null;
      this.render();
    }
  }

  async forget() {
    try {
      const now = await api(`/api/streams/${encodeURIComponent(this.name)}/baseline`, { method: "DELETE" });
      this.state.bar = now.bar;
      this.state.voice = now.voice || null;
      this.state.error = null;
    } catch (err) {
      this.state.error = err.message;
    }
    this.render();
  }
}
