"""One router module per resource family."""

__all__: list[str] = []
