// WebRTC with the server: the webcam goes up (POST /offer), relayed cameras come down (POST /relay/{stream}).
// The server (aiortc) does not trickle ICE, so each offer is sent once its candidates are gathered.

import { CaptureClock } from "./sync.js";

const GATHER_TIMEOUT_MS = 3000;

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
 * Send the webcam to the server. Returns {stream, peer, media, pc, clock}; `clock` maps preview capture times to
 * the RTP timestamps the server reports (null where the browser has no encoded-frame transforms).
 */
export async function startWebcam(api, name) {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    const err = new Error("Browsers only give pages a camera over https or on localhost. Open this page as http://localhost:PORT/ on the machine running dfstream, or serve it over https.");
    err.name = "InsecureContext";
    throw err;
  }
  const media = await navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 25, max: 30 } },
    audio: false,
  });
  const transforms = typeof RTCRtpSender !== "undefined" && "createEncodedStreams" in RTCRtpSender.prototype;
  let pc;
  try {
    pc = new RTCPeerConnection(transforms ? { encodedInsertableStreams: true } : {});
    const sender = pc.addTrack(media.getVideoTracks()[0], media);
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
    const answer = await negotiate(pc, api, "/offer", { name });
    return { stream: answer.stream, peer: answer.peer, media, pc, clock };
  } catch (err) {
    media.getTracks().forEach((t) => t.stop());
    if (pc) pc.close();
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
