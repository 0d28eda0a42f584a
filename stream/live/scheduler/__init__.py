"""What the scheduler owns: pacing, the load governor, per-track state and the inference pass."""
