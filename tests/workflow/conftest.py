"""Workflow fixtures with explicit preconditions.

``finished_tiny_run`` is one complete run of the tiny config, made once per test session (under
``pytest -n`` by whichever worker needs it first, the others wait for it) and never changed by
a test; each worker reads its own copy. A test that changes files works on a private copy
(``tiny_run_copy``, or a module's own), which starts up to date (checked: a dry run plans
nothing).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from tests.workflow.helpers import make_project, planned_jobs, snakemake


def copy_run(src: Path, dest: Path) -> Path:
    """Copy a finished project (timestamps and .snakemake/ kept) and check it is up to date."""
    shutil.copytree(src, dest, symlinks=True)
    assert planned_jobs(dest) == {}, f"the copy of the finished run {src} is not up to date"
    return dest


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project where `snakemake` (tiny overlay) has finished everything. Read only."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # not under pytest -n
        proj = make_project(tmp_path_factory.mktemp("finished") / "proj")
        snakemake(proj)
        return proj
    # pytest -n: the workers share the parent of their base temp dirs; one builds, under a lock
    shared = tmp_path_factory.getbasetemp().parent / "finished_tiny_run"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "done").exists():
            shutil.rmtree(shared, ignore_errors=True)  # a worker that failed half-way
            snakemake(make_project(shared / "proj"))
            (shared / "done").touch()
    return copy_run(shared / "proj", tmp_path_factory.mktemp("finished") / "proj")


@pytest.fixture
def tiny_run_copy(finished_tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`finished_tiny_run`: up to date."""
    return copy_run(finished_tiny_run, tmp_path / "proj")
