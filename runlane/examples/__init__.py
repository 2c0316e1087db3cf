"""Example graphs shipped with runlane; serve them with ``runlane serve --config`` on
``runlane/examples/langgraph.json``. They run offline (no model provider, no key)."""

__all__: list[str] = []
