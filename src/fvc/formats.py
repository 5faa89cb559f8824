"""Metadata formats and label mapping: any supported source -> one ``row, path, label`` table.

Four formats (``data.format``, or ``auto`` to detect them from the path and header):

- ``table``: CSV/TSV/Parquet with ``path`` and ``label`` columns (other columns are kept, e.g.
  the group column);
- ``fvc``: FVC's ``FVC.csv`` (``cascade_id, video_url, label``); each row is mapped to a local
  file by a ``path`` column or the ``data.fvc_filename`` pattern, and ``cascade_id`` becomes
  the group so reposts of one video never straddle folds;
- ``list``: MMAction2 / PySlowFast ``path label`` lines;
- ``folders``: one sub-folder per class (``root/real/*.mp4``, ``root/fake/*.mp4``).

Labels are mapped to 1 (``data.positive_label``) and 0 by :func:`encode_labels`. Every error is a
one-line :class:`DataError` naming the file and the row (line) to fix. docs/data.md has examples.
"""

from __future__ import annotations

import bisect
import fnmatch
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

from fvc.config import default, group_column

log = logging.getLogger(__name__)

#: Extensions the ``folders`` format lists (anything else in a class folder is ignored).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv"}
    | {".3gp", ".ts", ".mts", ".ogv"}
)
FORMATS = ("table", "fvc", "list", "folders")
_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET = {".parquet", ".pq"}
_LISTS = {".txt", ".lst", ".list"}
_GLOB_CHARS = set("*?[")


class DataError(ValueError):
    """Unusable input data (bad metadata, labels, or too few usable videos); one-line message."""


# ----------------------------------------------------------------------------- labels


def _label_key(value: Any) -> str:
    """Normalised class identity of a label as written: case-insensitive, 1.0 == 1."""
    text = str(value).strip()
    try:
        number = float(text)
        if number.is_integer():
            return str(int(number))
    except ValueError:
        pass
    return text.lower()


def encode_labels(
    names: list[str], positive_label: str, source: str, rows: list[int]
) -> tuple[np.ndarray, dict[int, str]]:
    """Map label names to 1 (positive) / 0 and return the class display names.

    The positive class is the value equal to ``positive_label`` (case-insensitive); the one
    other value is negative. Without such a value, 0/1 labels are taken as they are. A third
    value, an empty label, or two string labels none of which is ``positive_label`` raise
    :class:`DataError` naming the row.
    """
    keys = [_label_key(n) for n in names]
    for name, row in zip(names, rows, strict=True):
        if not str(name).strip() or str(name).strip().lower() == "nan":
            raise DataError(f"{source}: row {row}: empty label")
    pos_key = _label_key(positive_label)
    distinct = list(dict.fromkeys(keys))
    if pos_key not in distinct and set(distinct) <= {"0", "1"}:
        pos_key = "1"  # 0/1 labels: 1 is the positive class
    elif pos_key not in distinct and len(distinct) == 2:
        raise DataError(
            f"{source}: positive_label {positive_label!r} matches none of the labels "
            f"{sorted(str(n).strip() for n in dict.fromkeys(names))}; set data.positive_label"
        )
    seen: list[str] = [pos_key]
    for i, key in enumerate(keys):
        if key in seen:
            continue
        if len(seen) == 2:
            raise DataError(
                f"{source}: row {rows[i]}: label {str(names[i]).strip()!r} is a third class "
                f"(positive_label {positive_label!r} and "
                f"{str(names[keys.index(seen[1])]).strip()!r} already seen); labels must be binary"
            )
        seen.append(key)
    others = seen[1:]
    labels = np.array([1 if k == pos_key else 0 for k in keys], dtype=np.int8)
    first = {k: str(n).strip() for k, n in reversed(list(zip(keys, names, strict=True)))}
    negative = first[others[0]] if others else f"not {positive_label}"
    return labels, {1: first.get(pos_key, str(positive_label)), 0: negative}


# ----------------------------------------------------------------------------- readers
# Each reader returns (table with `path` and `label` + extra columns, row numbers or None).
# Row numbers default to the 1-based data row; the list reader returns line numbers.
# ``labels=False`` (predict sets): the label is optional; a table without any label
# has no `label` column.

