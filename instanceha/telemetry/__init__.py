"""Metrics and health over HTTP (prometheus text format)."""
