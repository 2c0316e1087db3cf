"""Runs: statuses and records (``schemas``), the manager, and the stores."""

__all__: list[str] = []
