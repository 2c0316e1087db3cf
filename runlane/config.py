"""One settings object for the whole process.

Values come from, in increasing precedence: defaults, environment variables
prefixed ``RUNLANE_`` (``RUNLANE_DATABASE_URL``), then explicit arguments
(CLI flags). The defaults are the embedded setup: a SQLite file under
``.runlane/`` in the working directory, nothing else to configure.

=================  ============================  =====================================
setting            environment                   default
=================  ============================  =====================================
``data_dir``       ``RUNLANE_DATA_DIR``          ``.runlane``
``database_url``   ``RUNLANE_DATABASE_URL``      ``sqlite+aiosqlite:///<data_dir>/runlane.db``
=================  ============================  =====================================
"""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Process settings; see the module docstring for sources and defaults."""

    model_config = SettingsConfigDict(env_prefix="RUNLANE_", extra="forbid", frozen=True)

    data_dir: Path = Path(".runlane")
    database_url: str = ""

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite+aiosqlite:///{self.data_dir / 'runlane.db'}"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
