"""Database access: engine factory, Core tables, Alembic migrations."""

__all__: list[str] = []
