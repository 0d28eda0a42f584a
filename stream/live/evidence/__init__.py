"""Alert evidence: a recording ring per stream, the alert recording with its overlay track, the chain-of-custody
manifest, retention, and the face snapshot and strip (one module per job)."""
