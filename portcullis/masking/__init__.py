"""Inline masking of secrets and PII: detectors, the RE2 engine, and the walker over MCP messages."""

from portcullis.masking.classes import CLASSES, MaskClass
from portcullis.masking.engine import Budget, Detector, Finding, MaskingError, default_detector

__all__ = ["CLASSES", "Budget", "Detector", "Finding", "MaskClass", "MaskingError", "default_detector"]
