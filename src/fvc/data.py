"""Metadata loading, video probing and the decoded clip cache.

``load_metadata`` turns a user's metadata (a CSV/TSV/Parquet table, an FVC.csv, a ``path label``
list or one folder per class) into ``metadata.parquet`` (one row per usable video, integer labels,
probed stream facts) and ``excluded.tsv`` (every unusable row with a reason). ``build_clip_cache``
decodes each usable video once into one ``clips.npy`` so that later stages never touch video
files again. Both run the per-video work in ``workers`` processes and write nothing when they
fail. Metadata formats live in :mod:`fvc.formats`; docs/data.md describes them and every
exclusion reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd

from fvc.config import DataConfig, group_column
from fvc.formats import DataError, encode_labels, read_metadata_source
from fvc.io import atomic_path, write_parquet, write_tsv
from fvc.sweep import DECODE_KEYS
from fvc.video import VideoError, decode_windows, probe_video, window_settings

__all__ = [
    "EXCLUDED_COLUMNS",
    "METADATA_COLUMNS",
    "DataError",
    "build_clip_cache",
    "clip_shape",
    "decode_settings",
    "list_videos",
    "load_metadata",
    "probe_videos",
    "read_metadata_source",
]

log = logging.getLogger(__name__)

METADATA_COLUMNS = [
    "video_id", "path", "label", "label_name", "group",
    "frames", "fps", "width", "height", "codec", "duration",
]  # fmt: skip
EXCLUDED_COLUMNS = ["row", "path", "label", "reason"]
PROBE_KEYS = ["frames", "fps", "width", "height", "codec", "duration"]


# ----------------------------------------------------------------------------- parallel map

#: Seconds between two progress lines in the log.
PROGRESS_EVERY_S = 10.0
_BAR = 20


class Progress:
    """A progress bar for log files: one plain line every ``every_s`` seconds and at the end.

    ``decode: [#####...............] 250/1000 videos (25%), 41.7 videos/s, elapsed 0:00:06,
    ETA 0:00:18``. Lines (not a carriage-return bar) stay readable in a Snakemake log file
    and in SLURM's captured stderr.
    """

    def __init__(self, what: str, total: int, every_s: float | None = None) -> None:
        self.what, self.total = what, total
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.start = self.last = time.monotonic()

    def line(self, done: int, now: float | None = None) -> str:
        """The progress line for ``done`` of ``total`` items."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        frac = done / self.total if self.total else 1.0
        filled = round(frac * _BAR)
        eta = timedelta(seconds=round((self.total - done) / rate)) if rate > 0 else "?"
        return (
            f"{self.what}: [{'#' * filled}{'.' * (_BAR - filled)}] {done}/{self.total} videos "
            f"({100 * frac:.0f}%), {rate:.1f} videos/s, "
            f"elapsed {timedelta(seconds=round(elapsed))}, ETA {eta}"
        )

    def update(self, done: int) -> None:
        """Log a line if ``every_s`` passed since the last one, or when everything is done."""
        now = time.monotonic()
        if done >= self.total or now - self.last >= self.every_s:
            self.last = now
            log.info("%s", self.line(done, now))


def _ordered_map(
    fn: Callable[[Any], Any], items: list[Any], workers: int, what: str
) -> Iterator[Any]:
    """``map(fn, items)`` in order over ``workers`` forked processes, with bounded look-ahead.

    At most ``4 * workers`` results are pending, so memory stays flat however many items there
    are. Fork (not spawn) because rule scripts have no ``__main__`` guard. Progress (counts,
    rate, ETA) goes to the log every :data:`PROGRESS_EVERY_S` seconds.
    """
    progress = Progress(what, len(items))
    log.info("%s: %d videos on %d worker process(es)", what, len(items), workers)
    if workers <= 1 or len(items) <= 1:
        for done, item in enumerate(items, 1):
            yield fn(item)
            progress.update(done)
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
            progress.update(done)


def _unexpected(path: str, what: str, exc: Exception) -> DataError:
    """A one-line error naming the video for a failure that is not a known kind of broken file.

    Such an error stops the stage (it may be a bug or a resource problem, not the file): the
    video is neither excluded silently nor replaced.
    """
    msg = " ".join(str(exc).split()) or "no message"
    return DataError(f"{path}: unexpected {type(exc).__name__} while {what}: {msg}")


def _probe_one(path: str) -> dict[str, Any] | str:
    """Probe result dict, or the exclusion reason (worker function, must be picklable)."""
    try:
        return probe_video(path)
    except VideoError as exc:
        return exc.reason
    except Exception as exc:
        raise _unexpected(path, "probing", exc) from None


# ----------------------------------------------------------------------------- load_metadata


def _summary(reasons: Iterable[str]) -> str:
    """'missing file: 3, truncated: 1' (reason kinds without their details)."""
    kinds = Counter(r.split(":")[0] for r in reasons)
    return ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) or "none"


