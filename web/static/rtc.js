// WebRTC with the server: the webcam and shared screens go up (POST /offer), relayed cameras come down
// (POST /relay/{stream}).
// The server (aiortc) does not trickle ICE, so each offer is sent once its candidates are gathered.

import { CaptureClock } from "./sync.js";

const GATHER_TIMEOUT_MS = 3000;
// What the webcam asks for: 720p, because the detectors judge faces by their pixels (a small or blurred face is
// "low-quality" and judged by nothing). The encoder may spend up to 2.5 Mbps at 720p (more for larger frames), and
// on a poor link it lowers the frame rate, not the resolution.
export const CAPTURE = { width: 1280, height: 720, frameRate: 25, maxFrameRate: 30 };
export const MIN_BITRATE_BPS = 2_500_000; // the sender's cap at 720p and below
const DEGRADATION = "maintain-resolution";

/** The sender's bitrate cap for a `width` x `height` picture: 2.5 Mbps at 720p, and as much per pixel above. */
export function maxBitrateFor(width, height) {
  const perPixel = MIN_BITRATE_BPS / (CAPTURE.width * CAPTURE.height);
  return Math.max(MIN_BITRATE_BPS, Math.round(perPixel * (width || 0) * (height || 0)));
}

/**
 * Cap the sender's bitrate for the track's size and keep its resolution under congestion. Returns what the
 * browser reports back afterwards ({width, height, maxBitrate, degradationPreference, error}), for the page's
 * state: a browser may ignore a setting, and then the numbers say so.
 */
async function tuneSender(sender, track) {
  const settings = track.getSettings ? track.getSettings() : {};
  const out = { width: settings.width ?? null, height: settings.height ?? null, maxBitrate: null,
    degradationPreference: null, error: null };
  if ("contentHint" in track) track.contentHint = "detail"; // Chromium's own hint for keeping resolution
  const set = async (degradation) => {
    const params = sender.getParameters();
    if (!params.encodings || !params.encodings.length) params.encodings = [{}];
    for (const enc of params.encodings) enc.maxBitrate = maxBitrateFor(settings.width, settings.height);
    if (degradation) params.degradationPreference = DEGRADATION;
    await sender.setParameters(params);
  };
  try {
    await set(true);
  } catch (err) { // a browser without degradationPreference: at least the bitrate
    out.error = String((err && err.message) || err);
    await set(false).catch(() => {});
  }
  const now = sender.getParameters();
  out.maxBitrate = (now.encodings && now.encodings[0] && now.encodings[0].maxBitrate) ?? null;
  out.degradationPreference = now.degradationPreference ?? null;
  return out;
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_TIMEOUT_MS); // send what we have: host candidates come first
  });
}

async function negotiate(pc, api, path, extra = {}) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const answer = await api(path, { method: "POST", json: { sdp: pc.localDescription.sdp, type: "offer", ...extra } });
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  return answer;
}

/** Words for a getUserMedia failure. */
export function cameraErrorText(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return "Camera permission was denied. Allow the camera for this page (the camera icon in the address bar) and press “Use my webcam” again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return "No camera was found on this computer.";
  }
  if (name === "NotReadableError" || name === "AbortError" || name === "TrackStartError") {
    return "The camera could not be started: another program may be using it.";
  }
  return `The camera could not be started: ${(err && err.message) || err}`;
}

/**
 * Send local media (a webcam's, a shared screen's) to the server: its video track, with the encoded-frame clock
 * where the browser has transforms, and its first audio track if it has one (the server keeps it for the voice
 * path). `body` is the offer's own fields ({name, kind}). Returns {stream, peer, media, pc, clock, sender};
 * `clock` maps preview capture times to the RTP timestamps the server reports (null where the browser has no
 * encoded-frame transforms); `sender` is what tuneSender() set. On failure the caller still owns `media`.
 */
export async function sendMedia(api, media, body) {
  const transforms = typeof RTCRtpSender !== "undefined" && "createEncodedStreams" in RTCRtpSender.prototype;
  let pc;
  try {
    pc = new RTCPeerConnection(transforms ? { encodedInsertableStreams: true } : {});
    const video = media.getVideoTracks()[0];
    const sender = pc.addTrack(video, media);
    const audio = media.getAudioTracks()[0];
    if (audio) {
      const audioSender = pc.addTrack(audio, media);
      // with encoded insertable streams on, every sender's frames must be piped through, or none are sent
      if (transforms) {
        const { readable, writable } = audioSender.createEncodedStreams();
        readable.pipeTo(writable).catch(() => {});
      }
    }
    let clock = null;
    if (transforms) {
      clock = new CaptureClock();
      const { readable, writable } = sender.createEncodedStreams();
      readable
        .pipeThrough(new TransformStream({
          transform(frame, controller) {
            clock.onEncoded(frame.timestamp);
            controller.enqueue(frame);
          },
        }))
        .pipeTo(writable)
        .catch(() => {});
    }
    const answer = await negotiate(pc, api, "/offer", body);
    const tuned = await tuneSender(sender, video);
    return { stream: answer.stream, peer: answer.peer, media, pc, clock, sender: tuned };
  } catch (err) {
    if (pc) pc.close();
    throw err;
  }
}

// What the microphone is asked for: the voice as the microphone hears it. The server judges a voice by its fine
// structure, which the browser's noise suppression, gain control and echo cancellation rewrite; this page plays no
// sound, so there is no echo to cancel.
export const MICROPHONE = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
// A microphone that is refused, absent or busy leaves the camera alone: the stream goes without sound.
const NO_MICROPHONE = new Set(["NotAllowedError", "PermissionDeniedError", "NotFoundError", "DevicesNotFoundError",
  "NotReadableError", "TrackStartError", "OverconstrainedError", "AbortError"]);

/** The camera with the microphone where the browser allows it, else the camera alone. */
async function openCamera() {
  const video = {
    width: { ideal: CAPTURE.width }, height: { ideal: CAPTURE.height },
    frameRate: { ideal: CAPTURE.frameRate, max: CAPTURE.maxFrameRate },
  };
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: MICROPHONE });
  } catch (err) {
    if (!err || !NO_MICROPHONE.has(err.name)) throw err;
    return navigator.mediaDevices.getUserMedia({ video, audio: false }); // the camera's own failure throws here
  }
}

/** Send the webcam, and its microphone where allowed, to the server (see sendMedia for what it returns; `audio`
 * says whether the microphone went too). */
export async function startWebcam(api, name) {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    const err = new Error("Browsers only give pages a camera over https or on localhost. Open this page as http://localhost:PORT/ on the machine running dfstream, or serve it over https.");
    err.name = "InsecureContext";
    throw err;
  }
  const media = await openCamera();
  try {
    return { ...(await sendMedia(api, media, { name })), audio: media.getAudioTracks().length > 0 };
  } catch (err) {
    media.getTracks().forEach((t) => t.stop());
    throw err;
  }
}

/** Receive a stream's video relayed by the server. Returns {pc, peer, video MediaStream, receiver, channel}. */
export async function startRelay(api, stream, onSync) {
  const pc = new RTCPeerConnection();
  const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
  const channel = pc.createDataChannel("dfstream-sync");
  channel.onmessage = (e) => {
    try {
      onSync(JSON.parse(e.data));
    } catch (_) { /* not ours */ }
  };
  const media = new MediaStream([transceiver.receiver.track]);
  try {
    const answer = await negotiate(pc, api, `/relay/${encodeURIComponent(stream)}`);
    return { pc, peer: answer.peer, codec: answer.codec, media, receiver: transceiver.receiver, channel };
  } catch (err) {
    pc.close();
    throw err;
  }
}
