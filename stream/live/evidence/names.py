"""The files of an alert's evidence folder, their content types, and the form of an alert id: one list, used by
the writers, the server's evidence route, `verify` and `export`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ALERT_ID = re.compile(r"^[0-9a-f]{32}$")  # uuid4 hex, as the alert lifecycle makes them
EVIDENCE_DIR = "evidence"  # under serve's data_dir: one folder per alert, named by its id

SNAPSHOT = "snapshot.jpg"  # the face when the alert started
STRIP = "clip.mp4"  # the face crops of the analysed frames (the small second file)
RECORDING = "recording.mp4"  # the full-frame recording, remuxed from the source
OVERLAY = "overlay.json"  # boxes and scores of every analysed frame, on the recording's clock
BURNED = "recording_burned.mp4"  # optional copy with the boxes drawn in
MANIFEST = "manifest.json"
VOICE_WINDOWS = "voice_windows.json"  # a voice alert's scored windows: times, speech share, p(fake) per engine
VOICE_SOUND = "voice_windows.wav"  # their sound, 16 kHz mono, one after another (what the engines heard)

CONTENT_TYPES = {SNAPSHOT: "image/jpeg", STRIP: "video/mp4", RECORDING: "video/mp4", OVERLAY: "application/json",
                 BURNED: "video/mp4", MANIFEST: "application/json", VOICE_WINDOWS: "application/json",
                 VOICE_SOUND: "audio/wav"}


@dataclass(frozen=True, slots=True)
class EvidenceLayout:
    """Where an alert's evidence goes (`root/<id>/`), and whether alerts are recorded: what the alert lifecycle
    names in a `start` before any file is written (the writers, evidence/store.py and recorder.py, use the same
    names)."""

    root: Path
    record: bool = False

    def folder(self, alert_id: str) -> Path:
        return self.root / alert_id

    def files(self, alert_id: str, face: bool, strip: bool, recording: bool,
              voice: bool = False) -> dict[str, str | None]:
        """The `evidence` of an alert's messages: the face snapshot and strip (a voice alert's: null), with `voice`
        its scored windows and their sound, and with `recording` the recording, its overlay track and manifest
        (`recording_state` says how far the recording is)."""
        folder = self.folder(alert_id)
        files: dict[str, str | None] = {"snapshot": str(folder / SNAPSHOT) if face else None,
                                        "clip": str(folder / STRIP) if strip else None}
        if voice:
            files.update(voice_windows=str(folder / VOICE_WINDOWS), voice_sound=str(folder / VOICE_SOUND))
        if recording:
            files.update(recording=str(folder / RECORDING), overlay=str(folder / OVERLAY),
                         manifest=str(folder / MANIFEST), recording_state="recording")
        return files
