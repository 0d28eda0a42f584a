"""The aiortc adapter: the installed aiortc has every private part it reads, a missing one is a clear error,
and the loopback ICE fallback installs once and leaves real addresses alone."""

from __future__ import annotations

from types import SimpleNamespace

import aioice.ice
import pytest

from stream.live.server import aiortc_compat
from stream.live.server.aiortc_compat import (CHECKED_AIORTC, FORCE_KEYFRAME_ATTR, RTP_TIMESTAMP_ATTR,
                                              AiortcIncompatible)


def test_installed_aiortc_has_every_private_part():
    aiortc_compat.check()


def test_a_missing_private_attribute_names_the_checked_version():
    with pytest.raises(AiortcIncompatible, match=CHECKED_AIORTC):
        aiortc_compat.last_rtp_timestamp(SimpleNamespace())
    with pytest.raises(AiortcIncompatible, match=FORCE_KEYFRAME_ATTR):
        aiortc_compat.take_keyframe_request(SimpleNamespace())


def test_sender_reads():
    sender = SimpleNamespace(**{RTP_TIMESTAMP_ATTR: 0, FORCE_KEYFRAME_ATTR: True})
    assert aiortc_compat.last_rtp_timestamp(sender) is None  # nothing sent yet
    setattr(sender, RTP_TIMESTAMP_ATTR, 12345)
    assert aiortc_compat.last_rtp_timestamp(sender) == 12345
    assert aiortc_compat.take_keyframe_request(sender) is True
    assert aiortc_compat.take_keyframe_request(sender) is False  # taken once


def test_loopback_fallback_installs_once_and_keeps_real_addresses():
    aiortc_compat.offer_loopback_when_offline()
    wrapper = aioice.ice.get_host_addresses
    aiortc_compat.offer_loopback_when_offline()
    assert aioice.ice.get_host_addresses is wrapper  # not wrapped twice
    real = wrapper.__wrapped__(use_ipv4=True, use_ipv6=True)
    assert wrapper(use_ipv4=True, use_ipv6=True) == (real or ["127.0.0.1"])
