"""Atomic artifact writing.

Every artifact of the workflow is first written to a temporary file in the destination directory,
flushed and fsynced, then renamed over the final name. A crash, OOM kill or SLURM time limit can
therefore never leave a file that looks complete but is not: either the old content (or nothing)
or the new content is visible.

A writer killed mid-write (SIGKILL, a node lost) leaves its temporary file behind, named
``.<name>.fvc<pid>.<random><suffix>.tmp`` after the writing process; :func:`remove_stale_temps`
removes the ones whose writer is gone (a training run calls it when it starts or resumes: a
checkpoint's temporary file is as large as the checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. ``suffix``
    defaults to the destination's suffix so libraries that dispatch on the extension still work.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=temp_prefix(dest.name),
        suffix=(dest.suffix if suffix is None else suffix) + ".tmp",
        dir=dest.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the artifact the permissions a plain open() would have
    # (0666 minus the umask) so colleagues on a shared cluster can read the results.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def temp_prefix(name: str) -> str:
    """Start of this process's temporary file names for the artifact ``name``."""
    return f".{name}.fvc{os.getpid()}."


_TEMP = re.compile(r"^\..+\.fvc(?P<pid>\d+)\..*tmp$")


def remove_stale_temps(
    folder: str | os.PathLike[str], started_at: float | None = None
) -> list[Path]:
    """Remove the temporary files of atomic writes in ``folder`` whose writer is gone.

    Gone: no live process has the PID in the file's name, or that PID is this process's and
    the file is older than this process (``started_at``, default: its start time; an earlier
    process had the same PID). A file of another live writer is never touched. Returns what
    was removed (logged).
    """
    import psutil

    me = os.getpid()
    if started_at is None:
        started_at = psutil.Process(me).create_time()
    removed = []
    for path in sorted(Path(folder).glob(".*tmp")) if Path(folder).is_dir() else []:
        m = _TEMP.match(path.name)
        if m is None:
            continue
        pid = int(m.group("pid"))
        try:
            older = path.stat().st_mtime < started_at
        except FileNotFoundError:  # its writer just renamed it
            continue
        if (pid == me and older) or (pid != me and not psutil.pid_exists(pid)):
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                removed.append(path)
                log.info("removed %s (%d bytes), left by a writer that is gone", path, size)
    return removed


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write JSON (sorted keys, indented) so diffs between runs stay readable."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_parquet(path: str | os.PathLike[str], df: pd.DataFrame) -> None:
    """Atomically write a DataFrame as Parquet without the pandas index."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_feather(path: str | os.PathLike[str], df: pd.DataFrame) -> None:
    """Atomically write a DataFrame as Feather (index reset, as Feather requires)."""
    with atomic_path(path) as tmp:
        df.reset_index(drop=True).to_feather(tmp)


def write_tsv(path: str | os.PathLike[str], df: pd.DataFrame) -> None:
    """Atomically write a tab-separated table (header always present, even when empty)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