Reader = Callable[..., tuple[pd.DataFrame, list[int] | None]]


def _read_any_table(path: Path) -> pd.DataFrame:
    """CSV/TSV/Parquet by extension, every value as text (labels stay as written)."""
    ext = path.suffix.lower()
    if ext in _PARQUET:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
        df = df.astype("string").fillna("").astype(object)
    elif ext in _SEPARATORS:
        try:
            df = pd.read_csv(path, sep=_SEPARATORS[ext], dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{path}: not a readable table: {first}") from None
    else:
        raise DataError(f"{path}: unknown table extension {ext!r} (use .csv, .tsv or .parquet)")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _require(df: pd.DataFrame, path: Path, needed: list[str]) -> pd.DataFrame:
    """Rename ``needed`` columns case-insensitively; a missing one is a DataError naming all."""
    lower = {c.lower(): c for c in df.columns}
    missing = [n for n in needed if n not in df.columns and n.lower() not in lower]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns found: {list(df.columns)}")
    return df.rename(columns={lower[n.lower()]: n for n in needed if n not in df.columns})


def _has_label(df: pd.DataFrame) -> bool:
    return any(c.lower() == "label" for c in df.columns)


def _read_table(
    path: Path, cfg: dict[str, Any], base: Path, labels: bool = True
) -> tuple[pd.DataFrame, None]:
    """A table with ``path`` and ``label`` columns (any others are kept, e.g. the group)."""
    df = _read_any_table(path)
    needed = ["path", "label"] if labels or _has_label(df) else ["path"]
    return _require(df, path, needed), None


def url_id(url: str) -> str:
    """A file-name-safe id for a video URL: YouTube's ``v=``/youtu.be id, else the last segment."""
    parsed = urlparse(url.strip())
    query = parse_qs(parsed.query)
    if query.get("v"):
        ident = query["v"][0]
    else:
        segments = [s for s in parsed.path.split("/") if s]
        ident = segments[-1] if segments else parsed.netloc
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in ident) or "video"


class _Listings:
    """``glob.glob`` over folders listed once: sorted names per folder, searched by prefix.

    Resolving N rows with ``glob.glob`` lists the video folder N times and matches every name
    each time (N² work: 12 s for 2,000 FVC rows, minutes for 10,000). Here each folder is
    listed once and a pattern's literal prefix (``abc`` of ``abc.*``) is found by bisection.
    Same rules as ``glob.glob(recursive=False)``: case-sensitive, and a wildcard never matches
    a leading dot.
    """

    def __init__(self) -> None:
        self._names: dict[str, list[str]] = {}
        self._dirs: dict[str, list[str]] = {}

    def names(self, folder: str) -> list[str]:
        if folder not in self._names:
            try:
                self._names[folder] = sorted(os.listdir(folder or os.curdir))
            except OSError:
                self._names[folder] = []
        return self._names[folder]

    def glob(self, pattern: str) -> list[str]:
        folder, name = os.path.split(pattern)
        if folder not in self._dirs:
            magic = _GLOB_CHARS & set(folder)
            self._dirs[folder] = (
                [d for d in self.glob(folder) if os.path.isdir(d)] if magic else [folder]
            )
        folders = self._dirs[folder]
        if not _GLOB_CHARS & set(name):
            paths = [os.path.join(f, name) for f in folders]
            return [p for p in paths if os.path.lexists(p)]
        prefix = name[: min(name.find(c) for c in _GLOB_CHARS if c in name)]
        out = []
        for f in folders:
            names = self.names(f)
            for i in range(bisect.bisect_left(names, prefix), len(names)):
                candidate = names[i]
                if not candidate.startswith(prefix):
                    break
                if candidate.startswith(".") and not name.startswith("."):
                    continue
                # Match the rest only: "*" of "abc.*" is one cached regex for every row,
                # where the whole pattern would compile a new one per row.
                if fnmatch.fnmatchcase(candidate[len(prefix) :], name[len(prefix) :]):
                    out.append(os.path.join(f, candidate))
        return out


