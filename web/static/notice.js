// The page-wide notice under the header: one sentence at a time (an error, a camera problem), gone after 15 s
// unless sticky.

const NOTICE_MS = 15000;

export class Notice {
  /** `onChange` gets {text, kind} or null, for the page's state. */
  constructor(el, onChange = () => {}) {
    this.el = el;
    this.onChange = onChange;
    this.timer = null;
  }

  show(text, kind = "info", sticky = false) {
    this.onChange(text ? { text, kind } : null);
    this.el.textContent = text || "";
    this.el.dataset.kind = kind;
    this.el.hidden = !text;
    clearTimeout(this.timer);
    if (text && !sticky) this.timer = setTimeout(() => this.clear(), NOTICE_MS);
  }

  clear() {
    this.show(null);
  }
}