def list_videos(
    table: pd.DataFrame, data_cfg: dict[str, Any], source: str
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Add ``video_id``, integer ``label``, ``label_name`` and ``group`` to a read source.

    ``table`` is :func:`fvc.formats.read_metadata_source`'s result. Without a ``label`` column
    (an unlabelled predict set) every label is -1 and ``label_name`` is empty. Returns the
    table and the class display names ``{1: ..., 0: ...}``.
    """
    positive = DataConfig.of(data_cfg, extra=("group_column",)).positive_label
    rows = table["row"].tolist()
    width = max(5, len(str(max(rows)))) if rows else 5
    if "label" in table.columns:
        labels, class_names = encode_labels(
            table["label"].astype(str).tolist(), positive, source, rows
        )
        names = table["label"].astype(str).str.strip()
    else:
        labels, class_names = np.full(len(table), -1, dtype=np.int8), {1: positive, 0: ""}
        names = pd.Series([""] * len(table), index=table.index, dtype=object)
    table = table.assign(video_id=[f"v{r:0{width}d}" for r in rows], label_name=names, label=labels)
    # cv.group_column (passed here as group_column): the column whose value is the group;
    # `group` may be absent (each video is its own group), any other name must be a column.
    group_col = group_column(data_cfg)
    if group_col and group_col in table.columns:
        groups = table[group_col].astype("string").str.strip().fillna("")
        table["group"] = groups.where(groups != "", table["video_id"]).astype(str)
    elif group_col and group_col != "group":
        columns = [c for c in table.columns if c not in ("row", "video_id", "label_name")]
        raise DataError(
            f"{source}: cv.group_column={group_col!r} is not a column of the metadata "
            f"(columns: {', '.join(columns)}); name the column that groups clips, or null"
        )
    else:
        table["group"] = table["video_id"]
    return table, class_names


def probe_videos(
    table: pd.DataFrame, source: str, workers: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop duplicate rows, probe every video: (metadata of the usable ones, excluded rows).

    ``table`` comes from :func:`list_videos`. Rows that point at the same file twice are
    excluded as "duplicate of row N" (the same file with two labels is a :class:`DataError`);
    a video that fails to probe is excluded with its reason, never replaced. Probing runs in
    ``workers`` processes.
    """
    excluded: list[dict[str, Any]] = []
    first_row: dict[str, tuple[int, int, str, str]] = {}
    keep = []
    for i, (row, path, label, name) in enumerate(
        zip(table["row"], table["path"], table["label"], table["label_name"], strict=True)
    ):
        key = os.path.realpath(path)  # a symlink or ../ spelling is still the same video
        if key in first_row:
            frow, flabel, fname, fpath = first_row[key]
            if flabel != label:
                also = f" (as {fpath} and {path})" if fpath != path else ""
                raise DataError(
                    f"{source}: rows {frow} and {row} list the same video {key} with different "
                    f"labels ({fname!r} and {name!r}){also}; fix one of the two rows"
                )
            excluded.append(
                {"row": row, "path": path, "label": name, "reason": f"duplicate of row {frow}"}
            )
        else:
            first_row[key] = (row, int(label), name, path)
            keep.append(i)
    table = table.iloc[keep].reset_index(drop=True)

    probes = list(_ordered_map(_probe_one, table["path"].tolist(), workers, "probe"))
    usable = []
    for i, result in enumerate(probes):
        if isinstance(result, str):
            rec = table.iloc[i]
            excluded.append(
                {
                    "row": int(rec["row"]),
                    "path": rec["path"],
                    "label": rec["label_name"],
                    "reason": result,
                }
            )
        else:
            usable.append(i)
    meta = table.iloc[usable].reset_index(drop=True)
    for key in PROBE_KEYS:
        meta[key] = [probes[i][key] for i in usable]
    meta = meta.astype(
        {
            "label": "int8",
            "frames": "int64",
            "fps": "float64",
            "width": "int64",
            "height": "int64",
            "duration": "float64",
        }
    )[METADATA_COLUMNS]
    excl = pd.DataFrame(excluded, columns=EXCLUDED_COLUMNS).sort_values("row", kind="stable")
    return meta, excl


def load_metadata(
    data_cfg: dict[str, Any],
    metadata_path: str | os.PathLike[str],
    out_metadata: str | os.PathLike[str],
    out_excluded: str | os.PathLike[str],
    min_per_class: int,
    workers: int | None = None,
) -> pd.DataFrame:
    """Read the metadata, probe every video, write metadata.parquet and excluded.tsv.

    Probing runs in ``workers`` processes (default ``data.workers``).
    Rows that point at the same file twice are excluded as "duplicate of row N" (the same file
    with two labels is an error). Raises :class:`DataError` (and writes nothing) when a class
    has fewer than ``min_per_class`` usable videos (the caller passes cv.n_splits).
    """
    source = str(metadata_path)
    table = read_metadata_source(metadata_path, data_cfg)  # row, path (absolute), label, [group]
    if table.empty:
        raise DataError(f"{source}: no videos listed")
    table, class_names = list_videos(table, data_cfg, source)
    workers = max(1, int(workers or DataConfig.of(data_cfg, extra=("group_column",)).workers))
    meta, excl = probe_videos(table, source, workers)

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
    log.info(
        "metadata: %d usable videos (%s=%d, %s=%d), %d excluded (%s)",
        len(meta),
        class_names[1],
        counts[1],
        class_names[0],
        counts[0],
        len(excl),
        _summary(excl["reason"]),
    )
    return meta


# ----------------------------------------------------------------------------- clip cache


def _decode_one(
    task: tuple[str, int, int, int, str, str, int, int | None],
) -> tuple[np.ndarray | None, bool, str]:
    """(windows (C, T, S, S, 3), padded, '') or (None, False, reason) for one video (worker)."""
    path, frames, num_frames, size, short_videos, resize, clips, stride = task
    try:
        windows, padded = decode_windows(
            path, num_frames, size, frames, short_videos, resize, clips, stride
        )
        return windows, padded, ""
    except VideoError as exc:
        return None, False, exc.reason
    except Exception as exc:
        raise _unexpected(path, "decoding", exc) from None


def _npy_offset(path: Path, shape: tuple[int, ...]) -> int:
    """Create a uint8 .npy of ``shape`` (header + sparse data) and return the data offset."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset = int(mm.offset)
    del mm
    return offset


CACHE_INDEX = "index.parquet"
CACHE_COLUMNS = ["path", "size", "mtime_ns", "clip_row", "padded", "reason", "settings", "array"]

Identity = tuple[str, int, int]  # (path, size, mtime_ns)


def decode_settings(data_cfg: DataConfig | dict[str, Any]) -> str:
    """The decode settings a cached clip is valid for, as a canonical JSON string.

    The keys that decide a decoded clip (:data:`fvc.sweep.DECODE_KEYS`) with defaults filled
    in, plus the PyAV version (another FFmpeg may decode differently). ``clips_per_video`` and
    ``frame_stride`` are part of it only when they differ from their defaults (1, null; a
    stride of 0 is null): a cache built before they existed stays valid for the same clips.
    """
    view = DataConfig.of(data_cfg, extra=("group_column",))
    settings: dict[str, Any] = {k: getattr(view, k) for k in DECODE_KEYS}
    clips, stride = window_settings(view)
    if clips != 1:
        settings["clips_per_video"] = clips
    if stride is not None:
        settings["frame_stride"] = stride
    settings["decoder"] = f"av {av.__version__}"
    return json.dumps(settings, sort_keys=True, default=str)


def clip_shape(data_cfg: DataConfig | dict[str, Any]) -> tuple[int, ...]:
    """Shape of one video's entry in clips.npy: ``(T, S, S, 3)``, or ``(C, T, S, S, 3)`` when
    ``data.clips_per_video`` C > 1 (so clips.npy is ``(N, T, S, S, 3)`` or ``(N, C, T, S, S, 3)``).
    """
    view = DataConfig.of(data_cfg, extra=("group_column",))
    clips, _ = window_settings(view)
    window = (view.num_frames, view.size, view.size, 3)
    return window if clips == 1 else (clips, *window)


def _identity(path: str) -> Identity | None:
    """(path, size, mtime_ns) from one ``stat``, or None when the file cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, int(st.st_size), int(st.st_mtime_ns))


