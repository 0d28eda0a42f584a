"""What the tests share: real parts they start (Redis, Mosquitto, GStreamer's RTSP server, Ray, Chromium, the serve
app), stand-ins for what is not under test, authors' reference code for parity checks, and paths into ../shared.

Test files import it as `support.<module>`: pytest puts tests/ on sys.path (no `__init__.py` in tests/), and the
subprocesses the tests start get tests/ on their PYTHONPATH. Nothing here is collected as a test.
"""
