"""Start-up cost of a job: what a fresh interpreter pays to import what a rule script imports.

Run: ``.venv/bin/python bench/job_startup.py [--reps 5]``.
Every Snakemake job (and every SLURM job) is a new Python process, so its imports are paid once
per fold, per stage, per retry. The baseline is ``import torch`` alone (no job can do without
it); each row is a rule's import set in a fresh interpreter, best of ``--reps`` (interleaved,
so a busy machine slows all rows alike), and its ratio to the baseline. ``torchvision`` and
``sklearn`` say whether the job imported them: a small3d job needs neither (scikit-learn, ~0.8 s
with SciPy, only assigns folds: the split job). (Leaving out torchvision saves a train job
little: AdamW imports ``torch._dynamo`` on first use anyway; a predict job never builds an
optimizer.) Timings on a shared machine are noisy: it reports, never asserts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CASES = {
    "baseline: import torch": "import torch",
    # up to the first optimizer step: AdamW imports torch._dynamo then (~1.4 s) either way
    "train (small3d)": (
        "import torch, fvc.train\nfrom fvc.models import build_model\n"
        "m = build_model({'name': 'small3d'})\no = torch.optim.AdamW(m.parameters())\n"
        "m(torch.randn(1, 3, 4, 16, 16)).sum().backward()\no.step()"
    ),
    "predict (small3d)": "import fvc.predict",
    "aggregate": "import fvc.report",
    "split": "import fvc.splits, pandas as pd\nfvc.splits.assign_folds(pd.DataFrame({'video_id': "
    "list('abcdef'), 'label': [0, 1] * 3, 'group': list('abcdef')}), {'n_splits': 2})",
    "augment": "import fvc.augment",
}
PROBE = (
    "\nimport sys, time\n"
    "print(time.perf_counter() - T0, 'torchvision' in sys.modules, 'sklearn' in sys.modules)"
)


def run_once(code: str) -> tuple[float, bool, bool]:
    src = "import time\nT0 = time.perf_counter()\n" + code + PROBE
    out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, check=True)
    seconds, tv, sk = out.stdout.split()
    return float(seconds), tv == "True", sk == "True"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    best: dict[str, float] = {}
    tv: dict[str, bool] = {}
    sk: dict[str, bool] = {}
    for _ in range(a.reps):
        for name, code in CASES.items():
            seconds, tv[name], sk[name] = run_once(code)
            best[name] = min(best.get(name, seconds), seconds)
    base = best["baseline: import torch"]
    print(f"{'job':<26} {'import s':>9} {'ratio':>6}  {'torchvision':<12} sklearn")
    for name in CASES:
        ratio = best[name] / base
        print(f"{name:<26} {best[name]:>9.2f} {ratio:>6.2f}  {tv[name]!s:<12} {sk[name]}")


if __name__ == "__main__":
    main()