def _resolve_glob(
    name: str, base: Path, source: Path, row: int, listings: _Listings | None = None
) -> str:
    """``name`` itself, or the one video file its wildcards match under ``base``.

    Downloaders pick the extension (``{url_id}.*`` may be .mp4, .webm or .mkv). No match keeps
    the pattern (the row is then excluded as a missing file); two videos matching one row are
    an error, since picking one could silently swap videos. Pass one ``listings`` for all rows
    of a table (each folder is then listed once).
    """
    if not _GLOB_CHARS & set(name):
        return name
    pattern = os.path.join(base, os.path.expanduser(name))
    found = (listings or _Listings()).glob(pattern)
    matches = sorted(m for m in found if os.path.isfile(m))
    videos = [m for m in matches if Path(m).suffix.lower() in VIDEO_EXTENSIONS] or matches
    if len(videos) > 1:
        raise DataError(
            f"{source}: row {row}: data.fvc_filename matches {len(videos)} files "
            f"({', '.join(Path(v).name for v in videos[:4])}); make the pattern specific"
        )
    return videos[0] if videos else name


def _read_fvc(
    path: Path, cfg: dict[str, Any], base: Path, labels: bool = True
) -> tuple[pd.DataFrame, None]:
    """FVC.csv (``cascade_id, video_url, label``): map each URL to a local file.

    A ``path`` column wins; otherwise ``data.fvc_filename`` (default ``{url_id}.mp4``) is
    formatted with the row's columns plus ``url_id`` and ``row``, and may hold wildcards
    (``{url_id}.*``). ``cascade_id`` (near-duplicate reposts of one video) becomes the group.
    """
    df = _read_any_table(path)
    df = _require(df, path, ["video_url", "label"] if labels or _has_label(df) else ["video_url"])
    if "path" not in df.columns:
        pattern = str(cfg.get("fvc_filename") or default("data", "fvc_filename"))
        paths = []
        listings = _Listings()
        for row, rec in enumerate(df.to_dict("records"), 1):
            try:
                name = pattern.format(**rec, url_id=url_id(rec["video_url"]), row=row)
            except (KeyError, IndexError, ValueError) as exc:
                raise DataError(
                    f"{path}: data.fvc_filename {pattern!r} cannot be filled for row {row}: "
                    f"{exc!r}; columns: {list(df.columns)}"
                ) from None
            paths.append(_resolve_glob(name, base, path, row, listings))
        df["path"] = paths
    group_col = group_column(cfg)
    if group_col and group_col not in df.columns and "cascade_id" in df.columns:
        df[group_col] = df["cascade_id"]
    return df, None


def _read_list(
    path: Path, cfg: dict[str, Any], base: Path, labels: bool = True
) -> tuple[pd.DataFrame, list[int]]:
    """MMAction2 / PySlowFast list: one ``path label`` per line (# comments, blank lines ok).

    The label is the last whitespace-separated field, so paths may contain spaces. Rows are
    line numbers, so error messages point at the line to fix. With ``labels=False`` a line may
    be a bare path (one field, or a whole line ending in a video extension); then every line
    must be one, since a list that labels some videos only is most likely a mistake.
    """
    records, rows, bare = [], [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.rsplit(None, 1)
            if not labels and (len(parts) == 1 or Path(text).suffix.lower() in VIDEO_EXTENSIONS):
                bare.append(number)
                parts = [text, ""]
            elif len(parts) != 2:
                raise DataError(f"{path}: line {number}: expected 'path label', got {text!r}")
            records.append({"path": parts[0], "label": parts[1]})
            rows.append(number)
    if bare and len(bare) != len(rows):
        labelled = next(r for r in rows if r not in bare)
        raise DataError(
            f"{path}: line {bare[0]} has no label but line {labelled} has one; label every "
            "line or none"
        )
    if bare:
        return pd.DataFrame({"path": [r["path"] for r in records]}), rows
    return pd.DataFrame(records, columns=["path", "label"]), rows


def _read_folders(
    path: Path, cfg: dict[str, Any], base: Path, labels: bool = True
) -> tuple[pd.DataFrame, None]:
    """One sub-folder per class (``root/real/*.mp4``, ``root/fake/*.mp4``), searched recursively.

    Files are listed in sorted order (rows are stable). A broken symlink with a video extension
    is listed too, so it is reported as a missing file instead of silently disappearing. With
    ``labels=False`` a folder without exactly two class folders is a plain folder of unlabelled
    videos (every video file below it).
    """
    classes = {}
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            (
                f
                for f in sub.rglob("*")
                if f.suffix.lower() in VIDEO_EXTENSIONS and (f.is_file() or f.is_symlink())
            ),
            key=lambda f: f.parts,  # Path order, without Path.__lt__'s cost per comparison
        )
        if files:
            classes[sub.name] = files
    if len(classes) != 2 and not labels:
        files = sorted(
            f
            for f in path.rglob("*")
            if f.suffix.lower() in VIDEO_EXTENSIONS and (f.is_file() or f.is_symlink())
        )
        return pd.DataFrame({"path": [os.path.abspath(f) for f in files]}), None
    if len(classes) != 2:
        raise DataError(
            f"{path}: expected 2 class folders with videos ({sorted(VIDEO_EXTENSIONS)}), found "
            f"{len(classes)}: {list(classes)}"
        )
    # Absolute: ``path`` may be relative to the working directory, and resolving it again
    # against ``data.root`` (or the folder itself) would double it.
    records = [
        {"path": os.path.abspath(f), "label": name}
        for name, files in classes.items()
        for f in files
    ]
    return pd.DataFrame(records, columns=["path", "label"]), None