class _DecodeCache:
    """The previous run's clips, keyed by video identity, for one set of decode settings.

    ``cache_dir`` holds ``index.parquet`` (one row per video decoded last time: identity, its
    row in the array or -1 with the failure reason, the settings) and ``clips-<token>.npy``, a
    hard link to the last ``clips.npy`` (no second copy on disk; a copy where links fail).
    The index names its array, so an array written by a run that crashed before committing
    its index is never read with the wrong index.
    """

    def __init__(
        self, cache_dir: str | os.PathLike[str] | None, settings: str, clip_shape: tuple[int, ...]
    ) -> None:
        self.dir = Path(cache_dir) if cache_dir else None
        self.settings, self.clip_shape = settings, clip_shape
        self.rows: dict[Identity, tuple[int, bool, str]] = {}
        self.array: Path | None = None
        self.offset = 0
        if self.dir is not None:
            self._load()

    def _load(self) -> None:
        assert self.dir is not None
        index_path = self.dir / CACHE_INDEX
        if not index_path.exists():
            return
        try:
            df = pd.read_parquet(index_path)
            if df.empty:
                return
            if df["settings"].iloc[0] != self.settings:
                log.info("decode cache: decode settings changed, every video is decoded again")
                return
            array = self.dir / str(df["array"].iloc[0])
            mm = np.load(array, mmap_mode="r")
            shape, offset = mm.shape, int(mm.offset)
            del mm
        except Exception as exc:  # a damaged cache only costs decoding time
            log.warning("decode cache %s unusable (%s): decoding every video", self.dir, exc)
            return
        if tuple(shape[1:]) != self.clip_shape or int(df["clip_row"].max()) >= shape[0]:
            log.warning("decode cache %s does not match its array: decoding every video", self.dir)
            return
        self.array, self.offset = array, offset
        for rec in df.itertuples(index=False):
            ident = (str(rec.path), int(rec.size), int(rec.mtime_ns))
            self.rows[ident] = (int(rec.clip_row), bool(rec.padded), str(rec.reason))

    def get(self, ident: Identity | None) -> tuple[int, bool, str] | None:
        """(clip_row, padded, reason) of a video decoded last time with these settings."""
        return self.rows.get(ident) if ident is not None else None

    def save(self, clips: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
        """Make ``clips`` (just written) and ``records`` the cache; drop the previous array."""
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"clips-{uuid.uuid4().hex[:12]}.npy"
        try:
            os.link(clips, self.dir / name)
        except OSError:  # a file system without hard links: keep a copy
            with atomic_path(self.dir / name) as tmp:
                shutil.copyfile(clips, tmp)
        df = pd.DataFrame(records, columns=CACHE_COLUMNS[:-2]).assign(
            settings=self.settings, array=name
        )
        write_parquet(
            self.dir / CACHE_INDEX,
            df.astype({"size": "int64", "mtime_ns": "int64", "clip_row": "int64"}),
        )
        for old in self.dir.glob("clips-*.npy"):
            if old.name != name:
                old.unlink(missing_ok=True)


def build_clip_cache(
    metadata_path: str | os.PathLike[str],
    out_clips: str | os.PathLike[str],
    out_index: str | os.PathLike[str],
    out_excluded: str | os.PathLike[str],
    data_cfg: dict[str, Any],
    workers: int = 1,
    min_per_class: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Decode every video of metadata.parquet once into clips.npy + clips.parquet.

    clips.npy is ``(N, T, S, S, 3)``; with ``data.clips_per_video`` C > 1 it is
    ``(N, C, T, S, S, 3)``: the C temporal windows of each video (:func:`fvc.video.window_indices`,
    ``data.frame_stride``), decoded in one pass over the video. Row ``clip_row`` of
    clips.parquet is the video either way; the disk cost is N * C * T * S * S * 3 bytes.

    Clips are streamed to disk as they arrive (``os.pwrite`` into a file created by
    ``open_memmap``; writing through a memory map would count every written page in the RSS),
    so memory stays flat however large the dataset. Videos that fail to decode are listed in
    ``out_excluded`` and skipped, never replaced. Same input, same bytes. Raises
    :class:`DataError` (writing nothing) if a class is left with fewer than ``min_per_class``.

    With ``cache_dir``, a video whose identity (path, size, mtime_ns: one ``stat``) and decode
    settings (:func:`decode_settings`) equal those of the previous run is not decoded again:
    its clip (or its failure) is copied from the previous array, so adding one video to N
    decodes one. The result is byte-identical to a build from scratch. The returned index's
    ``attrs`` hold ``decoded`` and ``reused`` counts (also logged).
    """
    try:
        view = DataConfig.of(data_cfg, extra=("group_column",))
        clips_per_video, frame_stride = window_settings(view)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    meta = pd.read_parquet(metadata_path)
    num_frames, size = view.num_frames, view.size
    short_videos, resize = view.short_videos, view.resize
    workers = max(1, int(workers))
    entry_shape = clip_shape(view)  # one video: (T, S, S, 3) or (C, T, S, S, 3)
    clip_bytes = int(np.prod(entry_shape))
    tasks = [
        (p, int(f), num_frames, size, short_videos, resize, clips_per_video, frame_stride)
        for p, f in zip(meta["path"], meta["frames"], strict=True)
    ]
    cache = _DecodeCache(cache_dir, decode_settings(view), entry_shape)
    identities = [_identity(str(p)) for p in meta["path"]]
    hits = [cache.get(ident) for ident in identities]
    misses = [task for task, hit in zip(tasks, hits, strict=True) if hit is None]

    ok_rows: list[int] = []
    padded_flags: list[bool] = []
    excluded: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(out_clips))
        offset = _npy_offset(tmp, (len(meta), *entry_shape))
        fh = stack.enter_context(open(tmp, "r+b"))
        src = stack.enter_context(open(cache.array, "rb")) if cache.array else None
        results = _ordered_map(_decode_one, misses, workers, "decode")
        for i, hit in enumerate(hits):
            if hit is None:
                clip, padded, reason = next(results)
                data = b"" if clip is None else np.ascontiguousarray(clip, np.uint8).tobytes()
            else:
                clip_row, padded, reason = hit
                data = b""
                if clip_row >= 0:
                    assert src is not None
                    data = os.pread(src.fileno(), clip_bytes, cache.offset + clip_row * clip_bytes)
                    if len(data) != clip_bytes:
                        raise DataError(f"{cache.array}: decode cache array is cut short")
            if identities[i] is not None:
                path, vsize, mtime_ns = identities[i]
                records.append(
                    {
                        "path": path,
                        "size": vsize,
                        "mtime_ns": mtime_ns,
                        "clip_row": len(ok_rows) if data else -1,
                        "padded": bool(padded),
                        "reason": reason,
                    }
                )
            if not data:
                rec = meta.iloc[i]
                excluded.append(
                    {
                        "row": int(str(rec["video_id"])[1:]),
                        "path": rec["path"],
                        "label": rec["label_name"],
                        "reason": reason,
                    }
                )
                continue
            os.pwrite(fh.fileno(), data, offset + len(ok_rows) * clip_bytes)
            ok_rows.append(i)
            padded_flags.append(bool(padded))
        for _ in results:  # resume the map once more: its last progress line, pool shutdown
            raise AssertionError("more decode results than videos to decode")
        labels = meta["label"].to_numpy()[ok_rows] if ok_rows else np.array([], dtype=np.int8)
        counts = {c: int((labels == c).sum()) for c in (1, 0)}
        if min(counts.values()) < min_per_class:
            raise DataError(
                f"{metadata_path}: after decoding, a class has fewer than min_per_class="
                f"{min_per_class} clips (positive={counts[1]}, negative={counts[0]}); "
                f"{len(excluded)} failed to decode ({_summary(e['reason'] for e in excluded)})"
            )
        fh.close()
        if len(ok_rows) < len(meta):
            _shrink_npy(tmp, offset, (len(ok_rows), *entry_shape), clip_bytes)
    index = meta.iloc[ok_rows].reset_index(drop=True)
    index["clip_row"] = np.arange(len(ok_rows), dtype=np.int64)
    index["padded"] = np.array(padded_flags, dtype=bool)
    write_tsv(out_excluded, pd.DataFrame(excluded, columns=EXCLUDED_COLUMNS))
    # the settings travel with the clips: `fvc predict` decodes new files exactly like these
    recorded = index.copy(deep=False)
    recorded.attrs = {"decode_settings": decode_settings(view)}
    write_parquet(out_index, recorded)
    cache.save(out_clips, records)
    n_reused = len(meta) - len(misses)
    log.info(
        "clip cache: %d clips %s (%d padded), %d failed to decode (%s)",
        len(index),
        entry_shape,
        int(index["padded"].sum()),
        len(excluded),
        _summary(e["reason"] for e in excluded),
    )
    log.info(
        "decoded %d video(s), reused %d unchanged from the previous run%s",
        len(misses),
        n_reused,
        "" if cache_dir else " (no cache)",
    )
    index.attrs.update(decoded=len(misses), reused=n_reused)
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
