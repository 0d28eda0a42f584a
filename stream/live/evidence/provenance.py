"""What judged the video, for the manifest: each model's name and weights' sha256, the calibration in use, and
the dfstream version. Read from the engines as built (registry.py sets `weights_sha256`, calibration.attach sets
`calibration`), so the manifest names exactly what ran."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("dfstream")
    except Exception:  # running from a checkout that was never installed
        import stream

        return stream.__version__


def provenance(engines: Sequence[Any], ensemble: Any = None) -> dict[str, Any]:
    models = [{"name": getattr(e, "name", type(e).__name__), "weights_sha256": getattr(e, "weights_sha256", None)}
              for e in engines]
    calibration = {e.name: cal.model_dump(mode="json") for e in engines
                   if (cal := getattr(e, "calibration", None)) is not None and hasattr(cal, "model_dump")}
    if ensemble is not None and hasattr(ensemble, "model_dump"):
        calibration["ensemble"] = ensemble.model_dump(mode="json")
    return {"dfstream": version(), "models": models, "calibration": calibration or None}
