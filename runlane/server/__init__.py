"""The HTTP layer: the LangGraph Platform API over the runtime and executor."""

__all__: list[str] = []
