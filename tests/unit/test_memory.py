"""Memory hygiene: OOM detection on real messages, GC cadence, recovery policy, timeline."""

from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pytest
import torch

from fvc.memory import MemoryLog, MemoryPolicy, aggressive_gc, is_oom_error, memory_stats
from fvc.train.step import call_with_oom_recovery


@pytest.fixture(autouse=True)
def frozen_heap():
    """Freeze the heap as training does, so each collection here costs ms instead of ~0.5 s."""
    gc.freeze()
    yield
    gc.unfreeze()


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # the real exception object, as raised
        return exc
    raise AssertionError("no exception")


def _chained() -> None:
    try:
        raise MemoryError
    except MemoryError as exc:
        raise RuntimeError("DataLoader worker (pid 123) failed") from exc


OOM = [
    # raised for real on this machine
    _raised(lambda: torch.empty(1 << 50, dtype=torch.uint8)),  # DefaultCPUAllocator
    _raised(lambda: np.empty(1 << 50, dtype=np.uint8)),  # numpy _ArrayMemoryError
    _raised(_chained),
    MemoryError(),
    # messages seen in the wild (CUDA caching allocator, cuDNN/cuBLAS, oneDNN, errno 12)
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.78 GiB)"),
    RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 822083584 bytes. Error code 12 (Cannot allocate memory)"
    ),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("HIP out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("memory allocation failed"),
    RuntimeError("std::bad_alloc: allocation failed"),
    RuntimeError("could not create a primitive"),
    OSError(12, "Cannot allocate memory"),
    RuntimeError("worker killed by the OOM killer"),
]
NOT_OOM = [
    RuntimeError("room temperature sensor offline"),
    RuntimeError("zoom factor must be positive"),
    RuntimeError("bloom filter saturated"),
    RuntimeError("Expected all tensors to be on the same device, but found cuda:0 and cpu"),
    RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x64 and 32x2)"),
    ValueError("invalid zoom"),
    KeyError("boom"),
    FileNotFoundError(2, "No such file or directory", "zoom_room.mp4"),
    _raised(lambda: torch.zeros(2, 3) @ torch.zeros(2, 3)),
]


@pytest.mark.parametrize("exc", OOM, ids=lambda e: f"{type(e).__name__}:{str(e)[:40]}")
def test_is_oom_error_recognises_allocation_failures(exc: BaseException) -> None:
    assert is_oom_error(exc)


@pytest.mark.parametrize("exc", NOT_OOM, ids=lambda e: f"{type(e).__name__}:{str(e)[:40]}")
def test_is_oom_error_ignores_other_errors(exc: BaseException) -> None:
    assert not is_oom_error(exc)


class _Node:
    def __init__(self) -> None:
        self.payload = torch.zeros(1 << 20)  # 4 MiB pinned by the cycle below
        self.me = self


def test_periodic_collection_frees_new_cycles_even_after_freeze() -> None:
    policy = MemoryPolicy(gc_every_n_batches=2)
    policy.setup_done()  # gc.freeze(): existing objects leave the scanned generations
    try:
        gc.disable()  # only the policy's collections may free the cycle
        node = _Node()
        ref = weakref.ref(node)
        del node
        policy.after_batch(1)
        assert ref() is not None  # not a cadence step
        policy.after_batch(2)
        assert ref() is None
    finally:
        gc.enable()
        policy.teardown()
    assert gc.get_freeze_count() == 0


def test_gc_cadence_counts_full_collections() -> None:
    starts: list[int] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            starts.append(1)

    gc.callbacks.append(callback)
    gc.disable()
    try:
        for step in range(1, 21):
            MemoryPolicy(gc_every_n_batches=5).after_batch(step)
        five = len(starts)
        starts.clear()
        for step in range(1, 21):
            MemoryPolicy(gc_every_n_batches=0).after_batch(step)
        assert (five, len(starts)) == (4 * 3, 0)  # aggressive_gc = three passes
    finally:
        gc.enable()
        gc.callbacks.remove(callback)


def test_policy_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"memory: unknown key.*gc_evry"):
        MemoryPolicy.of({"gc_evry": 3})
    assert MemoryPolicy.of({"min_batch_size": 2}).min_batch_size == 2


def test_memory_stats_and_timeline(tmp_path) -> None:
    before = memory_stats("cpu")
    big = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
    during = memory_stats("cpu")
    del big
    after = memory_stats("cpu")
    assert set(before) == {"rss_mb", "rss_peak_mb"}  # no CUDA fields for the CPU
    assert during["rss_mb"] - before["rss_mb"] >= 60  # RSS sees the allocation...
    assert during["rss_peak_mb"] >= during["rss_mb"] - 1  # ...the peak includes it...
    assert after["rss_mb"] <= during["rss_mb"] - 60  # ...and the release (large = mmap)
    assert after["rss_peak_mb"] >= during["rss_mb"] - 1  # while the peak stays
    mlog = MemoryLog(tmp_path / "m.jsonl", context={"fold": 3})
    mlog.event("stage_start", micro_batch_size=8)
    mlog.event("oom", error="x", micro_batch_size=8)
    mlog.event("batch_size", old=8, micro_batch_size=4)
    with open(mlog.path, "a") as fh:
        fh.write('{"event": "torn')  # a kill in the middle of a line
    events = mlog.read()
    assert [e["event"] for e in events] == ["stage_start", "oom", "batch_size"]
    assert all(e["fold"] == 3 and "rss_mb" in e and "time" in e for e in events)
    mlog.publish(tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(x)["event"] for x in lines] == ["stage_start", "oom", "batch_size"]
    assert "'oom': 1" in mlog.summary() and "peak RSS" in mlog.summary()


def test_oom_recovery_retries_then_halves_then_skips(tmp_path) -> None:
    tried: list[int] = []
    rollbacks: list[int] = []

    def attempt(micro: int) -> str:
        tried.append(micro)
        if micro > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return f"ok@{micro}"

    mlog = MemoryLog(tmp_path / "m.jsonl")
    policy = MemoryPolicy(max_oom_retries=1, min_batch_size=1)
    result = call_with_oom_recovery(attempt, 16, policy, lambda: rollbacks.append(1), mlog)
    assert result == ("ok@2", 2)
    assert tried == [16, 16, 8, 8, 4, 4, 2] and len(rollbacks) == 6
    events = [e["event"] for e in mlog.read()]
    assert events.count("oom") == 6 and events.count("retry") == 3
    assert events.count("batch_size") == 3

    tried.clear()
    skipped = call_with_oom_recovery(attempt, 16, MemoryPolicy(max_oom_retries=0, min_batch_size=8))
    assert skipped == (None, 8) and tried == [16, 8]


@pytest.mark.parametrize("empty_cache", [True, False])
def test_aggressive_gc_frees_cycles_without_cuda(empty_cache: bool) -> None:
    """What the periodic and end-of-epoch calls are for: a cycle pinning a tensor is freed
    (with automatic collection off), and no CUDA call is made where CUDA is not initialised."""
    import torch

    cuda_before = torch.cuda.is_initialized()
    gc.disable()
    try:
        node = _Node()
        ref = weakref.ref(node)
        del node
        assert ref() is not None  # only a collection can free a cycle
        aggressive_gc(empty_cache=empty_cache)
        assert ref() is None
    finally:
        gc.enable()
    assert torch.cuda.is_initialized() == cuda_before
