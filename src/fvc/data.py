"""Metadata loading, video probing and the decoded clip cache.

``load_metadata`` turns a user's metadata (a CSV/TSV/Parquet table, an FVC.csv, a ``path label``
list or one folder per class) into ``metadata.parquet`` (one row per usable video, integer labels,
probed stream facts) and ``excluded.tsv`` (every unusable row with a reason). ``build_clip_cache``
decodes each usable video once into one ``clips.npy`` so that later stages never touch video
files again. Both run the per-video work in ``workers`` processes and write nothing when they
fail. Formats and label rules are described in docs/artifacts.md.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fvc.io import atomic_path, write_parquet, write_tsv
from fvc.video import VideoError, decode_clip, probe_video

log = logging.getLogger(__name__)

METADATA_COLUMNS = [
    "video_id", "path", "label", "label_name", "group",
    "frames", "fps", "width", "height", "codec", "duration",
]  # fmt: skip
EXCLUDED_COLUMNS = ["row", "path", "label", "reason"]
PROBE_KEYS = ["frames", "fps", "width", "height", "codec", "duration"]


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


# ----------------------------------------------------------------------------- metadata formats

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv"}
    | {".3gp", ".ts", ".mts", ".ogv"}
)
_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET = {".parquet", ".pq"}
_LISTS = {".txt", ".lst", ".list"}


def _read_any_table(path: Path) -> pd.DataFrame:
    """CSV/TSV/Parquet by extension, every value as text (labels stay as written)."""
    ext = path.suffix.lower()
    if ext in _PARQUET:
        df = pd.read_parquet(path)
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


def _read_table(path: Path, cfg: dict[str, Any]) -> pd.DataFrame:
    """A table with ``path`` and ``label`` columns (any others are kept, e.g. the group)."""
    return _require(_read_any_table(path), path, ["path", "label"])


def _url_id(url: str) -> str:
    """A file-name-safe id for a video URL: YouTube's ``v=``/youtu.be id, else the last segment."""
    from urllib.parse import parse_qs, urlparse

    parsed = urlparse(url.strip())
    query = parse_qs(parsed.query)
    if query.get("v"):
        ident = query["v"][0]
    else:
        segments = [s for s in parsed.path.split("/") if s]
        ident = segments[-1] if segments else parsed.netloc
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in ident) or "video"


def _read_fvc(path: Path, cfg: dict[str, Any]) -> pd.DataFrame:
    """FVC.csv (``cascade_id, video_url, label``): map each URL to a local file.

    A ``path`` column wins; otherwise ``data.fvc_filename`` (default ``{url_id}.mp4``) is
    formatted with the row's columns plus ``url_id`` and ``row``. ``cascade_id`` (near-duplicate
    reposts of one video) becomes the group, so reposts never straddle folds.
    """
    df = _require(_read_any_table(path), path, ["video_url", "label"])
    if "path" not in df.columns:
        pattern = str(cfg.get("fvc_filename") or "{url_id}.mp4")
        paths = []
        for row, rec in enumerate(df.to_dict("records"), 1):
            try:
                paths.append(pattern.format(**rec, url_id=_url_id(rec["video_url"]), row=row))
            except (KeyError, IndexError, ValueError) as exc:
                raise DataError(
                    f"{path}: data.fvc_filename {pattern!r} cannot be filled for row {row}: "
                    f"{exc!r}; columns: {list(df.columns)}"
                ) from None
        df["path"] = paths
    group_col = cfg.get("group_column")
    if group_col and group_col not in df.columns and "cascade_id" in df.columns:
        df[group_col] = df["cascade_id"]
    return df


def _read_list(path: Path, cfg: dict[str, Any]) -> pd.DataFrame:
    """MMAction2 / PySlowFast list: one ``path label`` per line (# comments, blank lines ok).

    ``row`` is the line number, so error messages point at the line to fix.
    """
    records = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2:
                raise DataError(f"{path}: line {number}: expected 'path label', got {text!r}")
            records.append({"row": number, "path": parts[0], "label": parts[1]})
    return pd.DataFrame(records, columns=["row", "path", "label"])


def _read_folders(path: Path, cfg: dict[str, Any]) -> pd.DataFrame:
    """One sub-folder per class (``root/real/*.mp4``, ``root/fake/*.mp4``), searched recursively."""
    classes = {}
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            f for f in sub.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file()
        )
        if files:
            classes[sub.name] = files
    if len(classes) != 2:
        raise DataError(
            f"{path}: expected 2 class folders with videos ({sorted(VIDEO_EXTENSIONS)}), found "
            f"{len(classes)}: {list(classes)}"
        )
    records = [{"path": str(f), "label": name} for name, files in classes.items() for f in files]
    return pd.DataFrame(records, columns=["path", "label"])


