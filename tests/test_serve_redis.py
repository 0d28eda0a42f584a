"""serve --redis end to end: the real pipeline on the shared Deepfakes video raises alerts that reach
`dfstream alerts --follow` through Redis, and survive Redis being killed and restarted mid-run."""

import time
from pathlib import Path

import pytest

from support.polling import log_alerts, wait_for
from support.parts import needs
import redis

from engines.quality import QualityFloor
from engines.registry import build_engine
from stream.live.verdicts.alerts import AlertPolicy
from stream.config.serve import ServeConfig
from stream.live.sources.live import SourceConfig
from stream.live.verdicts.policy import VerdictPolicy

from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import LiveServer
from support.serve_fakes import ClipFace
from support.redis_server import RedisServer, unavailable_reason
from test_bus import Cli

pytestmark = [pytest.mark.slow,
              needs("redis-server", unavailable_reason())]
MIN_OUTAGE_S = 3.0
ALERT_WAIT_S = 180.0  # alerts come from verdict flips, rarer when a loaded machine analyses few frames
# A twitchy policy so the Deepfakes clip keeps raising alerts (start/update/end) throughout a short run.
TWITCHY = VerdictPolicy(smoothing="ema", ema_alpha=1.0, t_high=0.9, t_low=0.85, k=1)


def test_alerts_reach_follower_exactly_once_across_a_redis_restart(tmp_path):
    # the bus is under test, not the verdicts: the Deepfakes file's model, with no quality floor, alerts at once
    engine = build_engine("meso4-df", weights_dir=MESONET_WEIGHTS, allow_download=False)
    engine.quality = QualityFloor()
    with RedisServer(persistent=True) as rs:
        follower = Cli("--redis", rs.url, "--follow", "--json", "--group", "watchers")
        source = SourceConfig(name="df", url=str(FFPP / "fake" / "Deepfakes_519_515.mp4"), loop=True)
        config = ServeConfig(
            sources=[source],
            redis=rs.url, data_dir=tmp_path, verdict=TWITCHY, alerts=AlertPolicy(update_every_s=0.5))
        with LiveServer(config, [engine], ClipFace.of(source.url)) as server:  # detection is not under test
            wait_for(lambda: len(log_alerts(tmp_path)) >= 2, 90, "the first alerts")
            first = follower.read(1)[0]
            assert first["type"] == "alert" and first["event"] == "start" and first["stream"] == "df"
            rs.kill()
            killed = time.time()
            time.sleep(MIN_OUTAGE_S)
            # Alerts the pipeline cannot deliver: removing the stream ends its open alert, and the stream added
            # again starts a new one (its face scores ~0.99). Verdict flips alone are too rare to rely on.
            server.service.remove("df")
            server.service.add_config(source)
            wait_for(lambda: any(a["ts"] > killed and a["event"] == "start" for a in log_alerts(tmp_path)),
                     ALERT_WAIT_S, "a new alert during the outage")
            rs.restart()
            restarted = time.time()
            server.service.remove("df")  # ends the alert opened during the outage: raised after the restart
            wait_for(lambda: any(a["ts"] > restarted for a in log_alerts(tmp_path)), ALERT_WAIT_S,
                     "alerts after the restart")
        raised = log_alerts(tmp_path)  # the pipeline's own log, complete once serve has stopped
        during = [a for a in raised if killed <= a["ts"] <= restarted]
        assert during, "no alert was raised while Redis was down: the test proved nothing"
        keys = [a["key"] for a in raised]
        assert len(set(keys)) == len(keys)
        client = redis.Redis.from_url(rs.url)
        wait_for(lambda: client.xlen("dfstream:alerts") >= len(keys), 30, "the spool to drain")
        entries = client.xrange("dfstream:alerts")
        in_redis = [e[1][b"key"].decode() for e in entries]
        assert in_redis == keys  # every alert, once, in order
        printed = [first] + follower.read(len(keys) - 1, timeout=60)
        assert [a["key"] for a in printed] == keys and len({a["id"] for a in printed}) == len({a["id"] for a in raised})
        assert follower.interrupt() == 0
        starts = [a for a in raised if a["event"] == "start"]
        assert starts and all(Path(a["evidence"]["snapshot"]).is_file() for a in starts)
