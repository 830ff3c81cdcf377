"""Helpers for tests and benchmarks of tsqr and of code built on it (no hub, no GPU needed)."""

from tsqr_plugins.training.tiny_model import build_tiny_qwen2

__all__ = ["build_tiny_qwen2"]
