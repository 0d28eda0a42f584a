"""Explaining a served alert from its log record and evidence (snapshot JPEG, clip MP4) with the real MesoNet and
MTCNN: the files land in the alert's evidence folder, are cached, leave retention's order alone and go with the
evidence; `dfstream explain --alert` and serve's POST /api/alerts/<id>/explanation (on the explain worker thread)
give the same record; unknown alerts are refused without writing anything."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.registry import build_engine
from stream.cli import EXIT_OK, EXIT_USAGE, main
from stream.config.serve import ServeConfig
from stream.config.verdicts import EvidencePolicy
from stream.jobs.explain import kb
from stream.jobs.explain.alerts import AlertExplainer, AlertNotFound
from stream.jobs.explain.retrieve import Retriever
from stream.live.evidence.store import EvidenceStore, write_jpeg, write_mp4

from support.shared import MESONET_WEIGHTS, SHARED
from support.live_server import LiveServer
from support.serve_fakes import NoFaces

ALERT_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "fedcba9876543210fedcba9876543210"
FACE = SHARED / "data" / "faces" / "celeba-hq" / "ref_female_015248.jpg"
MODEL = "meso4-df"


def make_alert(data_dir: Path, alert_id: str = ALERT_ID) -> Path:
    """What serve leaves behind: two log lines (start, end) and the evidence folder."""
    face = np.asarray(Image.open(FACE).convert("RGB").resize((224, 224)))
    folder = data_dir / "evidence" / alert_id
    folder.mkdir(parents=True)
    write_jpeg(folder / "snapshot.jpg", face)
    frames = np.stack([np.roll(face, shift, axis=1) for shift in range(0, 12, 2)])
    write_mp4(folder / "clip.mp4", frames, 6.0)
    with (data_dir / "alerts.jsonl").open("a") as f:
        for event, seq in (("start", 0), ("end", 1)):
            f.write(json.dumps({"v": 1, "type": "alert", "event": event, "id": alert_id, "key": f"{alert_id}:{seq}",
                                "seq": seq, "stream": "studio", "track": 3, "started_at": 1.0,
                                "ended_at": 2.0 if event == "end" else None, "score_max": 0.97,
                                "engines": {MODEL: 0.97}, "evidence": {}, "ts": 2.0}) + "\n")
    return folder


@pytest.fixture(scope="module")
def detector():
    from stream.live.faces import DetectorConfig, FaceDetector

    return FaceDetector(DetectorConfig(device="cpu"))


class Counting:
    """An engine factory that counts its builds (the cache must not rebuild)."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def __call__(self, name: str):
        self.built.append(name)
        return build_engine(name, weights_dir=MESONET_WEIGHTS, allow_download=False)


def explainer(data_dir: Path, detector, engines: Counting | None = None) -> AlertExplainer:
    return AlertExplainer(data_dir, lambda: Retriever([kb.builtin()]), engines or Counting(), lambda: detector)


def test_an_alert_is_explained_from_its_evidence_and_cached_in_its_folder(tmp_path, detector) -> None:
    folder = make_alert(tmp_path)
    before = folder.stat().st_mtime_ns
    engines = Counting()
    explain = explainer(tmp_path, detector, engines)
    record = explain(ALERT_ID)
    assert engines.built == [MODEL]
    assert {p.name for p in folder.iterdir()} == {"snapshot.jpg", "clip.mp4", "explanation.json", "explanation.md",
                                                  "explanation.png"}
    assert folder.stat().st_mtime_ns == before  # explaining does not make retention keep it longer
    assert record["alert"]["id"] == ALERT_ID and record["alert"]["engines"] == {MODEL: 0.97}
    facts = record["facts"]
    assert facts["model"] == MODEL and facts["alert"] == ALERT_ID and facts["landmarks"] == "mtcnn"
    assert 0.0 <= facts["score"] <= 1.0 and facts["sharpness"] > 0 and facts["face_px"] is None
    assert len(record["frames"]) == 4  # the most fake-looking of the snapshot and the clip's 6 frames
    assert record["citations"][0]["id"] == "model-mesonet"
    assert "[1]" in record["text"] and "## References" in (folder / "explanation.md").read_text()
    assert Image.open(folder / "explanation.png").size[0] > 100
    stamp = (folder / "explanation.json").stat().st_mtime_ns
    again = explain(ALERT_ID)
    assert again == json.loads((folder / "explanation.json").read_text()) and engines.built == [MODEL]
    assert (folder / "explanation.json").stat().st_mtime_ns == stamp  # read, not rebuilt
    # the explanation goes with its evidence under the retention limit
    make_alert(tmp_path, OTHER_ID)
    store = EvidenceStore(tmp_path / "evidence", EvidencePolicy(max_alerts=1))
    try:
        store.enforce_retention()
    finally:
        store.close()
    assert not folder.exists() and (tmp_path / "evidence" / OTHER_ID).is_dir()
    with pytest.raises(AlertNotFound, match="no evidence"):
        explain(ALERT_ID)


