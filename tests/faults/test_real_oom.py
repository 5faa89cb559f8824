"""A real CPU out-of-memory: the training process runs under RLIMIT_AS and must adapt.

The limit is the process's address space after its imports plus a budget (the CUDA build of
torch maps ~3.4 GiB at import, and pyarrow's pool reserves ~1 GiB on the first parquet read,
so an absolute limit would fail before training; AdamW imports ``torch._dynamo`` when it is
first used, so that is imported before the baseline is measured too). glibc's mmap threshold
is fixed so freed tensors go back to the OS and the address space tracks live memory, not heap
fragmentation.
Measured for clips of 8x96x96 (small3d, threads 1): a training step at micro-batch 16 needs
~300 MiB over the baseline, 8 ~150 MiB, 4 ~75 MiB, and the baseline grows by ~15-30 MiB after
the first evaluation; budgets of 120-140 MiB ended at micro-batch 4 in every trial.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from faultkit import MODEL, Trainer

from bench.synthetic import fit_synthetic, write_synthetic_inputs
from fvc.train import resume as ckpt

pytestmark = pytest.mark.faults

BUDGET_MB = 130
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "2"}
LIMITED = f"""
import resource, sys
import pandas as pd
import fvc.cli, fvc.train
import torch._dynamo  # torch's optimizers import it on first use: load it inside the baseline
pd.read_parquet(sys.argv[sys.argv.index("--splits") + 1])  # reserve pyarrow's pool first
vm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmSize"))
limit = (vm << 10) + ({BUDGET_MB} << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.exit(fvc.cli.main(["train", *sys.argv[1:]]))
"""
TRAIN = {"epochs": 2, "batch_size": 16, "checkpoint_every_n_batches": 0, "seed": 4}


def test_real_cpu_oom_shrinks_micro_batch_and_matches_a_reduced_start(tmp_path) -> None:
    inputs = write_synthetic_inputs(tmp_path / "in", n_videos=48, frames=8, size=96, aug_copies=0)
    t = Trainer(inputs, tmp_path / "oom", TRAIN)
    done = t.start(prefix=["-c", LIMITED], env=MALLOC)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err

    events = [json.loads(x) for x in (tmp_path / "oom/out/memory.jsonl").read_text().splitlines()]
    ooms = [e for e in events if e["event"] == "oom"]
    changes = [e for e in events if e["event"] == "batch_size"]
    assert ooms and any(s in ooms[0]["error"] for s in ("can't allocate", "primitive"))
    assert changes and changes[0]["old"] == 16
    micro = changes[-1]["micro_batch_size"]
    assert {(e["epoch"], e["batch"]) for e in changes} == {(1, 1)}  # adapted once, then kept
    assert 1 <= micro < 16
    hist = pd.read_csv(tmp_path / "oom/out/history.csv")
    assert hist["micro_batch_size"].tolist() == [micro, micro]
    assert ckpt.load_checkpoint(t.ck / ckpt.LATEST)["micro_batch_size"] == micro

    # the same training started at the reduced size: identical maths, identical weights
    ref = tmp_path / "ref"
    fit_synthetic(
        inputs,
        ref,
        MODEL,
        TRAIN,
        micro_batch_size=micro,
        device="cpu",
    )
    a = ckpt.load_checkpoint(t.ck / ckpt.LATEST)["model_state"]
    b = ckpt.load_checkpoint(ref / "ck" / ckpt.LATEST)["model_state"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
