// Drawing one overlay message on a canvas: a box per face, its track id, the fused p(fake) as a label and a bar,
// coloured by the track's verdict. A "low-quality" face (below every engine's quality floor: it counts toward no
// verdict) is drawn grey and dashed, labelled with the server's reason instead of a score.

export const LOW_QUALITY = "low-quality";
export const COLOURS = { real: "#2fb36b", uncertain: "#f0b429", fake: "#e5484d", [LOW_QUALITY]: "#6b7385", none: "#8a94a6" };

export function colourOf(verdict) {
  return COLOURS[verdict] || COLOURS.none;
}

const LABEL_MAX = 56;

/** A face's colour: its verdict's, grey while not scored, a darker grey when low-quality. */
export function faceColour(face) {
  if (face.verdict === LOW_QUALITY) return COLOURS[LOW_QUALITY];
  return colourOf(face.score === null ? "none" : face.verdict);
}

/** The words on a face's box. */
export function faceLabel(face) {
  if (face.verdict === LOW_QUALITY) {
    const why = face.reason ? `: ${face.reason}` : "";
    const label = `#${face.track} low quality${why}`;
    return label.length > LABEL_MAX ? `${label.slice(0, LABEL_MAX - 1)}…` : label; // the tooltip has it all
  }
  if (face.score === null) return `#${face.track} scoring…`;
  return `#${face.track} ${face.verdict} ${percent(face.score)}`;
}

/** Where a frame of `w` x `h` shows inside a `cw` x `ch` element with object-fit: contain. */
export function contentRect(w, h, cw, ch) {
  if (!w || !h) return { x: 0, y: 0, w: cw, h: ch };
  const s = Math.min(cw / w, ch / h);
  return { x: (cw - w * s) / 2, y: (ch - h * s) / 2, w: w * s, h: h * s };
}

export function percent(p) {
  return p === null || p === undefined ? "–" : `${Math.round(p * 100)}%`;
}

/**
 * Draw `msg` (an overlay) on `ctx`, whose canvas is `cw` x `ch` CSS pixels, over video shown in `rect`.
 * Returns the faces as drawn (boxes in CSS pixels) for hit-testing the per-engine tooltip.
 */
export function drawOverlay(ctx, msg, rect, cw, ch) {
  ctx.clearRect(0, 0, cw, ch);
  if (!msg || !msg.faces) return [];
  const [fw, fh] = msg.frame_size || [rect.w, rect.h];
  const sx = rect.w / fw;
  const sy = rect.h / fh;
  const drawn = [];
  ctx.font = "600 13px system-ui, sans-serif";
  ctx.textBaseline = "top";
  for (const face of msg.faces) {
    const [x1, y1, x2, y2] = face.box;
    const box = { x: rect.x + x1 * sx, y: rect.y + y1 * sy, w: (x2 - x1) * sx, h: (y2 - y1) * sy };
    const low = face.verdict === LOW_QUALITY;
    const colour = faceColour(face);
    ctx.lineWidth = 3;
    ctx.strokeStyle = colour;
    ctx.setLineDash(low ? [6, 4] : []);
    ctx.strokeRect(box.x, box.y, box.w, box.h);
    ctx.setLineDash([]);

    const label = faceLabel(face);
    const tw = ctx.measureText(label).width + 10;
    const ly = box.y >= 20 ? box.y - 20 : box.y + box.h + 2;
    const lx = Math.max(0, Math.min(box.x - 1.5, cw - tw)); // a long label stays on the canvas
    ctx.fillStyle = colour;
    ctx.fillRect(lx, ly, tw, 19);
    ctx.fillStyle = low ? "#f3f4f7" : "#0b0e14";
    ctx.fillText(label, lx + 5.5, ly + 3);

    // p(fake) bar along the bottom edge of the box: empty = real, full = fake
    const by = Math.min(ch - 6, box.y + box.h + (ly > box.y ? 22 : 4));
    ctx.fillStyle = "rgba(11, 14, 20, 0.75)";
    ctx.fillRect(box.x, by, box.w, 6);
    if (face.score !== null && !low) {
      ctx.fillStyle = colour;
      ctx.fillRect(box.x, by, box.w * Math.max(0, Math.min(1, face.score)), 6);
    }
    drawn.push({ ...box, face });
  }
  return drawn;
}

/** The verdict strip: one column per overlay over the last `spanMs`, grey where no face was tracked. */
export function drawStrip(ctx, history, width, height, spanMs, now = Date.now()) {
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#1a1f2b";
  ctx.fillRect(0, 0, width, height);
  const start = now - spanMs;
  for (let i = 0; i < history.length; i++) {
    const h = history[i];
    if (h.t < start) continue;
    const next = i + 1 < history.length ? history[i + 1].t : now;
    const x = ((h.t - start) / spanMs) * width;
    const w = Math.max(1, ((Math.min(next, h.t + 2000) - h.t) / spanMs) * width);
    ctx.fillStyle = h.verdict ? colourOf(h.verdict) : "#2c3342";
    ctx.fillRect(x, 0, w, height);
  }
}
