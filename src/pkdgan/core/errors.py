"""The project's own error types.

The CLI turns each into one line on stderr and an exit code, so every check that can fail on
user input raises one of these instead of letting a traceback escape.
"""

from __future__ import annotations


class PkdganError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(PkdganError):
    """Bad arguments or configuration values (exit code 2, like argparse)."""

    exit_code = 2


class DataError(PkdganError):
    """Missing, corrupt or inconsistent data files, images or run folders (exit code 1)."""

    exit_code = 1


class DivergenceError(PkdganError):
    """Training produced NaN/Inf losses; the last good checkpoint is kept."""

    exit_code = 1


class RunBusy(PkdganError):
    """Another process is writing this run folder (it holds the folder's lock, ``core.locks``)."""

    exit_code = 1
