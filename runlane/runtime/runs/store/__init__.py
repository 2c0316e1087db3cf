"""Run stores: the contract (``base``), ``memory`` and ``sql`` backends."""

__all__: list[str] = []
