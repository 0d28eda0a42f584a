"""Alert evidence moved to `stream.live.evidence` (store, recorder, manifest, retention); this name stays for
existing imports."""

from stream.config.evidence import EvidencePolicy
from stream.live.evidence.store import EvidenceStore, write_jpeg, write_mp4

__all__ = ["EvidencePolicy", "EvidenceStore", "write_jpeg", "write_mp4"]