def _detect_format(path: Path) -> str:
    """Guess the metadata format from the path and the header line."""
    if path.is_dir():
        return "folders"
    ext = path.suffix.lower()
    if ext in _LISTS:
        return "list"
    if ext in _PARQUET:
        import pyarrow.parquet as pq

        columns = {c.lower() for c in pq.read_schema(path).names}
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


_READERS: dict[str, Callable[[Path, dict[str, Any]], pd.DataFrame]] = {
    "table": _read_table, "fvc": _read_fvc, "list": _read_list, "folders": _read_folders,
}  # fmt: skip


def read_metadata_source(
    metadata_path: str | os.PathLike[str], cfg: dict[str, Any]
) -> pd.DataFrame:
    """Read any supported metadata format into ``row, path (absolute), label`` (+ extra columns).

    ``row`` is the 1-based data row (line number for list files). Relative paths are resolved
    against ``data.root`` or, when that is null, the metadata file's folder.
    """
    path = Path(metadata_path)
    if not path.exists():
        raise DataError(f"{path}: metadata not found")
    fmt = str(cfg.get("format") or "auto")
    if fmt == "auto":
        fmt = _detect_format(path)
    if fmt not in _READERS:
        raise DataError(f"data.format: {fmt!r} is not one of auto, {', '.join(_READERS)}")
    if fmt == "folders" and not path.is_dir():
        raise DataError(f"{path}: data.format is 'folders' but this is not a folder")
    df = _READERS[fmt](path, cfg)
    if "row" not in df.columns:
        df.insert(0, "row", np.arange(1, len(df) + 1))
    base = Path(
        os.path.expanduser(str(cfg.get("root") or (path if path.is_dir() else path.parent)))
    )
    resolved = []
    for row, p in zip(df["row"], df["path"].astype(str), strict=True):
        if not p.strip() or p.strip().lower() == "nan":
            raise DataError(f"{path}: row {row}: empty path")
        resolved.append(os.path.abspath(os.path.join(base, os.path.expanduser(p.strip()))))
    df["path"] = resolved
    df["row"] = df["row"].astype(int)
    log.info("metadata %s read as %s: %d rows", path, fmt, len(df))
    return df


# ----------------------------------------------------------------------------- parallel map


def _ordered_map(
    fn: Callable[[Any], Any], items: list[Any], workers: int, what: str
) -> Iterator[Any]:
    """``map(fn, items)`` in order over ``workers`` forked processes, with bounded look-ahead.

    At most ``4 * workers`` results are pending, so memory stays flat however many items there
    are. Fork (not spawn) because rule scripts have no ``__main__`` guard. Progress goes to the
    log every ~10 s as plain lines that stay readable in a log file.
    """
    total, start, last_log = len(items), time.monotonic(), time.monotonic()

    def progress(done: int) -> None:
        nonlocal last_log
        now = time.monotonic()
        if done == total or now - last_log >= 10:
            last_log = now
            rate = done / max(now - start, 1e-9)
            log.info("%s: %d/%d videos (%.0f%%), %.1f videos/s", what, done, total,
                     100 * done / max(total, 1), rate)  # fmt: skip

    if workers <= 1 or total <= 1:
        for done, item in enumerate(items, 1):
            yield fn(item)
            progress(done)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
        pending: deque = deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * workers:
                break
        done = 0
        while pending:
            result = pending.popleft().result()
            for nxt in it:  # refill one slot, if items are left
                pending.append(pool.submit(fn, nxt))
                break
            done += 1
            yield result
            progress(done)


def _probe_one(path: str) -> dict[str, Any] | str:
    """Probe result dict, or the exclusion reason (worker function, must be picklable)."""
    try:
        return probe_video(path)
    except VideoError as exc:
        return exc.reason


# ----------------------------------------------------------------------------- load_metadata


def _summary(reasons: Iterable[str]) -> str:
    """'missing file: 3, truncated: 1' (reason kinds without their details)."""
    kinds = Counter(r.split(":")[0] for r in reasons)
    return ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) or "none"


