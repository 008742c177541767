"""Configuration: one YAML file, validated into typed settings with precise errors."""

from portcullis.config.load import load_config, load_config_text
from portcullis.config.model import Config, ServerConfig

__all__ = ["Config", "ServerConfig", "load_config", "load_config_text"]
