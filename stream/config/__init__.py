"""Configuration records: pydantic models only, importing no runtime (no torch, PyAV or aiohttp)."""

from stream.config.serve import ConfigError, ServeConfig, expand_env, load_config, source_name_for

__all__ = ["ConfigError", "ServeConfig", "expand_env", "load_config", "source_name_for"]
