"""Command-line front end. Argument parsing and error reporting only — no logic.

Each subcommand lives in ``pkdgan.commands.<name>`` and exposes ``register(subparsers)``;
new commands are picked up without touching this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Sequence

from pkdgan import __version__
from pkdgan.core.cpu import choose_omp_wait_policy
from pkdgan.core.errors import PkdganError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` unless the help already explains its default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or not action.option_strings:
            return text
        return super()._get_help_string(action) or text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) and defaults shown in ``--help``."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> Parser:
    parser = Parser(prog="pkdgan", description="One-class novelty detection with EDE-GAN / P-KDGAN.")
    parser.add_argument("--version", action="version", version=f"pkdgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    import pkdgan.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"pkdgan.commands.{info.name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors exit here, without sampling the CPU
    # OpenMP reads its wait policy once, when torch loads; a command that may not need torch
    # (predict's lean path) chooses it itself, only when it does
    if "torch" not in sys.modules and not getattr(args, "defer_omp_policy", False):
        choose_omp_wait_policy()
    warnings.formatwarning = lambda msg, cat, *a, **k: f"pkdgan: warning: {msg}\n"
    try:
        return int(args.func(args) or 0)
    except PkdganError as e:
        sys.stderr.write(f"pkdgan {args.command}: error: {e}\n")
        return e.exit_code
    except OSError as e:  # the file system said no (permissions, a file where a folder goes, full disk)
        where = f"{e.filename}: " if e.filename else ""
        sys.stderr.write(f"pkdgan {args.command}: error: {where}{e.strerror or e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"pkdgan {args.command}: interrupted; finished epochs are kept "
                         "(continue with --resume)\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
