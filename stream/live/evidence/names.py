"""The files of an alert's evidence folder, their content types, and the form of an alert id: one list, used by
the writers, the server's evidence route, `verify` and `export`."""

from __future__ import annotations

import re

ALERT_ID = re.compile(r"^[0-9a-f]{32}$")  # uuid4 hex, as the alert lifecycle makes them

SNAPSHOT = "snapshot.jpg"  # the face when the alert started
STRIP = "clip.mp4"  # the face crops of the analysed frames (the small second file)
RECORDING = "recording.mp4"  # the full-frame recording, remuxed from the source
OVERLAY = "overlay.json"  # boxes and scores of every analysed frame, on the recording's clock
BURNED = "recording_burned.mp4"  # optional copy with the boxes drawn in
MANIFEST = "manifest.json"

CONTENT_TYPES = {SNAPSHOT: "image/jpeg", STRIP: "video/mp4", RECORDING: "video/mp4", OVERLAY: "application/json",
                 BURNED: "video/mp4", MANIFEST: "application/json"}
