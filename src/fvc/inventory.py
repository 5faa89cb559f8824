"""Dataset inventory: what Snakemake cannot see, written to a file it can.

Snakemake decides what to rerun from file modification times, params and code; it sees the
metadata file (or the class folder itself) but never the videos behind it. So a video copied
into ``fake/``, or a listed file replaced under the same name, would leave every fold silently
stale. :func:`update_inventory` lists every video a metadata source points at with a cheap
``stat`` (path, size, modification time in ns; never the contents) and rewrites the inventory
file, atomically, **only when that list changed**. The inventory is an input of ``load_data``,
so a changed dataset makes the next ``snakemake -n`` plan ``load_data`` and everything after it
with the reason "Updated input files: .../inventory.tsv"; an unchanged dataset keeps the old
file (and its mtime), so nothing reruns.

The function takes any metadata source and config, so a later rule over another set of videos
(e.g. a predict set) gets the same behaviour with its own inventory path. The scan never
raises: an unreadable metadata source is recorded as such (the rule that reads it reports the
error with its own one-line message), a missing video is recorded as missing (``load_data``
excludes it with a reason; when it appears, the inventory changes).

Not noticed: a file rewritten in place with the same size and its modification time restored
(e.g. ``touch -r``, ``rsync -t`` of a same-size edit), and anything not listed by the metadata.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fvc.formats import DataError, read_metadata_source
from fvc.io import write_text

HEADER = "path\tsize\tmtime_ns"
#: Written for a video that is listed but does not exist (or cannot be stat'ed).
MISSING = "missing"

Entry = tuple[str, str]  # (size, mtime_ns), both as written in the file; or (MISSING, MISSING)


@dataclass
class InventoryChange:
    """How a dataset differs from its previous inventory (paths, sorted)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    appeared: list[str] = field(default_factory=list)  # listed before, missing then, there now
    vanished: list[str] = field(default_factory=list)  # listed, there before, missing now
    other: str = ""  # the source itself became (un)readable

    def __bool__(self) -> bool:
        return bool(
            self.added or self.removed or self.modified or self.appeared or self.vanished
        ) or bool(self.other)

    def summary(self) -> str:
        """``2 added, 1 modified (size or mtime)`` plus the first path of each kind."""
        parts = []
        for name, paths in (
            ("added", self.added),
            ("removed", self.removed),
            ("modified (size or mtime)", self.modified),
            ("appeared", self.appeared),
            ("now missing", self.vanished),
        ):
            if paths:
                parts.append(f"{len(paths)} {name} (e.g. {paths[0]})")
        if self.other:
            parts.append(self.other)
        return ", ".join(parts) or "no change"


def _stat(path: str) -> Entry:
    try:
        st = os.stat(path)
    except OSError:
        return (MISSING, MISSING)
    return (str(st.st_size), str(st.st_mtime_ns))


def scan_inventory(
    metadata_source: str | os.PathLike[str], data_cfg: dict[str, Any], labels: bool = True
) -> tuple[dict[str, Entry], str]:
    """``{absolute video path: (size, mtime_ns)}`` of every video the source lists, and an error.

    The error is "" or the one-line message of a source that cannot be read (then the dict is
    empty). Paths are resolved exactly as ``load_data`` resolves them
    (:func:`fvc.formats.read_metadata_source`; ``labels=False`` for a predict set, whose
    labels are optional); only ``stat`` touches the videos.
    """
    fmt_logger = logging.getLogger("fvc.formats")
    level = fmt_logger.level
    fmt_logger.setLevel(logging.WARNING)  # no "read as table" chatter at parse time
    try:
        table = read_metadata_source(metadata_source, data_cfg, labels=labels)
    except (DataError, OSError, ValueError) as exc:
        return {}, " ".join(str(exc).split()) or type(exc).__name__
    finally:
        fmt_logger.setLevel(level)
    return {p: _stat(p) for p in sorted(set(table["path"]))}, ""


def format_inventory(entries: dict[str, Entry], error: str = "") -> str:
    """The inventory file's text: a header, then ``path size mtime_ns`` lines sorted by path."""
    lines = [HEADER]
    if error:
        lines.insert(0, f"# unreadable metadata: {error}")
    lines += [f"{p}\t{s}\t{m}" for p, (s, m) in sorted(entries.items())]
    return "\n".join(lines) + "\n"


def parse_inventory(text: str) -> tuple[dict[str, Entry], str]:
    """Inverse of :func:`format_inventory` (tolerant: unknown lines are skipped)."""
    entries: dict[str, Entry] = {}
    error = ""
    for line in text.splitlines():
        if line.startswith("# unreadable metadata: "):
            error = line.split(": ", 1)[1]
            continue
        parts = line.rsplit("\t", 2)
        if line == HEADER or len(parts) != 3:
            continue
        entries[parts[0]] = (parts[1], parts[2])
    return entries, error


def diff_inventory(
    old: dict[str, Entry], new: dict[str, Entry], old_error: str = "", new_error: str = ""
) -> InventoryChange:
    """What changed between two inventories."""
    change = InventoryChange()
    for path in sorted(new.keys() - old.keys()):
        change.added.append(path)
    for path in sorted(old.keys() - new.keys()):
        change.removed.append(path)
    for path in sorted(old.keys() & new.keys()):
        before, after = old[path], new[path]
        if before == after:
            continue
        if before[0] == MISSING:
            change.appeared.append(path)
        elif after[0] == MISSING:
            change.vanished.append(path)
        else:
            change.modified.append(path)
    if old_error != new_error:
        change.other = (
            f"metadata unreadable: {new_error}" if new_error else "metadata readable again"
        )
    return change


def update_inventory(
    metadata_source: str | os.PathLike[str],
    data_cfg: dict[str, Any],
    inventory_path: str | os.PathLike[str],
    labels: bool = True,
) -> InventoryChange | None:
    """Rescan ``metadata_source``; rewrite ``inventory_path`` only if its content changed.

    Returns None when the file was written for the first time, the (truthy) change when it was
    rewritten, and an empty (falsy) change when it was left alone (mtime untouched, so nothing
    reruns). Never raises for a bad source or a missing video (see the module docstring); an
    unwritable inventory path does raise (OSError).
    """
    entries, error = scan_inventory(metadata_source, data_cfg, labels)
    text = format_inventory(entries, error)
    path = Path(inventory_path)
    try:
        old_text = path.read_text()
    except FileNotFoundError:
        write_text(path, text)
        return None
    if old_text == text:
        return InventoryChange()
    old, old_error = parse_inventory(old_text)
    change = diff_inventory(old, entries, old_error, error)
    if not change:
        change.other = "inventory file rewritten (format)"
    write_text(path, text)
    return change
