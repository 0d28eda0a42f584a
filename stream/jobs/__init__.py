"""Offline jobs (scan, eval, train, explain, calibration, SBI). They reuse the live stages; the live path never imports them."""
