"""Workflow fixtures with explicit preconditions.

``finished_tiny_run`` is one complete run of the tiny config, made once per session and never
changed by a test; a test that changes files works on its own copy (``tiny_run_copy``), which
starts up to date (checked: a dry run plans nothing).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.workflow.helpers import make_project, planned_jobs, snakemake


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project where `snakemake` (tiny overlay) has finished everything. Read only."""
    proj = make_project(tmp_path_factory.mktemp("finished") / "proj")
    snakemake(proj)
    return proj


@pytest.fixture
def tiny_run_copy(finished_tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`finished_tiny_run` (timestamps and .snakemake/ kept): up to date."""
    proj = tmp_path / "proj"
    shutil.copytree(finished_tiny_run, proj, symlinks=True)
    assert planned_jobs(proj) == {}, "the copy of the finished run is not up to date"
    return proj