_READERS: dict[str, Reader] = {
    "table": _read_table,
    "fvc": _read_fvc,
    "list": _read_list,
    "folders": _read_folders,
}


def detect_format(path: Path) -> str:
    """Guess the metadata format from the path and the header line."""
    if path.is_dir():
        return "folders"
    ext = path.suffix.lower()
    if ext in _LISTS:
        return "list"
    if ext in _PARQUET:
        import pyarrow.parquet as pq

        try:
            columns = {c.lower() for c in pq.read_schema(path).names}
        except Exception as exc:  # ArrowInvalid, OSError...
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
    elif ext in _SEPARATORS:
        with open(path, encoding="utf-8", errors="replace") as fh:
            header = fh.readline().strip()
        columns = {c.strip().lower() for c in header.split(_SEPARATORS[ext])}
        if len(columns) == 1 and len(header.split()) == 2 and "path" not in columns:
            return "list"  # headerless 'path label' lines
    else:
        raise DataError(f"{path}: cannot tell the metadata format; set data.format")
    if "video_url" in columns and "path" not in columns:
        return "fvc"
    return "table"


def read_metadata_source(
    metadata_path: str | os.PathLike[str], cfg: dict[str, Any], labels: bool = True
) -> pd.DataFrame:
    """Read any supported metadata format into ``row, path (absolute), label`` (+ extra columns).

    ``row`` is the 1-based data row (line number for list files; a user column named ``row``
    is replaced). Relative paths are resolved against ``data.root`` or, when that is null, the
    metadata file's folder (the folder itself for the ``folders`` format). ``labels=False``
    (predict sets) accepts sources without labels: the result then has no ``label`` column.
    """
    path = Path(metadata_path)
    if not path.exists():
        raise DataError(f"{path}: metadata not found")
    fmt = str(cfg.get("format") or default("data", "format"))
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in _READERS:
        raise DataError(f"data.format: {fmt!r} is not one of auto, {', '.join(_READERS)}")
    if fmt == "folders" and not path.is_dir():
        raise DataError(f"{path}: data.format is 'folders' but this is not a folder")
    if fmt != "folders" and path.is_dir():
        raise DataError(f"{path}: is a folder but data.format is {fmt!r}; use folders or auto")
    base = Path(
        os.path.expanduser(str(cfg.get("root") or (path if path.is_dir() else path.parent)))
    )
    df, rows = _READERS[fmt](path, cfg, base, labels=labels)
    if "row" in df.columns:
        log.warning("%s: column 'row' is replaced by the row number", path)
        df = df.drop(columns="row")
    df.insert(0, "row", rows if rows is not None else np.arange(1, len(df) + 1))
    resolved = []
    for row, p in zip(df["row"], df["path"].astype(str), strict=True):
        if not p.strip() or p.strip().lower() == "nan":
            raise DataError(f"{path}: row {row}: empty path")
        resolved.append(os.path.abspath(os.path.join(base, os.path.expanduser(p.strip()))))
    df["path"] = resolved
    df["row"] = df["row"].astype(int)
    log.info("metadata %s read as %s: %d rows", path, fmt, len(df))
    return df