def test_unknown_alerts_are_refused_and_nothing_is_written(tmp_path, detector, capsys) -> None:
    folder = make_alert(tmp_path)
    explain = explainer(tmp_path, detector)
    with pytest.raises(AlertNotFound, match="is not in"):
        explain(OTHER_ID)
    with pytest.raises(AlertNotFound, match="not an alert id"):
        explain("../../etc")
    assert main(["explain", "--alert", OTHER_ID, "--data-dir", str(tmp_path), "--weights-dir",
                 str(MESONET_WEIGHTS), "--offline"]) == EXIT_USAGE
    assert "is not in" in capsys.readouterr().err
    assert main(["explain", "clip.mp4", "--alert", ALERT_ID, "--data-dir", str(tmp_path)]) == EXIT_USAGE
    assert "not both" in capsys.readouterr().err
    assert {p.name for p in folder.iterdir()} == {"snapshot.jpg", "clip.mp4"}
    assert not (tmp_path / "evidence" / OTHER_ID).exists()


def test_explain_alert_on_the_command_line(tmp_path, capsys) -> None:
    make_alert(tmp_path)
    out = tmp_path / "why"
    code = main(["explain", "--alert", ALERT_ID, "--data-dir", str(tmp_path), "--weights-dir", str(MESONET_WEIGHTS),
                 "--offline", "--embed-model", str(tmp_path / "no-model"), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert "[1] Darius Afchar" in captured.out and "BM25 only" in captured.err
    record = json.loads((out / "explanation.json").read_text())
    assert record["retrieval"]["mode"] == "bm25" and (out / "explanation.png").is_file()


def test_serve_builds_explanations_on_its_explain_thread(tmp_path, detector) -> None:
    make_alert(tmp_path)
    inner = explainer(tmp_path, detector)
    threads: list[str] = []

    def watched(alert_id: str) -> dict:
        threads.append(threading.current_thread().name)
        return inner(alert_id)

    meso = build_engine(MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    with LiveServer(ServeConfig(port=0, data_dir=tmp_path), [meso], NoFaces(), explainer=watched) as server:
        status, body = server.api("POST", f"/api/alerts/{ALERT_ID}/explanation", {})
        assert status == 200, body
        record = json.loads(body)
        assert record["citations"] and record["image"] == "explanation.png"
        with urllib.request.urlopen(f"{server.base}/evidence/{ALERT_ID}/explanation.png", timeout=30) as resp:
            assert resp.headers["Content-Type"] == "image/png" and resp.read(8) == b"\x89PNG\r\n\x1a\n"
        assert server.api("POST", f"/api/alerts/{OTHER_ID}/explanation", {})[0] == 404
        assert server.api("POST", "/api/alerts/not-an-id/explanation", {})[0] == 404
    assert threads and all(t.startswith("explain") for t in threads)
    with LiveServer(ServeConfig(port=0, data_dir=tmp_path), [meso], NoFaces()) as server:
        status, body = server.api("POST", f"/api/alerts/{ALERT_ID}/explanation", {})
        assert status == 503 and "not enabled" in body
