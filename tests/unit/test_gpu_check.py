"""bench/gpu_check.py on the CPU (--quick), as `make test` runs it: every figure printed and sane.

It runs without PyAV and Snakemake (both blocked here), as it must on a stock PyTorch image.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKED = (
    "import runpy, sys; sys.modules['av'] = None; sys.modules['snakemake'] = None; "
    "sys.argv = ['gpu_check.py', '--device', 'cpu', '--quick']; "
    f"runpy.run_path({str(REPO / 'bench/gpu_check.py')!r}, run_name='__main__')"
)


def test_gpu_check_quick_on_cpu_prints_all_five_figures() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=400, cwd=REPO
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = re.search(r"^\(a\) loop/bare throughput: ([\d.]+) \(loop ([\d.]+) clips/s", out, re.M)
    assert a and 0.05 < float(a.group(1)) < 20 and float(a.group(2)) > 0, out  # noisy: load
    b = re.search(
        r"^\(b\) OOM .*: (\d+) OOM error\(s\), micro-batch 8 -> (\d+), effective "
        r"batch 8 .*fold finished$",
        out,
        re.M,
    )
    assert b and int(b.group(1)) >= 1 and int(b.group(2)) < 8, out
    c = re.search(
        r"^\(c\) SIGKILL \(exit -9\) with the checkpoint at epoch \d batch (\d+) of 12, rerun on "
        r"cpu: resumed at the exact batch, fold finished \(exit 0\)$",
        out,
        re.M,
    )
    assert c and 2 <= int(c.group(1)) < 12, out
    d = re.search(
        r"^\(d\) checkpoint overhead: ([\d.]+)% of training time .* (\d+) writes", out, re.M
    )
    assert d and 0 <= float(d.group(1)) < 100 and int(d.group(2)) >= 1, out
    e = re.search(r"^\(e\) peak RSS: (\d+) MiB", out, re.M)
    assert e and int(e.group(1)) > 50, out