def load_metadata(
    data_cfg: dict[str, Any],
    metadata_path: str | os.PathLike[str],
    out_metadata: str | os.PathLike[str],
    out_excluded: str | os.PathLike[str],
    min_per_class: int,
    workers: int | None = None,
) -> pd.DataFrame:
    """Read the metadata, probe every video, write metadata.parquet and excluded.tsv.

    Probing runs in ``workers`` processes (default ``data_cfg["workers"]``, else 1).
    Rows that point at the same file twice are excluded as "duplicate of row N" (the same file
    with two labels is an error). Raises :class:`DataError` (and writes nothing) when a class
    has fewer than ``min_per_class`` usable videos (the caller passes cv.n_splits).
    """
    source = str(metadata_path)
    table = read_metadata_source(metadata_path, data_cfg)  # row, path (absolute), label, [group]
    if table.empty:
        raise DataError(f"{source}: no videos listed")
    rows = table["row"].tolist()
    labels, class_names = encode_labels(
        table["label"].astype(str).tolist(), str(data_cfg.get("positive_label", "fake")),
        source, rows,
    )  # fmt: skip
    width = max(5, len(str(max(rows))))
    table = table.assign(
        video_id=[f"v{r:0{width}d}" for r in rows],
        label_name=table["label"].astype(str).str.strip(),
        label=labels,
    )
    group_col = data_cfg.get("group_column") or None
    if group_col and group_col in table.columns:
        groups = table[group_col].astype("string").str.strip().fillna("")
        table["group"] = groups.where(groups != "", table["video_id"]).astype(str)
    else:
        table["group"] = table["video_id"]

    excluded: list[dict[str, Any]] = []
    first_row: dict[str, tuple[int, int, str]] = {}
    keep = []
    for i, (row, path, label, name) in enumerate(
        zip(rows, table["path"], table["label"], table["label_name"], strict=True)
    ):
        key = os.path.realpath(path)
        if key in first_row:
            frow, flabel, fname = first_row[key]
            if flabel != label:
                raise DataError(
                    f"{source}: rows {frow} and {row} list the same video {path} with different "
                    f"labels ({fname!r} and {name!r})"
                )
            excluded.append({"row": row, "path": path, "label": name,
                             "reason": f"duplicate of row {frow}"})  # fmt: skip
        else:
            first_row[key] = (row, int(label), name)
            keep.append(i)
    table = table.iloc[keep].reset_index(drop=True)

    workers = max(1, int(workers or data_cfg.get("workers") or 1))
    probes = list(_ordered_map(_probe_one, table["path"].tolist(), workers, "probe"))
    usable = []
    for i, result in enumerate(probes):
        if isinstance(result, str):
            rec = table.iloc[i]
            excluded.append({"row": int(rec["row"]), "path": rec["path"],
                             "label": rec["label_name"], "reason": result})  # fmt: skip
        else:
            usable.append(i)
    meta = table.iloc[usable].reset_index(drop=True)
    for key in PROBE_KEYS:
        meta[key] = [probes[i][key] for i in usable]
    meta = meta.astype({"label": "int8", "frames": "int64", "fps": "float64", "width": "int64",
                        "height": "int64", "duration": "float64"})[METADATA_COLUMNS]  # fmt: skip
    excl = pd.DataFrame(excluded, columns=EXCLUDED_COLUMNS).sort_values("row", kind="stable")

    counts = {c: int((meta["label"] == c).sum()) for c in (1, 0)}
    short = [c for c in (1, 0) if counts[c] < min_per_class]
    if short:
        raise DataError(
            f"{source}: class {class_names[short[0]]!r} has {counts[short[0]]} usable videos, "
            f"fewer than min_per_class={min_per_class} (cv.n_splits); usable: "
            f"{class_names[1]}={counts[1]}, {class_names[0]}={counts[0]}; "
            f"{len(excl)} excluded ({_summary(excl['reason'])})"
        )
    write_tsv(out_excluded, excl)
    write_parquet(out_metadata, meta)
    log.info("metadata: %d usable videos (%s=%d, %s=%d), %d excluded (%s)", len(meta),
             class_names[1], counts[1], class_names[0], counts[0], len(excl),
             _summary(excl["reason"]))  # fmt: skip
    return meta


# ----------------------------------------------------------------------------- clip cache


def _decode_one(task: tuple[str, int, int, int, str]) -> tuple[np.ndarray | None, bool, str]:
    """(clip, padded, '') or (None, False, reason) for one video (worker function)."""
    path, frames, num_frames, size, short_videos = task
    try:
        clip, padded = decode_clip(path, num_frames, size, frames, short_videos)
        return clip, padded, ""
    except VideoError as exc:
        return None, False, exc.reason


