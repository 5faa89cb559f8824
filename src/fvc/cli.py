"""The ``fvc`` command: what runs outside Snakemake, with the same library functions as the rules.

``fvc train ...`` trains one fold (:func:`fvc.train.run_fold`, the train rule's function, same
artifacts), so the fault tests can SIGKILL, signal or memory-limit a real training process; the
exit status is 0 when the fold is done, :data:`fvc.train.EXIT_RESUMABLE` after a deliberate stop,
1 when ``model.weights`` cannot be used and 2 for a configuration error. Also
``python -m fvc.cli train ...``.

``fvc predict runs/<exp> a.mp4 ...`` scores a few files with the trained fold models
(:func:`fvc.predict.predict_main`, which parses its own arguments).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from fvc.log import setup_logging


def _train(a: argparse.Namespace) -> int:
    from fvc.train import FoldInputs, FoldOutputs, FoldTarget, run_fold

    setup_logging(a.log)
    with open(a.config) as fh:
        cfg = yaml.safe_load(fh) or {}
    return run_fold(
        FoldTarget(a.fold, FoldOutputs.in_dir(a.out_dir)),
        FoldInputs(a.clips, a.index, a.splits, a.aug_clips, a.aug_manifest),
        cfg.get("model"),
        cfg.get("train"),
        cfg.get("memory"),
        a.checkpoint_dir,
        runtime_min=a.runtime_min,
        threads=a.threads,
        micro_batch_size=a.micro_batch_size,
        device=a.device,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fvc", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one fold (same function and artifacts as the rule)")
    t.add_argument("--config", required=True, help="YAML/JSON with model/train/memory sections")
    t.add_argument("--fold", type=int, required=True)
    for name in ("clips", "index", "splits", "aug-clips", "aug-manifest"):
        t.add_argument(f"--{name}", required=True, help="input artifact (docs/artifacts.md)")
    t.add_argument("--out-dir", required=True, help="where metrics.json etc. are published")
    t.add_argument("--checkpoint-dir", required=True, help="resume state directory")
    t.add_argument("--runtime-min", type=float, help="time budget in minutes (resources.runtime)")
    t.add_argument("--threads", type=int, help="torch threads")
    t.add_argument("--micro-batch-size", type=int, help="starting micro-batch (default: batch)")
    t.add_argument("--device", help="overrides train.device: auto, cpu, cuda or cuda:N")
    t.add_argument("--log", help="log file (appended) besides stderr")
    t.set_defaults(func=_train)
    pr = sub.add_parser(
        "predict",
        help="P(fake) of a few videos with a run's fold models (fvc predict -h)",
        add_help=False,
    )
    pr.set_defaults(func=_predict)
    return p


def _predict(a: argparse.Namespace) -> int:
    from fvc.predict import predict_main

    return predict_main(a.args)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    a = parser().parse_args(args[:1] if args[:1] == ["predict"] else args)
    if a.command == "predict":  # predict_main parses (and documents) its own arguments
        a.args = args[1:]
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
