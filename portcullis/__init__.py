"""Portcullis: an identity-aware, MCP-native access gateway."""

__version__ = "0.1.0"
