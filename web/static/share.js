// Share a screen, window or tab with the server: getDisplayMedia (video, and the tab's or system's sound where the
// browser offers it), sent over the webcam's WebRTC path (rtc.sendMedia) as an offer of kind "screen", so the
// server searches it for faces as a call's grid of small faces (the SCREEN detection profile).
//
// The stream is named after what was shared. Browsers differ: Firefox labels a shared window with its title,
// Chromium labels every share with an internal id ("web-contents-media-stream://…", "window:123:0",
// "screen:0:0") and tells a page no tab title at all. A readable label names the stream; an internal one gives way
// to the kind of surface ("tab", "window", "screen"). Either is made safe with the rules of config names and
// unique against the page's streams.

import { sendMedia } from "./rtc.js";

// What the share asks for: at most 1080p, because the server detects faces on at most 1280 px and a larger
// picture only costs bandwidth; 15 fps, because a call's faces are scored at 5 fps and screen encoders spend
// their bits better on detail than on motion.
export const SHARE_CAPTURE = { maxWidth: 1920, maxHeight: 1080, frameRate: 15, maxFrameRate: 30 };
const NAME_MAX = 64; // SourceConfig.name's max_length
const NAME_RULE = /[^A-Za-z0-9_.-]+/g; // SourceConfig.name's pattern, negated
const INTERNAL_LABEL = /^(web-contents-media-stream:|window:\d|screen:\d)/;
const SURFACE_NAMES = { browser: "tab", window: "window", monitor: "screen" };
const NAME_TRIES = 5; // offers re-sent under the next free name when another page took this one meanwhile
export const ENDED_POLL_MS = 500;

/** A stream name for a share: its readable label, else its kind of surface; safe and not in `taken`. */
export function streamNameFor(label, surface, taken) {
  const readable = label && !INTERNAL_LABEL.test(label) ? label : "";
  const ascii = readable.normalize("NFKD").replace(/[\u0300-\u036f]/g, ""); // "Café" -> "Cafe"
  let base = ascii.replace(NAME_RULE, "-").replace(/^-+|-+$/g, "");
  if (!base) base = SURFACE_NAMES[surface] || "screen";
  base = base.slice(0, NAME_MAX - 4).replace(/-+$/, ""); // room for "-NNN"
  let name = base;
  for (let k = 2; taken.has(name); k += 1) name = `${base}-${k}`;
  return name;
}

/** Words for a getDisplayMedia failure, or null where the user simply cancelled the picker. */
export function shareErrorText(err) {
  const name = err && err.name;
  if (name === "NotAllowedError") return null; // cancelled, or refused by the user: nothing to explain
  if (name === "InsecureContext") return err.message;
  if (name === "NotSupportedError" || name === "TypeError") {
    return "This browser cannot share a screen from a page. Use a desktop Chromium, Chrome, Edge or Firefox.";
  }
  if (name === "NotReadableError" || name === "AbortError") {
    return "The screen could not be captured: the system refused it (on macOS, allow screen recording for the browser).";
  }
  return `The screen could not be shared: ${(err && err.message) || err}`;
}

/**
 * Ask the user what to share and send it. `taken()` gives the stream names in use; `onNamed(name)` is told the
 * name before the offer goes, so the page recognises its own stream when the server announces it. Returns
 * what sendMedia returns, plus `name`. On failure every captured track is stopped and the error thrown.
 */
export async function startShare(api, taken, onNamed) {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
    const err = new Error(window.isSecureContext
      ? "This browser cannot share a screen from a page. Use a desktop Chromium, Chrome, Edge or Firefox."
      : "Browsers only let pages share a screen over https or on localhost. Open this page as http://localhost:PORT/ on the machine running dfstream, or serve it over https.");
    err.name = window.isSecureContext ? "NotSupportedError" : "InsecureContext";
    throw err;
  }
  const media = await navigator.mediaDevices.getDisplayMedia({
    video: {
      width: { max: SHARE_CAPTURE.maxWidth }, height: { max: SHARE_CAPTURE.maxHeight },
      frameRate: { ideal: SHARE_CAPTURE.frameRate, max: SHARE_CAPTURE.maxFrameRate },
    },
    audio: true, // a tab's sound (Chromium), or the system's where offered; nothing where not
    selfBrowserSurface: "exclude", // sharing this page would show it its own video, endlessly
    systemAudio: "include",
  });
  try {
    const video = media.getVideoTracks()[0];
    const surface = (video.getSettings && video.getSettings().displaySurface) || "";
    const skip = new Set(taken());
    for (let attempt = 1; ; attempt += 1) {
      const name = streamNameFor(video.label, surface, skip);
      onNamed(name);
      try {
        return { ...(await sendMedia(api, media, { name, kind: "screen" })), name, surface };
      } catch (err) {
        if (err.status !== 409 || attempt >= NAME_TRIES) throw err;
        skip.add(name); // another page took the name meanwhile: the next one
      }
    }
  } catch (err) {
    media.getTracks().forEach((t) => t.stop());
    throw err;
  }
}

/**
 * Call `onEnded()` once when the shared video ends: the browser's own "Stop sharing" control (an `ended` event),
 * or a `track.stop()` from the page, which fires no event (so the track's state is also polled). Returns the
 * function that stops watching.
 */
export function watchEnded(track, onEnded) {
  let done = false;
  const fire = () => {
    if (done) return;
    stop();
    onEnded();
  };
  const timer = setInterval(() => { if (track.readyState === "ended") fire(); }, ENDED_POLL_MS);
  track.addEventListener("ended", fire);
  function stop() {
    done = true;
    clearInterval(timer);
    track.removeEventListener("ended", fire);
  }
  return stop;
}