def _npy_offset(path: Path, shape: tuple[int, ...]) -> int:
    """Create a uint8 .npy of ``shape`` (header + sparse data) and return the data offset."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset = int(mm.offset)
    del mm
    return offset


def build_clip_cache(
    metadata_path: str | os.PathLike[str],
    out_clips: str | os.PathLike[str],
    out_index: str | os.PathLike[str],
    out_excluded: str | os.PathLike[str],
    data_cfg: dict[str, Any],
    workers: int = 1,
    min_per_class: int = 1,
) -> pd.DataFrame:
    """Decode every video of metadata.parquet once into clips.npy + clips.parquet.

    Clips are streamed to disk as they arrive (``os.pwrite`` into a file created by
    ``open_memmap``; writing through a memory map would count every written page in the RSS),
    so memory stays flat however large the dataset. Videos that fail to decode are listed in
    ``out_excluded`` and skipped, never replaced. Same input, same bytes. Raises
    :class:`DataError` (writing nothing) if a class is left with fewer than ``min_per_class``.
    """
    meta = pd.read_parquet(metadata_path)
    num_frames, size = int(data_cfg.get("num_frames", 8)), int(data_cfg.get("size", 64))
    short_videos = str(data_cfg.get("short_videos", "pad"))
    workers = max(1, min(int(workers), int(data_cfg.get("workers", workers))))
    clip_shape = (num_frames, size, size, 3)
    clip_bytes = int(np.prod(clip_shape))
    tasks = [(p, int(f), num_frames, size, short_videos)
             for p, f in zip(meta["path"], meta["frames"], strict=True)]  # fmt: skip

    ok_rows: list[int] = []
    padded_flags: list[bool] = []
    excluded: list[dict[str, Any]] = []
    with atomic_path(out_clips) as tmp:
        offset = _npy_offset(tmp, (len(meta), *clip_shape))
        with open(tmp, "r+b") as fh:
            results = _ordered_map(_decode_one, tasks, workers, "decode")
            for i, (clip, padded, reason) in enumerate(results):
                if clip is None:
                    rec = meta.iloc[i]
                    excluded.append({"row": int(str(rec["video_id"])[1:]), "path": rec["path"],
                                     "label": rec["label_name"], "reason": reason})  # fmt: skip
                    continue
                data = np.ascontiguousarray(clip, dtype=np.uint8).tobytes()
                os.pwrite(fh.fileno(), data, offset + len(ok_rows) * clip_bytes)
                ok_rows.append(i)
                padded_flags.append(bool(padded))
        labels = meta["label"].to_numpy()[ok_rows] if ok_rows else np.array([], dtype=np.int8)
        counts = {c: int((labels == c).sum()) for c in (1, 0)}
        if min(counts.values()) < min_per_class:
            raise DataError(
                f"{metadata_path}: after decoding, a class has fewer than min_per_class="
                f"{min_per_class} clips (positive={counts[1]}, negative={counts[0]}); "
                f"{len(excluded)} failed to decode ({_summary(e['reason'] for e in excluded)})"
            )
        if len(ok_rows) < len(meta):
            _shrink_npy(tmp, offset, (len(ok_rows), *clip_shape), clip_bytes)
    index = meta.iloc[ok_rows].reset_index(drop=True)
    index["clip_row"] = np.arange(len(ok_rows), dtype=np.int64)
    index["padded"] = np.array(padded_flags, dtype=bool)
    write_tsv(out_excluded, pd.DataFrame(excluded, columns=EXCLUDED_COLUMNS))
    write_parquet(out_index, index)
    log.info("clip cache: %d clips %s (%d padded), %d failed to decode (%s)", len(index),
             clip_shape, int(index["padded"].sum()), len(excluded),
             _summary(e["reason"] for e in excluded))  # fmt: skip
    return index


def _shrink_npy(path: Path, offset: int, shape: tuple[int, ...], clip_bytes: int) -> None:
    """Rewrite ``path`` with only its first ``shape[0]`` clips (chunked copy, flat memory)."""
    compact = path.with_name(path.name + ".compact")
    new_offset = _npy_offset(compact, shape)
    chunk = max(1, (64 << 20) // clip_bytes) * clip_bytes
    remaining = shape[0] * clip_bytes
    with open(path, "rb") as src, open(compact, "r+b") as dst:
        src.seek(offset)
        dst.seek(new_offset)
        while remaining > 0:
            data = src.read(min(chunk, remaining))
            dst.write(data)
            remaining -= len(data)
    os.replace(compact, path)
