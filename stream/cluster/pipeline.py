"""What every node runs: the gateway's serve config less what is the gateway's own (its port, token, sources,
data folder), plus how to load the engines. The director hands this to each node worker it creates, and refuses
a second, different one: every camera of a cluster is judged by the same models and policies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# ServeConfig fields a node's pipeline depends on; the rest (host, port, token, sources, data_dir, limits of
# the HTTP side) belong to whichever gateway is talking.
PIPELINE_FIELDS = ("models", "weights_dir", "calibration", "backend", "precision", "detector", "scheduler",
                   "verdict", "alerts", "evidence", "redis", "redis_namespace")


class Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    serve: dict[str, Any] = Field(description="the ServeConfig fields named in PIPELINE_FIELDS, as JSON")
    offline: bool = Field(default=False, description="never download missing weights on a node")
    device: str | None = Field(default=None, description="torch device on the nodes (default: cuda if present)")
    factory: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description=(
        "`module:function` called on each node as function(serve_config, device) -> (engines, detector, "
        "ensemble) instead of loading `models` (custom pipelines; the tests' cheap stand-ins)"))

    @classmethod
    def from_serve(cls, config: Any, offline: bool = False, device: str | None = None,
                   factory: str | None = None) -> "Pipeline":
        if not config.redis:
            raise ValueError("serve --ray needs --redis: Redis carries every camera's overlays, status and alerts")
        dumped = config.model_dump(mode="json")
        return cls(serve={k: dumped[k] for k in PIPELINE_FIELDS}, offline=offline, device=device, factory=factory)
