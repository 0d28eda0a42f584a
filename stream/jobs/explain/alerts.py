"""Explaining an alert from what `serve` kept of it: its record in `DATA_DIR/alerts.jsonl` and its evidence
(`DATA_DIR/evidence/<id>/snapshot.jpg`, the face crop when the alert started, and `clip.mp4`, its recent crops).

The explanation is written into the alert's own evidence folder (`explanation.json`, `explanation.md`,
`explanation.png`), so it is cached per alert and deleted with the evidence when retention removes the folder.
The folder's modification time is put back after writing, so explaining an alert does not make retention keep it
longer than the alerts around it.

Only those two evidence files and the log are read: how the evidence is recorded may change, these paths do not.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream.jobs.explain.gradcam import Explanation, ExplainError, GradCam, save_overlay
from stream.live.bus.base import ALERTS_LOG_NAME as ALERTS_LOG
from stream.live.evidence.names import ALERT_ID, EVIDENCE_DIR, SNAPSHOT
from stream.live.evidence.names import STRIP as CLIP
from stream.jobs.explain.report import (EXPLANATION_JSON, EXPLANATION_PNG, explain_with_citations, facts_of, write)

TOP_FRAMES = 4  # evidence crops explained: the most fake-looking of the snapshot and the clip's frames


class AlertNotFound(LookupError, ValueError):
    """No such alert in the log, or its evidence is gone; the message says which."""


def find_alert(data_dir: Path, alert_id: str) -> dict:
    """The alert's last message in the log (an `end` carries its final peak score)."""
    if not ALERT_ID.match(alert_id):
        raise AlertNotFound(f"{alert_id!r} is not an alert id (32 hex digits)")
    log = Path(data_dir) / ALERTS_LOG
    if not log.is_file():
        raise AlertNotFound(f"no alert log at {log}")
    found = None
    with log.open(encoding="utf-8") as f:
        for line in f:
            if alert_id in line:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("id") == alert_id:
                    found = msg
    if found is None:
        raise AlertNotFound(f"alert {alert_id} is not in {log}")
    return found


def evidence_folder(data_dir: Path, alert_id: str) -> Path:
    return Path(data_dir) / EVIDENCE_DIR / alert_id


def evidence_crops(folder: Path, size: int) -> tuple[np.ndarray, list[str]]:
    """The snapshot and the clip's frames, resized to the engine's input (they are face crops already), and a
    label per crop. The clip is optional; a missing snapshot and clip is AlertNotFound."""
    from PIL import Image

    crops, labels = [], []
    snap = folder / SNAPSHOT
    if snap.is_file():
        crops.append(np.asarray(Image.open(snap).convert("RGB").resize((size, size), Image.BILINEAR)))
        labels.append("snapshot")
    clip = folder / CLIP
    if clip.is_file():
        import av

        try:
            with av.open(str(clip)) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    crops.append(np.asarray(frame.to_image().resize((size, size), Image.BILINEAR)))
                    labels.append(f"clip frame {i}")
        except (av.FFmpegError, OSError):
            pass  # a clip still being written, or damaged: the snapshot alone is explained
    if not crops:
        raise AlertNotFound(f"no evidence in {folder} (not written yet, or removed by retention)")
    return np.stack(crops), labels


def explain_crops(engine, crops: np.ndarray, top: int, track: int) -> list[Explanation]:
    """Score every crop, Grad-CAM the `top` most fake-looking, most fake first."""
    from stream.live.faces.quality import QUALITY_CROP, FaceQuality, sharpness

    from PIL import Image

    cam = GradCam(engine)
    scores = np.asarray(engine.predict(crops), np.float64)
    order = [int(i) for i in np.argsort(-scores, kind="stable")[:top]]
    p_fake, heat = cam(crops[order])
    out = []
    for i, p, h in zip(order, p_fake, heat):
        small = np.asarray(Image.fromarray(crops[i]).resize((QUALITY_CROP[0],) * 2, Image.BILINEAR))
        out.append(Explanation(frame=i, track=track, p_fake=float(p), crop=crops[i], heatmap=h,
                               saturated=not h.any(), quality=FaceQuality(0.0, sharpness(small))))
    return out


@dataclass
class AlertExplainer:
    """Builds (once) and returns an alert's explanation record. Not thread-safe by design: `serve` calls it on
    its one explain worker thread, never on the scoring thread; engines and MTCNN are its own, built on first use."""

    data_dir: Path
    retriever_factory: object  # () -> Retriever, called once on first use
    engine_factory: object  # (model name) -> torch engine
    detector_factory: object | None = None  # () -> FaceDetector, for landmarks on the crops; None: template
    llm: object | None = None  # LLMSettings
    top: int = TOP_FRAMES
    _engines: dict = field(default_factory=dict)
    _retriever: object | None = None
    _detector: object | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cached(self, alert_id: str) -> dict | None:
        path = evidence_folder(self.data_dir, alert_id) / EXPLANATION_JSON
        if ALERT_ID.match(alert_id) and path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        return None

    def __call__(self, alert_id: str, model: str | None = None, out: Path | None = None) -> dict:
        with self._lock:
            if out is None and (hit := self.cached(alert_id)) is not None:
                return hit
            return self._explain(alert_id, model, out)

    def _explain(self, alert_id: str, model: str | None, out: Path | None) -> dict:
        from engines.registry import MODELS
        from stream.jobs.explain.regions import crop_landmarks

        alert = find_alert(self.data_dir, alert_id)
        if alert.get("modality") == "voice":
            raise ExplainError(f"alert {alert_id} is a voice alert: explanations show where a face was judged fake; "
                               "a voice alert's evidence is its scored windows (voice_windows.json and .wav)")
        folder = evidence_folder(self.data_dir, alert_id)
        names = [model] if model else sorted(alert.get("engines") or {}, key=lambda n: n not in MODELS)
        if not names:
            raise ExplainError(f"alert {alert_id} names no model to explain it with; pass --model")
        if names[0] not in self._engines:
            self._engines[names[0]] = self.engine_factory(names[0])
        engine = self._engines[names[0]]
        crops, labels = evidence_crops(folder, engine.spec.size)
        items = explain_crops(engine, crops, self.top, int(alert.get("track", 0)))
        if self._detector is None and self.detector_factory is not None:
            self._detector = self.detector_factory()
        landmarks = crop_landmarks(self._detector, np.stack([i.crop for i in items]))
        if self._retriever is None:
            self._retriever = self.retriever_factory()
        threshold = MODELS[engine.name].threshold if engine.name in MODELS else 0.5
        source = f"alert {alert_id} ({alert.get('stream')}, track {alert.get('track')}, {labels[items[0].frame]})"
        facts = facts_of(source, engine, items, landmarks, threshold, alert=alert_id)
        record = explain_with_citations(facts, self._retriever, self.llm)
        record["alert"] = {k: alert.get(k) for k in ("id", "stream", "track", "started_at", "ended_at",
                                                     "score_max", "engines")}
        record["image"] = EXPLANATION_PNG
        target = out or folder
        stamp = folder.stat() if out is None else None
        target.mkdir(parents=True, exist_ok=True)
        save_overlay(target / EXPLANATION_PNG, items[0],
                     f"{engine.name} · {labels[items[0].frame]} · p_fake {items[0].p_fake:.3f}")
        write(target, record)
        if stamp is not None:
            os.utime(folder, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # retention order stays the alert's
        return record
