"""The ``gopwatch`` command line: :mod:`.app` and the command modules that register on it."""

from consumers.cli import console, kb, media, ops, service, snapshots, training  # noqa: F401  (they register their commands)
from consumers.cli.app import app, main

__all__ = ["app", "main"]
