"""One settings object for the whole process.

Sources, lowest precedence first: the defaults below, a TOML settings file
(``runlane.toml`` in the working directory, or the file named by
``RUNLANE_SETTINGS_FILE``), environment variables prefixed ``RUNLANE_``, and
explicit values (CLI flags). Settings are frozen once built.

The defaults are the embedded setup and need no configuration at all: a
SQLite file and a checkpoint file under ``.runlane/``, in-memory streams, one
process.

=======================  ==============================  ================================
setting                  environment                     default
=======================  ==============================  ================================
``config``               ``RUNLANE_CONFIG``              ``./langgraph.json`` if present,
                                                         else the bundled example graphs
``host``                 ``RUNLANE_HOST``                ``127.0.0.1``
``port``                 ``RUNLANE_PORT``                ``2024``
``workers``              ``RUNLANE_WORKERS``             ``1``
``data_dir``             ``RUNLANE_DATA_DIR``            ``.runlane``
``database_url``         ``RUNLANE_DATABASE_URL``        SQLite file ``<data_dir>/runlane.db``
``redis_url``            ``RUNLANE_REDIS_URL``           unset: in-memory stream bridge
``redis_key_prefix``     ``RUNLANE_REDIS_KEY_PREFIX``    ``runlane``
``redis_write_behind``   ``RUNLANE_REDIS_WRITE_BEHIND``  ``true``: publishes are pipelined
``stream_max_events``    ``RUNLANE_STREAM_MAX_EVENTS``   ``10000`` replayable events per run
``stream_max_bytes``     ``RUNLANE_STREAM_MAX_BYTES``    64 MiB of events per run
``stream_retention``     ``RUNLANE_STREAM_RETENTION``    ``300`` s a finished run is replayable
``stream_idle_timeout``  ``RUNLANE_STREAM_IDLE_TIMEOUT`` ``600`` s without events ends a stream
``heartbeat_interval``   ``RUNLANE_HEARTBEAT_INTERVAL``  ``15`` s between SSE heartbeats
``send_timeout``         ``RUNLANE_SEND_TIMEOUT``        ``30`` s before a frozen client is cut
``max_body_bytes``       ``RUNLANE_MAX_BODY_BYTES``      10 MiB; larger bodies get HTTP 413
``lease_ttl``            ``RUNLANE_LEASE_TTL``           ``10`` s a run's lease lasts unrenewed
                                                         (renewed every third of it)
``sweep_interval``       ``RUNLANE_SWEEP_INTERVAL``      ``5`` s between orphan and queue sweeps;
                                                         a killed process's runs end within
                                                         ``lease_ttl + sweep_interval``
``shutdown_grace``       ``RUNLANE_SHUTDOWN_GRACE``      ``10`` s runs get to finish on SIGTERM
                                                         before they are interrupted
``run_eviction_delay``   ``RUNLANE_RUN_EVICTION_DELAY``  ``60`` s a finished run stays in memory
``event_store``          ``RUNLANE_EVENT_STORE``         ``sql`` (the run store's database);
                                                         ``jsonl`` (files under
                                                         ``<data_dir>/events``) or ``memory``
``log_level``            ``RUNLANE_LOG_LEVEL``           ``info``
``log_format``           ``RUNLANE_LOG_FORMAT``          ``json`` (or ``text``)
=======================  ==============================  ================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from runlane.exceptions import RunlaneError

__all__ = ["BUNDLED_EXAMPLE", "ConfigurationError", "Settings"]

BUNDLED_EXAMPLE = Path(__file__).parent / "examples" / "langgraph.json"
"""The example graphs shipped with runlane, served when no ``langgraph.json`` is given."""


class ConfigurationError(RunlaneError):
    """The settings describe a setup runlane cannot run safely; change them as the message says."""


class Settings(BaseSettings):
    """Process settings; see the module docstring for sources and defaults."""

    model_config = SettingsConfigDict(env_prefix="RUNLANE_", extra="forbid", frozen=True)

    config: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=2024, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    data_dir: Path = Path(".runlane")
    database_url: str = ""
    redis_url: str | None = None
    redis_key_prefix: str = "runlane"
    redis_write_behind: bool = True
    stream_max_events: int = Field(default=10_000, ge=1)
    stream_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    stream_retention: float = Field(default=300.0, gt=0)
    stream_idle_timeout: float = Field(default=600.0, gt=0)
    heartbeat_interval: float = Field(default=15.0, gt=0)
    send_timeout: float = Field(default=30.0, gt=0)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    lease_ttl: float = Field(default=10.0, gt=0)
    sweep_interval: float = Field(default=5.0, gt=0)
    shutdown_grace: float = Field(default=10.0, ge=0)
    run_eviction_delay: float = Field(default=60.0, ge=0)
    event_store: Literal["sql", "jsonl", "memory"] = "sql"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("RUNLANE_SETTINGS_FILE", "runlane.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            url = f"sqlite+aiosqlite:///{self.data_dir / 'runlane.db'}"
            object.__setattr__(self, "database_url", url)
        if self.config is None:
            local = Path("langgraph.json")
            object.__setattr__(self, "config", local if local.is_file() else BUNDLED_EXAMPLE)
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def graphs_config(self) -> Path:
        """The ``langgraph.json`` to serve (always set after validation)."""
        assert self.config is not None
        return self.config

    def check_deployment(self) -> None:
        """Refuse setups that would lose or duplicate work across processes.

        Several workers need a shared database (PostgreSQL), a shared
        stream bridge (Redis) and the SQL event store: SQLite, in-memory
        streams and the memory/JSONL event stores are per process.
        """
        if self.workers <= 1:
            return
        missing = []
        if self.is_sqlite:
            missing.append(
                "RUNLANE_DATABASE_URL=postgresql+asyncpg://... (SQLite is one process only)"
            )
        if not self.redis_url:
            missing.append("RUNLANE_REDIS_URL=redis://... (in-memory streams are one process only)")
        if self.event_store != "sql":
            missing.append(
                f"RUNLANE_EVENT_STORE=sql (the {self.event_store} event store is one process only)"
            )
        if missing:
            raise ConfigurationError(
                f"{self.workers} workers need shared storage; set " + " and ".join(missing)
            )
