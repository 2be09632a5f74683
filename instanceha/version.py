"""The one place that states the version of instanceha."""

__version__ = "0.1.0"
