"""The one inference loop of `serve`: pacing and the pass.

Each pass takes the newest frame of every stream that is due (per-stream target of analysed frames per second),
runs MTCNN on all of them as one batch, updates each stream's tracker, and sends every stream's crops through the
shared scoring core (`stream.live.scoring`), one batch per engine. Decoding happens on the sources' own threads,
so a slow pass only makes frames be dropped at the buffers, never delays decoding.

How the pass runs on threads is a strategy (`pipelines.py`): serial, or overlapped with detection of the next pass
on a worker thread; the scheduler implements the steps a pipeline drives (`due`, `detect`, `track`, `score`,
`tick`) and runs the pipeline on its own thread.

The scheduler keeps only pacing and the pass. The load governor (`governor.py`) decides rates and shedding (the
scheduler applies its decisions), the per-track records (`track.py`) hold each track's state, and the judge
(`stream.live.verdicts.judge`) turns scores into verdicts and alerts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from engines.base import Engine
from engines.calibration import Ensemble
from stream.config.scheduler import SchedulerConfig
from stream.config.verdicts import VerdictPolicy
from stream.live.faces import FaceDetector, crop_faces
from stream.live.faces.quality import measure
from stream.live.faces.tracker import iou_matrix
from stream.live.rings import CropRing
from stream.live.scheduler.detection import Planned, stagger
from stream.live.scheduler.governor import BusyClock, CpuClock, Decision, LoadGovernor, load_of
from stream.live.scheduler.pipelines import Pipeline, pipeline_for
from stream.live.scheduler.threads import cores_here
from stream.live.scheduler.track import EVIDENCE_CROP, EVIDENCE_FRAMES, LiveStream, Track
from stream.live.scoring import Scorer
from stream.live.sources import Frame
from stream.live.sources.live import StreamSource
from stream.live.verdicts.alerts import AlertManager
from stream.live.verdicts.cameras import CameraBars
from stream.live.verdicts.judge import Judge
from stream.live.verdicts.policy import worst
from stream.live.verdicts.streams import Voices, side_by_side, stream_verdict
from stream.messages import FaceOverlay, Overlay, Record, SchedulerStatus, Status


# When one stream is due, streams due within this fraction of their period join the same pass: otherwise streams
# drift apart and every pass carries a single frame, paying MTCNN's fixed cost once per stream.
COALESCE_FRACTION = 0.5
DUPLICATE_IOU = 0.5  # re-located boxes overlapping this much are one face
STATUS_EVENTS = 3  # recent governor decisions carried in each status message

Publish = Callable[[Record], None]  # a record to the bus (MessageBus.publish)
Pick = tuple[LiveStream, Frame]


def machine_cpu() -> tuple[float, float]:
    """(total, busy) CPU seconds of the whole machine so far, every core and process (psutil's system times)."""
    import psutil

    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    return total, total - idle


class Scheduler:
    def __init__(self, detector: FaceDetector, engines: Sequence[Engine], publish: Publish,
                 config: SchedulerConfig | None = None, policy: VerdictPolicy | None = None,
                 alerts: AlertManager | None = None, ensemble: Ensemble | None = None,
                 bars: CameraBars | None = None, voices: Voices | None = None, rule: str = "either") -> None:
        """`bars`: each camera's bar (its baseline) and live learning; None judges every stream at `policy`.
        `voices`: the voice path, whose `voice` object each overlay carries and whose verdict joins the faces'
        by `rule` (stream/config/voices.py)."""
        self.detector = detector
        self.voices = voices
        self.rule = rule
        policy = policy or VerdictPolicy()
        self.scorer = Scorer(engines, ensemble, weights=policy.weights)
        self.engines = self.scorer.engines
        self.bars = bars
        self.judge = Judge(policy, alerts, self.scorer.fusion, bars)
        self.publish = publish
        self.config = config or SchedulerConfig()
        self.governor = LoadGovernor(self.config)
        self._streams: dict[str, LiveStream] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pipeline: Pipeline | None = None
        self._added = 0
        self._window_start = self._last_status = time.monotonic()  # the governor's period, the status heartbeat
        self._cpu, self._machine = CpuClock(cores_here()), CpuClock(1)  # this process's CPU, all processes'
        self.cpu_load = self.stage_load = self.machine_load = 0.0  # the last period's, every measure

    # --- streams -------------------------------------------------------------------------------------------
    def add(self, source: StreamSource) -> LiveStream:
        with self._lock:
            if source.name in self._streams:
                raise ValueError(f"a stream named {source.name!r} already exists")
            self._added += 1
            st = self._streams[source.name] = LiveStream(source, order=self._added)
        return st

    def remove(self, name: str) -> StreamSource | None:
        with self._lock:
            st = self._streams.pop(name, None)
        if st is not None:
            self.judge.stream_removed(name)
            self.governor.forget(name)
        return st.source if st else None

    def stream(self, name: str) -> LiveStream:
        with self._lock:
            return self._streams[name]

    def streams(self) -> list[LiveStream]:
        with self._lock:
            return list(self._streams.values())

    def sources(self) -> list[StreamSource]:
        return [s.source for s in self.streams()]

    def target_fps(self, st: LiveStream) -> float:
        return self.governor.target_fps(st.source.analysed_fps, st.name)

    # --- loop ----------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the scheduler's thread is alive (the health check asks)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._pipeline = pipeline_for(self.config.pipeline, self, self.config.threads, self.config.detect_workers)
        self._pipeline.open()
        self._stop.clear()
        self._window_start = self._last_status = time.monotonic()
        self._cpu.take(self._window_start, time.process_time())
        self._machine.take(*machine_cpu())
        self._thread = threading.Thread(target=self._pipeline.run, args=(self._stop,), name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pipeline is not None:
            self._pipeline.close()
        self.judge.close()

    def tick(self, clock: BusyClock) -> None:
        """The governor's period and the status heartbeat, on the scheduler's thread between passes. The load is
        the measure `config.load` names (`governor.load_of`); every measure is reported."""
        now = time.monotonic()
        if now - self._window_start >= self.config.adapt_period_s:
            self.stage_load = clock.take(self._window_start, now)
            self.cpu_load = self._cpu.take(now, time.process_time())
            self.machine_load = self._machine.take(*machine_cpu())
            self.govern(load_of(self.config.load, self.stage_load, self.cpu_load, self.machine_load))
            self._window_start = now
        if now - self._last_status >= self.config.status_period_s:
            self.publish_status()
            self._last_status = now

    def govern(self, load: float) -> Decision | None:
        """Hand the governor one period's load and apply what it decides: pause or resume a stream (the rates'
        scale is the governor's own)."""
        decision = self.governor.observe(load, self.streams())
        if decision is not None and decision.stream is not None:
            with self._lock:
                st = self._streams.get(decision.stream)
            if st is not None:
                st.shed = decision.action == "shed"
        return decision

    def due(self, now: float, skip: Collection[str] = ()) -> list[Pick]:
        """The newest frame of every stream due at `now` (monotonic seconds), and those due soon after; streams
        named in `skip` wait."""
        streams = [s for s in self.streams() if not s.shed and s.name not in skip]
        if not any(now >= st.next_due for st in streams):
            return []
        picks = []
        for st in streams:
            period = 1.0 / self.target_fps(st)
            if now < st.next_due - COALESCE_FRACTION * period:
                continue
            frame = st.source.buffer.take_latest()
            if frame is not None:
                picks.append((st, frame))
                # A pass that starts a little late keeps the stream on its grid, or the analysed rate would fall
                # short of the target by the lateness; an early (coalesced) pick keeps it too, or riding along
                # with other streams' passes would lift its rate up to twice its target (a slowed stream would
                # then take passes from the streams it was slowed for). One a period late restarts it.
                late = now - st.next_due
                st.next_due = (st.next_due if late < period else now) + period
        return picks

    # --- one pass ------------------------------------------------------------------------------------------
    def process(self, picks: Sequence[Pick]) -> None:
        """Detect, track, crop and score one frame per picked stream, then publish one overlay per frame."""
        self.score(picks, self.track(picks, self.detect(picks)))

    def track(self, picks: Sequence[Pick], detections: Sequence[Sequence[Any]]) -> list[list[tuple[Track, Any, Any]]]:
        """Update each stream's tracker with its faces; crop them; per pick (track, detection, crops per key)."""
        quality_key = self.scorer.quality_key
        keys = list(dict.fromkeys([*self.scorer.crop_keys, EVIDENCE_CROP, quality_key]))
        faces_of: list[list[tuple[Track, Any, Any]]] = []
        for (st, frame), faces in zip(picks, detections):
            boxes = [d.box for d in faces]
            ids = st.tracker.update(boxes)
            for gone in st.drop(st.tracker.expired):
                self.judge.track_lost(st.name, gone.id)
            crops = {key: crop_faces(frame.picture, boxes, *key) for key in keys} if boxes else {}
            here = []
            for j, (tid, det) in enumerate(zip(ids, faces)):
                track = st.tracks.get(tid)
                if track is None:
                    evidence = CropRing(EVIDENCE_FRAMES, EVIDENCE_CROP[0])
                    track = st.tracks[tid] = Track(tid, st.name, self.scorer.window_rings(tid),
                                                   self.judge.new_verdict(), evidence)
                track.box, track.seen_at = det.box, frame.time
                track.evidence.push(crops[EVIDENCE_CROP][j])
                track.quality = measure(det.box, crops[quality_key][j])
                track.gate = self.scorer.gate(track.quality)
                st.gated_faces += track.gate.low_quality
                here.append((track, det, {k: crops[k][j] for k in self.scorer.crop_keys}))
            faces_of.append(here)
        return faces_of

    def score(self, picks: Sequence[Pick], faces_of: Sequence[Sequence[tuple[Track, Any, Any]]]) -> None:
        """Score every tracked face of the pass (one batch per engine), then publish one overlay per frame."""
        flat = [(track.rings, face_crops) for here in faces_of for track, _, face_crops in here]
        flat_tracks = [track for here in faces_of for track, _, _ in here]
        for track, got in zip(flat_tracks, self.scorer.score(flat)):
            track.scores.update(got)
        now = time.monotonic()
        for (st, frame), here in zip(picks, faces_of):
            st.analysed.tick(now)
            st.latency.add(now - frame.received)
            self.publish(self._overlay(st, frame, [(t, d) for t, d, _ in here], now))

    def plan_detection(self, picks: Sequence[Pick]) -> list[Planned]:
        """Per pick, a full-frame detection or its tracked faces re-located: full where the stream is lost, has no
        track or its interval is up (the source's profile first, then the policy's `detect_every`), and with
        `stagger` where a crowded pass's full detections are spread out (`detection.stagger`)."""
        policy = self.config.detection
        waits, every, faces = [], [], []
        for st, _ in picks:
            faces.append(sum(1 for t in st.tracks.values() if t.box is not None))
            every.append(st.source.detection.detect_every or policy.detect_every)
            waits.append(0 if st.lost or not faces[-1] else max(0, every[-1] - 1 - st.since_full))
        full = stagger(waits, every) if policy.stagger else [w == 0 for w in waits]
        return [Planned(f, n) for f, n in zip(full, faces)]

    def detect(self, picks: Sequence[Pick], plan: Sequence[Planned] | None = None) -> list[list[Any]]:
        """Faces per pick: full-frame MTCNN where `plan` (default: `plan_detection`) says so, else each track
        re-located on a crop around its last box (all crops of the call in one batch). Reads and writes only the
        picked streams' detection state, so calls on disjoint picks may run at once (`pipelines.DetectWorkers`)."""
        policy = self.config.detection
        plan = plan if plan is not None else self.plan_detection(picks)
        full = [i for i, p in enumerate(plan) if p.full]
        regions: list[tuple[int, Any, Any]] = [  # (pick, image, last box)
            (i, frame.picture, t.box) for i, (st, frame) in enumerate(picks) if not plan[i].full
            for t in list(st.tracks.values()) if t.box is not None]
        out: list[list[Any]] = [[] for _ in picks]
        profiles = [picks[i][0].source.detection for i in full]
        pictures = [picks[i][1].picture for i in full]
        for i, faces in zip(full, self.detector.detect(pictures, profiles) if full else []):
            out[i] = faces
            st = picks[i][0]
            st.since_full, st.lost = 0, False
            st.full_detections += 1
        found = self.detector.relocate([(im, b) for _, im, b in regions], policy.relocate_scale,
                                       policy.relocate_size) if regions else []
        relocated = {i for i, _, _ in regions}
        for (i, _, _), det in zip(regions, found):
            if det is None:
                picks[i][0].lost = True  # a face left or moved too far: the next pass looks at the whole frame
            elif not any(iou_matrix(det.box[None], d.box[None])[0, 0] > DUPLICATE_IOU for d in out[i]):
                out[i].append(det)  # two tracks' crops may both find one face: keep it once
        for i in relocated:
            picks[i][0].since_full += 1
        return out

    def _overlay(self, st: LiveStream, frame: Frame, faces: list[tuple[Track, Any]], now: float) -> Overlay:
        out = []
        for track, det in faces:
            j = self.judge.judge(track)
            quality = {**(track.quality.to_message() if track.quality else {}), **st.source.link_quality()}
            out.append(FaceOverlay(track=track.id, box=det.box, prob=det.prob, score=j.score, raw=j.raw,
                                   engines=dict(track.scores), verdict=j.verdict, quality=quality,
                                   reason=j.reason))
        face = worst([t.verdict.verdict for t in st.tracks.values()])
        voice = self.voices.overlay(st.name) if self.voices is not None else None
        verdict = stream_verdict(face, self.voices.verdict(st.name), self.rule) if voice is not None else face
        return Overlay(stream=st.name, pts=frame.pts, time=frame.time, frame_size=frame.size,
                       latency_ms=(now - frame.received) * 1000.0, faces=tuple(out), verdict=verdict, voice=voice)

    def publish_status(self) -> None:
        """Every stream's status (the periodic heartbeat of rates and load)."""
        for st in self.streams():
            self.publish(self._status(st))

    def publish_source_status(self, source: StreamSource) -> None:
        """One source's status now (its state just changed): with the scheduler's view while it holds the
        stream, the source's own otherwise. Thread-safe: sources call it from their decoder threads."""
        with self._lock:
            st = self._streams.get(source.name)
        if st is not None and st.source is source:
            self.publish(self._status(st))
        else:
            self.publish(Status(source.name, source=source.source_status()))

    def _status(self, st: LiveStream) -> Status:
        g = self.governor
        sched = SchedulerStatus(
            analysed_fps=round(st.analysed.rate(), 2), target_fps=round(self.target_fps(st), 2),
            latency_ms={"p50": st.latency.percentile_ms(50), "p95": st.latency.percentile_ms(95)},
            shed=st.shed, tracks=len(st.tracks), gated_faces=st.gated_faces,
            scheduler={"scale": round(g.scale_of(st.name), 3), "load": round(g.utilisation, 3),
                       "cpu": round(self.cpu_load, 3), "machine": round(self.machine_load, 3),
                       "stage": round(self.stage_load, 3),
                       "measure": self.config.load, "events": g.events[-STATUS_EVENTS:]},
            reason=g.reasons.get(st.name) if st.shed or g.scale_of(st.name) < 1.0 else None,
            priority=st.priority, watched=st.attention > 0)
        verdicts = None
        if self.voices is not None and self.voices.overlay(st.name) is not None:  # a stream with sound
            verdicts = side_by_side(worst([t.verdict.verdict for t in st.tracks.values()]),
                                    self.voices.verdict(st.name), self.rule)
        baseline = self.bars.status(st.name, self.target_fps(st)) if self.bars is not None else None
        return Status(st.name, source=st.source.source_status(), scheduler=sched, verdicts=verdicts,
                      baseline=baseline)
