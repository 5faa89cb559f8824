"""Run real Snakemake on a throwaway copy of the workflow and read its dry-run plan."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "workflow" / "tiny.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def make_project(dest: Path) -> Path:
    """Copy the workflow (Snakefile, workflow/, config/) into ``dest``; runs/ will live there."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Snakefile", dest / "Snakefile")
    for sub in ("workflow", "config", "profiles", "envs"):
        shutil.copytree(REPO / sub, dest / sub, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(TINY, dest / "tiny.yaml")
    return dest


def snakemake(
    project: Path,
    *args: str,
    overlays: tuple[str, ...] = (),
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run snakemake in ``project`` with the tiny overlay (+ ``overlays``); fail with its output.

    ``--configfile`` takes several values, so it goes first and ``--cores`` ends its list.
    """
    cmd = [SNAKEMAKE, "--configfile", "tiny.yaml", *overlays, "--cores", "2", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        cmd, cwd=project, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
            f"\n--- stderr ---\n{proc.stderr[-8000:]}"
        )
    return proc


_JOB = re.compile(r"^\s*(?:local)?rule (\w+):\s*$")
_WILDCARDS = re.compile(r"^\s*wildcards: (.*)$")


def planned_jobs(project: Path, *args: str, overlays: tuple[str, ...] = ()) -> Counter[str]:
    """Jobs a dry run would execute, as ``rule`` or ``rule[fold=K]`` -> count."""
    proc = snakemake(project, "-n", *args, overlays=overlays)
    text = proc.stdout + proc.stderr
    jobs: Counter[str] = Counter()
    current: str | None = None
    for line in text.splitlines():
        m = _JOB.match(line)
        if m:
            if current:
                jobs[current] += 1
            current = m.group(1)
            continue
        w = _WILDCARDS.match(line)
        if w and current and "[" not in current:
            current = f"{current}[{w.group(1).strip()}]"
    if current:
        jobs[current] += 1
    # Guard the parser itself: an empty plan must be Snakemake's own "nothing to be done".
    assert jobs or "Nothing to be done" in text, f"could not parse the dry run:\n{text[-3000:]}"
    jobs.pop("all", None)
    return jobs
