"""GPU check: the training loop on a real device, five figures, synthetic clips, one run.

Anyone with a GPU can run it from a checkout: it needs only what a stock PyTorch image has
(torch >= 2.11, torchvision, numpy, pandas, pyarrow, psutil, pyyaml, scikit-learn for the
validation metrics; no PyAV, no Snakemake)::

    python bench/gpu_check.py                  # auto: CUDA if visible (<= 8 min on one GPU)
    python bench/gpu_check.py --device cpu --quick   # the same steps on the CPU in < 1 min

It prints:

(a) throughput of the project's loop (``fvc.train.train_one_epoch`` with the default memory
    policy) / a bare PyTorch loop on the same device, model, data and precision (goal >= 0.97;
    on CUDA r3d_18, 16x112x112, batch 32, bf16); on CUDA also the cost of
    ``memory.empty_cache_every_n_batches: 20``;
(b) a real out-of-memory error (CUDA: ``torch.cuda.set_per_process_memory_fraction`` below what
    the configured batch needs; CPU: an injected one): the fold finishes with a smaller
    micro-batch and the same effective batch;
(c) SIGKILL of a training process mid-epoch, then a rerun: it resumes at the exact batch;
(d) the share of training time that checkpoints cost (background writes, measured at a dense
    cadence and scaled to the default ``train.checkpoint_every_s``);
(e) peak device memory (CUDA) or peak RSS (CPU) of the loop.

Ratios come from runs interleaved in this process (fastest of several), never from fixed
timings. Run by the test suite as ``--device cpu --quick`` so it cannot rot.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # this checkout's fvc, installed or not
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from synthetic import write_synthetic_inputs  # noqa: E402

import fvc.train  # noqa: E402
from fvc.datasets import collate_batch, input_norm, load_fold  # noqa: E402
from fvc.devices import pick_device  # noqa: E402
from fvc.memory import MemoryPolicy, aggressive_gc  # noqa: E402
from fvc.models import build_model  # noqa: E402
from fvc.train import FoldInputs, FoldOutputs, FoldTarget  # noqa: E402
from fvc.train import resume as ckpt  # noqa: E402
from fvc.train.precision import AUTOCAST_DTYPES  # noqa: E402
from fvc.train.state import Run, make_checkpoint, new_run  # noqa: E402
from fvc.train.stop import StopControl  # noqa: E402

DEFAULT_CHECKPOINT_EVERY_S = 600.0  # config/config.yaml's train.checkpoint_every_s

PRESETS = {  # model, frames, size, batch, precision, timed steps per block, blocks
    "cuda": dict(model="r3d_18", frames=16, size=112, batch=32, precision="auto", steps=24, reps=3),
    "cpu": dict(model="small3d", frames=8, size=64, batch=16, precision="off", steps=8, reps=3),
    "quick": dict(model="small3d", frames=4, size=16, batch=8, precision="off", steps=12, reps=2),
}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_mib(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Bench:
    def __init__(self, args: argparse.Namespace, dev: torch.device, tmp: Path) -> None:
        self.a, self.dev, self.tmp = args, dev, tmp
        self.cfg = {"name": args.model, "dropout": 0.2}
        n = 4 * args.batch  # fold 0 trains on n/2 clips + n/2 augmented copies: 2 blocks/epoch
        self.paths = write_synthetic_inputs(
            tmp / "in", n_videos=n, frames=args.frames, size=args.size, seed=0
        )
        self.inputs = FoldInputs(
            self.paths["clips"], self.paths["index"], self.paths["splits"], **self.paths["folds"][0]
        )
        self.data = load_fold(self.inputs, fold=0)
        self.tc = {
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "scheduler": "none",
            "precision": args.precision,
            "batch_size": args.batch,
            "class_weights": "none",
            "epochs": 1,
        }
        nt = len(self.data.train)
        self.batches = [
            np.arange(i, i + args.batch) % nt for i in range(0, args.steps * args.batch, args.batch)
        ]

    def fresh_run(self, policy: MemoryPolicy) -> Run:
        torch.manual_seed(0)
        model = build_model(self.cfg).to(self.dev)
        return new_run(
            model, self.tc, self.dev, self.data.train.labels, policy, None, input_norm(self.dev)
        )

    def loop(self, policy: MemoryPolicy, every_n: int = 0) -> tuple[float, object]:
        """Seconds for the timed batches through the project's loop (after a 3-batch warm-up)."""
        run = self.fresh_run(policy)
        cp = None
        if every_n:
            cp = ckpt.Checkpointer(
                self.tmp / "ck", lambda c: make_checkpoint(run, "bench", c), every_n_batches=every_n
            )
        stop = StopControl()
        fvc.train.train_one_epoch(
            run, self.data.train, self.batches[:3], stop, None, self.a.workers
        )
        run.pos.batch_in_epoch = 0
        sync(self.dev)
        t0 = time.perf_counter()
        if cp is not None:
            cp.last = time.monotonic()
        fvc.train.train_one_epoch(run, self.data.train, self.batches, stop, cp, self.a.workers)
        sync(self.dev)
        elapsed = time.perf_counter() - t0
        if cp is not None:
            cp.wait()
        return elapsed, (run, cp)

    def bare(self) -> float:
        """Seconds for the same batches through a plain PyTorch loop."""
        torch.manual_seed(0)
        dev, run0 = self.dev, self.fresh_run(MemoryPolicy())
        model, opt, scaler, precision = run0.model, run0.optimizer, run0.scaler, run0.precision
        model.train()
        mean, std = run0.norm.mean, run0.norm.std
        dtype = AUTOCAST_DTYPES.get(precision, torch.float32)

        def epoch(batches: list) -> None:
            loader = torch.utils.data.DataLoader(
                self.data.train,
                batch_sampler=[b.tolist() for b in batches],
                num_workers=self.a.workers,
                collate_fn=collate_batch,
                pin_memory=dev.type == "cuda",
            )
            for x, y in loader:
                x = x.to(dev, non_blocking=True).permute(0, 4, 1, 2, 3).contiguous()
                x = x.float().div_(255.0).sub_(mean).div_(std)
                y = y.to(dev, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=dtype, enabled=precision != "off"):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()

        epoch(self.batches[:3])
        sync(dev)
        t0 = time.perf_counter()
        epoch(self.batches)
        sync(dev)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ (a), (d), (e)
    def throughput_and_checkpoints(self) -> None:
        a, dev = self.a, self.dev
        clips = a.steps * a.batch
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        precision = self.fresh_run(MemoryPolicy()).precision
        loops, bares, empties, ckpts, cps = [], [], [], [], []
        every_n = max(1, a.steps // 4)  # a dense cadence for (d): about four writes per loop
        for rep in range(a.reps):
            if rep % 2:  # alternate the order: neither variant always runs first
                loops.append(self.loop(MemoryPolicy())[0])
                bares.append(self.bare())
            else:
                bares.append(self.bare())
                loops.append(self.loop(MemoryPolicy())[0])
            if dev.type == "cuda":
                empties.append(self.loop(MemoryPolicy(empty_cache_every_n_batches=20))[0])
            t, (_, cp) = self.loop(MemoryPolicy(), every_n=every_n)
            ckpts.append(t)
            cps.append(cp)
        peak = peak_mib(dev)
        loop, bare = min(loops), min(bares)
        print(
            f"(a) loop/bare throughput: {bare / loop:.3f} (loop {clips / loop:.1f} clips/s, bare "
            f"{clips / bare:.1f} clips/s; {a.model} {a.frames}x{a.size}x{a.size}, batch {a.batch}, "
            f"precision {precision}, {dev}; goal >= 0.97)"
        )
        if empties:
            print(
                f"    memory.empty_cache_every_n_batches 20 / default 0: time ratio "
                f"{min(empties) / loop:.3f}"
            )
        writes = sum(cp.background_writes for cp in cps)
        blocked = sum(cp.blocking_s for cp in cps) / max(writes, 1)
        fastest = min(range(len(ckpts)), key=ckpts.__getitem__)
        ratio = ckpts[fastest] / loop
        # one write every `dense` s cost (ratio - 1) of the loop; at the default cadence a write
        # comes DEFAULT / dense times less often
        dense = ckpts[fastest] / max(cps[fastest].background_writes, 1)
        share = max(ratio - 1.0, 0.0) * dense / DEFAULT_CHECKPOINT_EVERY_S
        run, _ = self.loop(MemoryPolicy())[1]
        t0 = time.perf_counter()
        ckpt.save_checkpoint(self.tmp / "sync.pt", make_checkpoint(run, "bench"))
        sync_s = time.perf_counter() - t0
        size = (self.tmp / "sync.pt").stat().st_size / 2**20
        print(
            f"(d) checkpoint overhead: {100 * share:.3f}% of training time at train."
            f"checkpoint_every_s {DEFAULT_CHECKPOINT_EVERY_S:.0f} (measured: a background write "
            f"every {dense:.2f} s -> loop time ratio {ratio:.3f}, {writes} writes, training thread "
            f"blocked {1000 * blocked:.1f} ms per write; a synchronous write of the "
            f"{size:.0f} MiB checkpoint takes {sync_s:.2f} s)"
        )
        what = "peak CUDA memory allocated" if dev.type == "cuda" else "peak RSS"
        print(f"(e) {what}: {peak:.0f} MiB ({a.model}, batch {a.batch})")
        self.peak = peak

    # ------------------------------------------------------------------ (b)
    def oom(self) -> None:
        a, dev = self.a, self.dev
        root = self.tmp / "oom"
        train = {**self.tc, "epochs": 1, "checkpoint_every_s": 0, "device": str(dev)}
        gc.collect()
        cap = None
        if dev.type == "cuda":
            aggressive_gc()
            run = self.fresh_run(MemoryPolicy())  # base: weights, and optimizer state after a step
            fvc.train.train_one_epoch(run, self.data.train, self.batches[:1], StopControl())
            run.optimizer.zero_grad(set_to_none=True)
            sync(dev)
            base = torch.cuda.memory_allocated(dev) / 2**20
            del run
            aggressive_gc()
            cap = base + 0.6 * (self.peak - base)
            total = torch.cuda.get_device_properties(dev).total_memory / 2**20
            torch.cuda.set_per_process_memory_fraction(cap / total, dev)
            how = f"real CUDA OOM: capped at {cap:.0f} of {total:.0f} MiB, peak {self.peak:.0f}"
            build = build_model
        else:
            limit = a.batch // 2

            def build(cfg: dict) -> torch.nn.Module:
                model = build_model(cfg)

                def hook(module: torch.nn.Module, args: tuple) -> None:
                    if module.training and args[0].shape[0] > limit:
                        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

                model.register_forward_pre_hook(hook)
                return model

            how = f"injected OOM above {limit} clips"
        original = fvc.train.loop.build_model
        fvc.train.loop.build_model = build
        try:
            fvc.train.fit_fold(
                FoldTarget(0, FoldOutputs.in_dir(root / "out")),
                self.inputs,
                self.cfg,
                train,
                {},
                root / "ck",
            )
        finally:
            fvc.train.loop.build_model = original
            if cap is not None:
                torch.cuda.set_per_process_memory_fraction(1.0, dev)
        events = [json.loads(x) for x in (root / "out/memory.jsonl").read_text().splitlines()]
        ooms = sum(e["event"] == "oom" for e in events)
        changes = [(e["old"], e["micro_batch_size"]) for e in events if e["event"] == "batch_size"]
        done = (root / "out/metrics.json").exists()
        micro = changes[-1][1] if changes else a.batch
        print(
            f"(b) OOM ({how}): {ooms} OOM error(s), micro-batch {a.batch} -> {micro}, effective "
            f"batch {train['batch_size']} (gradient accumulation), fold "
            f"{'finished' if done else 'NOT finished'}"
        )

    # ------------------------------------------------------------------ (c)
    def kill_resume(self) -> None:
        a, dev = self.a, self.dev
        root = self.tmp / "kill"
        root.mkdir()
        nb = 12
        batch = max(2, a.batch // 4)
        paths = write_synthetic_inputs(
            root / "in", n_videos=nb * batch, frames=a.frames, size=a.size, aug_copies=1, seed=2
        )
        cfg = {
            "model": self.cfg,
            "train": {
                "epochs": 2,
                "batch_size": batch,
                "checkpoint_every_n_batches": 2,
                "checkpoint_every_s": 0,
                "precision": a.precision,
                "scheduler": "none",
            },
        }
        (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        fi = paths["folds"][0]
        cmd = [
            sys.executable,
            "-m",
            "fvc.cli",
            "train",
            "--config",
            str(root / "cfg.yaml"),
            "--fold",
            "0",
            "--clips",
            paths["clips"],
            "--index",
            paths["index"],
            "--splits",
            paths["splits"],
            "--aug-clips",
            fi["aug_clips"],
            "--aug-manifest",
            fi["aug_manifest"],
            "--out-dir",
            str(root / "out"),
            "--checkpoint-dir",
            str(root / "ck"),
            "--device",
            str(dev),
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
        latest = root / "ck" / ckpt.LATEST
        proc = subprocess.Popen(
            [*cmd, "--log", str(root / "log1.txt")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None:
                try:
                    s = ckpt.load_checkpoint(latest) if latest.exists() else None
                except ckpt.CheckpointError:
                    s = None
                if s is not None and s["batch_in_epoch"] >= 2:
                    break
                time.sleep(0.003)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        state = ckpt.load_checkpoint(latest)
        at = (state["epoch"] + 1, state["batch_in_epoch"])
        done = subprocess.run(
            [*cmd, "--log", str(root / "log2.txt")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        log2 = (root / "log2.txt").read_text()
        want = f"resuming from latest_checkpoint.pt (epoch {at[0]} batch {at[1]})"
        if at[1] == 0:
            want = f"resuming from latest_checkpoint.pt (end of epoch {at[0] - 1})"
        exact = want in log2 and done.returncode == 0
        verdict = "resumed at the exact batch" if exact else "FAILED"
        print(
            f"(c) SIGKILL (exit {proc.returncode}) with the checkpoint at epoch {at[0]} batch "
            f"{at[1]} of {nb}, rerun on {dev}: {verdict}"
            f", fold finished (exit {done.returncode})"
            + ("" if exact else f"\n{done.stderr[-2000:]}")
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU: < 1 min)")
    for name, typ in (
        ("model", str),
        ("frames", int),
        ("size", int),
        ("batch", int),
        ("precision", str),
        ("steps", int),
        ("reps", int),
    ):
        p.add_argument(f"--{name}", type=typ, help="override the preset")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers")
    args = p.parse_args()
    dev = pick_device(args.device)
    preset = PRESETS["quick" if args.quick else dev.type]
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.workers is None:
        args.workers = 4 if dev.type == "cuda" else 0
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("fvc").setLevel(logging.ERROR)  # the figures only
    gc.collect()
    gc.freeze()  # as fit_fold does after set-up: periodic collections scan only new objects
    t0 = time.time()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    preset_name = "quick" if args.quick else dev.type
    print(f"gpu_check on {dev} ({name}), torch {torch.__version__}, preset {preset_name}")
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(args, dev, Path(tmp))
        b.throughput_and_checkpoints()
        b.oom()
        b.kill_resume()
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
