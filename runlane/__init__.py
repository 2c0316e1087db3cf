"""runlane: a self-hosted agent server for LangGraph graphs."""

from importlib.metadata import version as _version

__version__ = _version("runlane")

__all__ = ["__version__"]
