"""`POST /api/streams/NAME/priority`: change a running stream's priority under load (scheduler/governor.py).

Body `{"priority": N}`, N an integer in SourceConfig.priority's range. A webcam or shared screen has no config file
entry, so this is how its priority is set; a camera's takes effect at once and lasts until the server restarts
(its config file's `priority` then applies). A refused request changes nothing.
"""

from __future__ import annotations

import json

from aiohttp import web

from stream.config.sources import SourceConfig


def _bounds() -> tuple[int, int]:
    """SourceConfig.priority's ge/le, read from the field so the API and the config file share one rule."""
    meta = SourceConfig.model_fields["priority"].metadata
    return next(m.ge for m in meta if hasattr(m, "ge")), next(m.le for m in meta if hasattr(m, "le"))


PRIORITY_RANGE = _bounds()


def parse_priority(value: object) -> int:
    """A priority from a request, or ValueError naming the rule (booleans and floats are refused, not cast)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"priority must be an integer, got {value!r}")
    low, high = PRIORITY_RANGE
    if not low <= value <= high:
        raise ValueError(f"priority must be between {low} and {high}, got {value}")
    return value


def make_handler(service_key: web.AppKey):
    async def set_priority(request: web.Request) -> web.Response:
        service = request.app[service_key]
        name = request.match_info["name"]
        try:
            body = await request.json()
            value = parse_priority(body["priority"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='send JSON {"priority": N}') from None
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        if not service.set_priority(name, value):
            raise web.HTTPNotFound(text="no such stream")
        return web.json_response({"name": name, "priority": value})

    return set_priority
