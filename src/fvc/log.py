"""Logging set-up shared by the rule scripts.

Snakemake gives each job a ``log:`` file; rule scripts call :func:`setup_logging` so that library
messages go to that file (and stderr, which SLURM captures) with timestamps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(
    log_path: str | os.PathLike[str] | None = None, level: int = logging.INFO
) -> None:
    """Send ``fvc`` logs (and warnings) to ``log_path`` and to stderr.

    The file is opened for appending, but Snakemake empties a rule's log before each retry:
    the record across attempts (resume points, stops) is ``memory.jsonl`` in the fold's
    checkpoint directory and, on SLURM, the plugin's per-job logs.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)


@contextlib.contextmanager
def exit_on(name: str, *errors: type[BaseException]) -> Iterator[None]:
    """Turn the expected input errors ``errors`` into one log line and exit status 1.

    For rule scripts: a bad table or too few videos is the user's to fix, and the message
    (which names the file and row) is all they need; a traceback would bury it. Any other
    exception still propagates with its traceback (a bug or a resource problem).
    """
    try:
        yield
    except errors as exc:
        logging.getLogger(name).error("%s", exc)
        sys.exit(1)
