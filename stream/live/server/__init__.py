"""The HTTP side of `serve`: the aiohttp app, the websocket hub, WebRTC peers and the service that owns them."""
