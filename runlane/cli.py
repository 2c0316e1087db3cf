"""The ``runlane`` command: ``runlane migrate`` and ``runlane version``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import runlane
from runlane.config import Settings

__all__ = ["build_parser", "main"]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runlane", description=runlane.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
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
