"""Memory hygiene: garbage-collection cadence, OOM detection, memory statistics and their log.

What to do after an OOM (retry, halve, skip) is one policy,
:func:`fvc.train.step.call_with_oom_recovery`.

Why a cadence at all: reference cycles (tracebacks, closures, autograd graphs held by exceptions)
can pin large tensors until a full collection runs. Why ``gc.freeze()``: with torch, torchvision,
pandas and sklearn imported a full ``gc.collect()`` scans millions of long-lived objects (~200 ms
measured here); freezing them after set-up leaves only new objects to scan, so the periodic
collection is nearly free while still freeing new cycles (see ``bench/gc_overhead.py``).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from fvc.config import MemoryConfig

if TYPE_CHECKING:
    import torch


def _torch() -> Any:
    """The torch module if this process already imported it, else None.

    CUDA can only be in use once torch is imported, and the light stages (split, aggregate,
    plots) call :func:`aggressive_gc` too: they must not pay ~5 s to import torch for it.
    """
    return sys.modules.get("torch")


log = logging.getLogger(__name__)

# Messages of real allocation failures (CPU allocator under RLIMIT_AS / cgroup limits, CUDA
# caching allocator, cuDNN/cuBLAS workspaces, MKL/oneDNN, errno 12). Whole words/phrases only:
# "room" or "zoom" must not look like "OOM".
_OOM_PATTERNS = re.compile(
    r"out of memory|can't allocate memory|cannot allocate memory|memory allocation failed"
    r"|allocation failed|failed to allocate|DefaultCPUAllocator|CUDNN_STATUS_ALLOC_FAILED"
    r"|CUBLAS_STATUS_ALLOC_FAILED|\bOOM\b|\[Errno 12\]|Error code 12\b"
    # oneDNN (CPU convolutions) reports a failed scratchpad/JIT allocation only this way; seen
    # here in backward() under RLIMIT_AS. A non-memory cause fails again at every micro-batch
    # and ends in the "batches skipped" error, which names the message.
    r"|could not create a primitive",
    re.IGNORECASE,
)


def is_oom_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or the exception it was raised from) is an out-of-memory failure.

    Recognises ``torch.OutOfMemoryError``, ``MemoryError`` (numpy's ``_ArrayMemoryError`` is a
    subclass) and allocation-failure messages in ``RuntimeError``/``OSError`` (torch's CPU
    allocator raises a plain ``RuntimeError``).
    """
    seen = 0
    while exc is not None and seen < 5:
        torch = _torch()
        oom_types = (MemoryError,) if torch is None else (torch.OutOfMemoryError, MemoryError)
        if isinstance(exc, oom_types):
            return True
        if isinstance(exc, RuntimeError | OSError) and _OOM_PATTERNS.search(str(exc)):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
        seen += 1
    return False


def error_line(exc: BaseException) -> str:
    """``Type: first line`` of an error, short enough for a log line or a JSON event."""
    lines = str(exc).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {lines[0][:200]}"


def aggressive_gc(empty_cache: bool = True) -> None:
    """Three full collections (finalizers can free more cycles) and, on CUDA, release cached blocks.

    The periodic in-loop call passes ``empty_cache=False``: returning blocks to the driver makes the
    next steps re-allocate them, so that has its own (sparser) cadence.
    """
    for _ in range(3):
        gc.collect()
    torch = _torch()
    if empty_cache and torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


class MemoryPolicy(MemoryConfig):
    """The ``memory:`` section (:class:`fvc.config.MemoryConfig`) with the hygiene it configures.

    ``empty_cache_every_n_batches`` is off by default: returning cached blocks makes the next
    steps cudaMalloc them again (a device sync each); ``bench/gpu_check.py`` measures what
    every 20 batches costs.
    """

    def setup_done(self) -> None:
        """Collect once, then (if configured) freeze every surviving object out of future scans."""
        gc.collect()
        if self.gc_freeze:
            gc.freeze()

    def after_batch(self, step: int) -> None:
        """Periodic hygiene after training batch number ``step`` (1-based, counted per run)."""
        if self.gc_every_n_batches and step % self.gc_every_n_batches == 0:
            aggressive_gc(empty_cache=False)
        torch = _torch()
        if (
            self.empty_cache_every_n_batches
            and step % self.empty_cache_every_n_batches == 0
            and torch is not None
            and torch.cuda.is_initialized()
        ):
            torch.cuda.empty_cache()

    @staticmethod
    def teardown() -> None:
        """End of a run: collect its garbage, then unfreeze.

        Unfreezing hands the objects frozen at set-up back to the automatic collector (frozen
        objects are never freed); collecting first keeps this as cheap as a periodic collection.
        """
        aggressive_gc()
        gc.unfreeze()


def memory_stats(device: torch.device | str | None = None) -> dict[str, float]:
    """Process RSS and peak RSS (MiB) and, on a CUDA device, allocated/reserved/peak (MiB)."""
    mib = 1024.0 * 1024.0
    stats = {
        "rss_mb": round(psutil.Process().memory_info().rss / mib, 1),
        # ru_maxrss is KiB on Linux
        "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }
    torch = _torch()
    if (
        device is not None
        and torch is not None
        and torch.device(device).type == "cuda"
        and torch.cuda.is_initialized()
    ):
        stats["cuda_allocated_mb"] = round(torch.cuda.memory_allocated(device) / mib, 1)
        stats["cuda_reserved_mb"] = round(torch.cuda.memory_reserved(device) / mib, 1)
        stats["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / mib, 1)
    return stats


class MemoryLog:
    """Append-only JSONL timeline: one object per event with memory statistics attached.

    Lines are appended and flushed one at a time (events are rare: stage/epoch ends, OOMs), so the
    timeline survives a SIGKILL and covers every attempt of a resumed fold. The declared
    ``memory.jsonl`` output is an atomic copy made at the end (:meth:`publish`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: torch.device | str | None = None,
        context: dict[str, Any] | None = None,
    ):
        self.path = Path(path)
        self.device = device
        self.context = dict(context or {})  # fields added to every event, e.g. the fold

    def event(self, event: str, **fields: Any) -> dict[str, Any]:
        rec = {"event": event, "time": round(time.time(), 3), **self.context, **fields}
        rec.update(memory_stats(self.device))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec, sort_keys=True, default=str) + "\n")
            fh.flush()
        return rec

    def read(self) -> list[dict[str, Any]]:
        """All events so far; a torn last line (process killed mid-write) is ignored."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def publish(self, dest: str | os.PathLike[str]) -> None:
        """Atomically write the (well-formed) timeline to the declared output ``dest``."""
        from fvc.io import write_text

        write_text(dest, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.read()))

    def summary(self) -> str:
        """One line for the rule log: peak RSS and the count of each notable event."""
        events = self.read()
        peak = max((e.get("rss_peak_mb", 0.0) for e in events), default=0.0)
        cuda = max((e.get("cuda_peak_mb", 0.0) for e in events), default=0.0)
        counts: dict[str, int] = {}
        for e in events:
            counts[e["event"]] = counts.get(e["event"], 0) + 1
        notable = {k: v for k, v in counts.items() if k in ("oom", "retry", "batch_size", "skip")}
        return (
            f"memory: peak RSS {peak:.0f} MiB"
            + (f", CUDA peak {cuda:.0f} MiB" if cuda else "")
            + (f", events {notable}" if notable else ", no OOM")
        )
