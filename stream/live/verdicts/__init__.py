"""Judging scored tracks: rolling verdicts with hysteresis, the alert lifecycle and its evidence."""
