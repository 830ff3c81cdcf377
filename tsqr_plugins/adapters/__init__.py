"""Adapters that put the rewriter into host frameworks, one module per host (imported on use)."""
