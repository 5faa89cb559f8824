"""``python -m fvc.train``: train one fold outside Snakemake.

The same function (:func:`fvc.train.run_fold`) and artifacts as the train rule, so the fault
tests can SIGKILL, signal or memory-limit a real training process; the exit status is 0 when
the fold is done and :data:`fvc.train.EXIT_RESUMABLE` after a deliberate stop.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from fvc.fold_state import FoldInputs, FoldOutputs
from fvc.log import setup_logging
from fvc.train import run_fold


def main(argv: list[str] | None = None) -> int:
    """Train one fold outside Snakemake: same function and artifacts as the train rule."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["predict"]:  # `fvc predict runs/<exp> a.mp4 ...` (fvc.predict.predict_main)
        from fvc.predict import predict_main

        return predict_main(args[1:])
    p = argparse.ArgumentParser(prog="python -m fvc.train", description=main.__doc__)
    p.add_argument("--config", required=True, help="YAML/JSON with model/train/memory sections")
    p.add_argument("--fold", type=int, required=True)
    for name in ("clips", "index", "splits", "aug-clips", "aug-manifest"):
        p.add_argument(f"--{name}", required=True, help="input artifact (docs/artifacts.md)")
    p.add_argument("--out-dir", required=True, help="where metrics.json etc. are published")
    p.add_argument("--checkpoint-dir", required=True, help="resume state directory")
    p.add_argument("--runtime-min", type=float, help="time budget in minutes (resources.runtime)")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--micro-batch-size", type=int, help="starting micro-batch (default: batch)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--log", help="log file (appended) besides stderr")
    a = p.parse_args(argv)
    setup_logging(a.log)
    with open(a.config) as fh:
        cfg = yaml.safe_load(fh) or {}
    return run_fold(
        FoldInputs(a.clips, a.index, a.splits, a.aug_clips, a.aug_manifest),
        FoldOutputs.in_dir(a.out_dir),
        a.fold,
        cfg.get("model"),
        cfg.get("train"),
        cfg.get("memory"),
        a.checkpoint_dir,
        runtime_min=a.runtime_min,
        threads=a.threads,
        micro_batch_size=a.micro_batch_size,
        device=a.device,
    )


if __name__ == "__main__":
    sys.exit(main())
