"""The command line every job shares: ``--config``, ``key=value`` overrides, ``--help`` from the
config dataclass's field comments, ``--log-level``, and start-up errors as one line.

A job is a ``main(argv) -> int`` wrapped by :func:`job_main`::

    @job_main
    def main(argv=None) -> int:
        args = job_parser(MineConfig, __doc__, default_config="conf/mine.yaml").parse_args(argv)
        cfg = load_job_config(MineConfig, args)          # a bad key: StartupError naming it
        with startup("reading the weights"):            # anything raised here: StartupError
            ...
        ...                                               # the work: exceptions propagate as usual

    if __name__ == "__main__":
        sys.exit(main())

A :class:`StartupError` reaching :func:`job_main`
print one line ``error: ...`` on stderr, the traceback goes to the log (``--log-level debug`` shows
it), and the exit code is :data:`STARTUP_EXIT`. Under ``torchrun`` only rank 0 prints the line.
Library INFO lines (Ray, open_clip, ...) show only with ``--log-level info``.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
import time
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

from pipelines.config.help import help_text
from pipelines.config.load import ConfigError, load_config

__all__ = ["STARTUP_EXIT", "StartupError", "job_parser", "load_job_config", "setup_logging", "startup",
           "job_main", "is_main_process"]

log = logging.getLogger(__name__)
T = TypeVar("T")
STARTUP_EXIT = 2  # exit code of a run that failed before any work started
RANK_EXIT_DELAY_S = 2.0  # ranks > 0 wait this long before leaving on a start-up error
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class StartupError(Exception):
    """A run cannot start; the message is one line saying what to change (a key, a file, a flag)."""


def is_main_process() -> bool:
    """False on the ranks > 0 of a ``torchrun`` launch (they stay silent about start-up errors)."""
    return os.environ.get("RANK", "0") == "0"


def _expand(shorthands: Mapping[str, str], overrides: Sequence[str]) -> list[str]:
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        out.append(f"{shorthands.get(key, key)}{sep}{value}")
    return out


class _JobParser(argparse.ArgumentParser):
    """argparse with the job's override shorthands expanded after parsing."""

    shorthands: Mapping[str, str] = {}

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        parsed.overrides = _expand(self.shorthands, parsed.overrides)
        setup_logging(parsed.log_level)
        return parsed

    def error(self, message: str):  # argparse's own usage errors: one line, the same exit code
        self.exit(STARTUP_EXIT, f"error: {message} (see {self.prog} --help)\n")


def job_parser(schema: type | None, doc: str | None, *, default_config: str | None = None,
               shorthands: Mapping[str, str] | None = None,
               overrides_help: str = "config overrides, e.g. run.device=cpu") -> argparse.ArgumentParser:
    """The parser of a config-driven job: ``[--config FILE] [--log-level L] [key.sub=value ...]``.

    Args:
        schema: the job's config dataclass; ``--help`` lists its keys with their comments.
        doc: the job's module docstring (``--help``'s description).
        default_config: the YAML used without ``--config`` (None: the dataclass defaults).
        shorthands: ``{"resume": "run.resume"}``: short override keys and what they stand for.
    """
    parser = _JobParser(description=doc, epilog=help_text(schema) if schema is not None else None,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.shorthands = dict(shorthands or {})
    if schema is not None:
        parser.add_argument("--config", default=default_config, help="YAML config (default: %(default)s)")
        parser.add_argument("overrides", nargs="*", help=overrides_help)
    else:
        parser.set_defaults(overrides=[])
    parser.add_argument("--log-level", default="warning",
                        help="debug | info | warning (default: %(default)s; info adds the libraries' INFO lines, "
                             "debug the traceback of a start-up error)")
    return parser


def setup_logging(level: str) -> None:
    """The root logger at ``level``; below INFO nothing of the libraries' chatter reaches the terminal."""
    numeric = logging.getLevelName(str(level).upper())
    if not isinstance(numeric, int):
        raise StartupError(f"--log-level {level}: use debug, info, warning or error")
    logging.basicConfig(level=numeric, format=LOG_FORMAT)
    logging.getLogger().setLevel(numeric)


def load_job_config(schema: type[T], args: argparse.Namespace) -> T:
    """``schema`` from ``args.config`` and ``args.overrides``; a bad key raises :class:`StartupError`."""
    try:
        return load_config(schema, args.config, args.overrides)
    except ConfigError as err:
        raise StartupError(str(err)) from err


@contextlib.contextmanager
def startup(what: str | None = None) -> Iterator[None]:
    """Everything raised inside becomes a :class:`StartupError` (one line; traceback in the log).

    Args:
        what: prefixed to messages of exceptions that are not already start-up errors, e.g.
            ``"reading the checkpoint"``.
    """
    try:
        yield
    except StartupError:
        raise
    except ConfigError as err:
        raise StartupError(str(err)) from err
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - start-up: any failure is reported as one line
        message = _first_line(err)
        raise StartupError(f"{what}: {message}" if what else message) from err


def _first_line(err: BaseException) -> str:
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    if isinstance(err, FileNotFoundError) and err.filename is not None:
        return f"file not found: {err.filename}"
    return text if text else type(err).__name__


def job_main(main: Callable[[list[str] | None], int | None]) -> Callable[[Sequence[str] | None], int]:
    """Decorator for a job's ``main(argv)``: it returns the exit code, and a :class:`StartupError`
    becomes one ``error:`` line on stderr (rank 0 only), its traceback a DEBUG log record, and
    :data:`STARTUP_EXIT`. ``if __name__ == "__main__": sys.exit(main())``."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            code = main(list(argv) if argv is not None else None)
        except StartupError as err:
            log.debug("start-up failed", exc_info=True)
            if is_main_process():
                print(f"error: {err}", file=sys.stderr, flush=True)
            else:  # let rank 0 print and exit first: torchrun then stops the others, and names rank 0
                time.sleep(RANK_EXIT_DELAY_S)
            return STARTUP_EXIT
        return int(code or 0)

    return wrapper
