"""The ``runlane`` command: ``serve``, ``dev``, ``migrate`` and ``version``.

``serve`` and ``dev`` take flags that override the environment (``RUNLANE_*``)
and the settings file. The flags are handed to the server process(es) as
``RUNLANE_*`` environment variables, so every uvicorn worker and every
reload builds the same :class:`~runlane.config.Settings`. Relative paths
(``--config``, the data directory) are made absolute first, so the server
behaves the same whatever folder it was started from; graph paths resolve
relative to the ``langgraph.json`` that names them.

Exit codes: 0 after a clean stop, 2 when the settings are refused (the
message says what to configure).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import runlane
from runlane.config import ConfigurationError, Settings

__all__ = ["APP_FACTORY", "build_parser", "main", "server_settings"]

APP_FACTORY = "runlane.server.app:create_app_from_env"
"""The import string uvicorn loads in each worker (``factory=True``)."""

_FLAG_TO_SETTING = {
    "config": "config",
    "host": "host",
    "port": "port",
    "workers": "workers",
    "database_url": "database_url",
    "redis_url": "redis_url",
}


def _migrate(args: argparse.Namespace) -> int:
    from runlane.db.migrate import upgrade

    overrides = {"database_url": args.database_url} if args.database_url else {}
    settings = Settings(**overrides)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    print(f"runlane: database at {settings.database_url} is up to date")
    return 0


def _version(args: argparse.Namespace) -> int:
    print(runlane.__version__)
    return 0


def server_settings(args: argparse.Namespace) -> tuple[Settings, dict[str, str]]:
    """The settings the flags describe, and the ``RUNLANE_*`` variables that reproduce them."""
    overrides: dict[str, Any] = {}
    for flag, setting in _FLAG_TO_SETTING.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[setting] = value
    if "config" in overrides:
        overrides["config"] = Path(overrides["config"]).expanduser().resolve()
    settings = Settings(**overrides)
    env = {f"RUNLANE_{name.upper()}": str(value) for name, value in overrides.items()}
    env["RUNLANE_CONFIG"] = str(settings.graphs_config.expanduser().resolve())
    env["RUNLANE_DATA_DIR"] = str(settings.data_dir.expanduser().resolve())
    env["RUNLANE_DATABASE_URL"] = _absolute_sqlite(settings.database_url)
    return settings, env


def _absolute_sqlite(url: str) -> str:
    """``url`` with a relative SQLite file made absolute (other URLs unchanged)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if not parsed.drivername.startswith("sqlite") or not database or database == ":memory:":
        return url
    absolute = str(Path(database).expanduser().resolve())
    return parsed.set(database=absolute).render_as_string(hide_password=False)


def _serve(args: argparse.Namespace, *, reload: bool = False) -> int:
    try:
        settings, env = server_settings(args)
        if reload and settings.workers > 1:
            raise ConfigurationError("--reload runs one process; drop --workers.")
        settings.check_deployment()
        if not settings.graphs_config.is_file():
            raise ConfigurationError(f"No graphs config at {settings.graphs_config}.")
    except ConfigurationError as exc:
        print(f"runlane: {exc.message}", file=sys.stderr)
        return 2
    import uvicorn

    from runlane.server.logs import configure_logging, uvicorn_log_config

    os.environ.update(env)
    log_format = settings.log_format
    if reload and "RUNLANE_LOG_FORMAT" not in os.environ:
        log_format = "text"
        os.environ["RUNLANE_LOG_FORMAT"] = log_format
    configure_logging(settings.log_level, log_format)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "factory": True,
        "log_config": uvicorn_log_config(),
        "log_level": settings.log_level,
        "loop": "auto",
        "http": "auto",
        "proxy_headers": True,
        # The drain (runlane.server.cluster) ends every stream within the
        # grace; uvicorn only cancels what still hangs after that.
        "timeout_graceful_shutdown": settings.shutdown_grace + 10,
    }
    if reload:
        options["reload"] = True
        options["reload_dirs"] = [str(settings.graphs_config.parent)]
    else:
        options["workers"] = settings.workers
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the
    # signal against the handler found before it started: make that a no-op
    # so a requested stop exits 0 instead of dying by the signal.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop_requested)
    uvicorn.run(APP_FACTORY, **options)
    return 0


def _stop_requested(signum: int, frame: object) -> None:
    """Runs after uvicorn has finished its graceful shutdown; nothing is left to do."""


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="path to langgraph.json (default: RUNLANE_CONFIG)")
    parser.add_argument("--host", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default: 2024)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite under .runlane)")
    parser.add_argument("--redis-url", help="Redis URL for the stream bridge (default: memory)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runlane", description=runlane.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server (production)")
    _add_server_flags(serve)
    serve.add_argument("--workers", type=int, help="worker processes (default: 1)")
    serve.set_defaults(handler=_serve)
    dev = commands.add_parser("dev", help="run one server process that reloads on graph changes")
    _add_server_flags(dev)
    dev.add_argument(
        "--reload",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restart when files in the graphs' folder change (default: on)",
    )
    dev.set_defaults(handler=lambda args: _serve(args, reload=args.reload))
    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.add_argument("--database-url", help="SQLAlchemy URL (default: RUNLANE_DATABASE_URL)")
    migrate.set_defaults(handler=_migrate)
    version = commands.add_parser("version", help="print the version")
    version.set_defaults(handler=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
