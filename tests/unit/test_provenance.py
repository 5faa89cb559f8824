"""provenance.json: code version from a real git repository, environment, atomic write."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from fvc.provenance import code_version, package_versions, write_provenance

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.org")
    _git(repo, "config", "user.name", "t")
    (repo / ".gitignore").write_text("runs/\n")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    return repo


def test_clean_checkout(repo: Path) -> None:
    v = code_version(repo)
    assert v["commit"] == _git(repo, "rev-parse", "HEAD") and len(v["commit"]) == 40
    assert v["dirty"] is False and v["diff_sha256"] is None and v["untracked"] == []
    (repo / "runs").mkdir()
    (repo / "runs" / "out.txt").write_text("ignored outputs do not make the tree dirty")
    assert code_version(repo)["dirty"] is False


def test_uncommitted_changes_change_the_hash(repo: Path) -> None:
    (repo / "a.py").write_text("x = 2\n")
    one = code_version(repo)
    assert one["dirty"] is True and len(one["diff_sha256"]) == 64
    assert code_version(repo) == one  # same tree, same hash
    (repo / "a.py").write_text("x = 3\n")
    two = code_version(repo)
    assert two["diff_sha256"] != one["diff_sha256"]
    (repo / "new.py").write_text("y = 1\n")
    three = code_version(repo)
    assert three["untracked"] == ["new.py"] and three["diff_sha256"] != two["diff_sha256"]
    # A subdirectory of the repository reports the same state.
    (repo / "sub").mkdir()
    assert code_version(repo / "sub")["commit"] == three["commit"]


def test_new_commit_is_visible(repo: Path) -> None:
    first = code_version(repo)["commit"]
    (repo / "a.py").write_text("x = 2\n")
    _git(repo, "commit", "-qam", "two")
    second = code_version(repo)
    assert second["commit"] != first and second["dirty"] is False


def test_outside_a_repository(tmp_path: Path) -> None:
    v = code_version(tmp_path)
    assert v == {"commit": None, "dirty": None, "diff_sha256": None, "untracked": None}


def test_write_provenance(tmp_path: Path, repo: Path) -> None:
    out = tmp_path / "runs" / "provenance.json"
    cfg = {"experiment": "x", "train": {"lr": 0.1}}
    write_provenance(
        out,
        cfg,
        code_version(repo),
        ["snakemake", "--cores", "2"],
        variants={"base": {"overlay": {}}},
    )
    rec = json.loads(out.read_text())
    assert rec["config"] == cfg
    assert rec["code"]["commit"] == _git(repo, "rev-parse", "HEAD")
    assert rec["snakemake"]["command_line"] == ["snakemake", "--cores", "2"]
    assert rec["snakemake"]["version"] == package_versions(("snakemake",))["snakemake"]
    assert rec["python"]["version"] == platform.python_version()
    assert rec["host"]["hostname"]
    assert rec["packages"]["torch"] and rec["packages"]["pandas"]
    assert isinstance(rec["gpus"], list)
    assert rec["variants"] == {"base": {"overlay": {}}}
    assert not list(out.parent.glob("*.tmp"))


def test_missing_package_is_null() -> None:
    assert package_versions(("surely-not-installed-fvc-pkg",)) == {
        "surely-not-installed-fvc-pkg": None
    }


def test_gpus_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: a stand-in nvidia-smi prints what the real one prints for this query."""
    from fvc.provenance import gpu_info

    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--query-gpu=index,name,driver_version,memory.total*) ;; *) exit 9;; esac\n'
        "echo '0, NVIDIA H200, 570.86.15, 143771'\n"
        "echo '1, NVIDIA H200, 570.86.15, 143771'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert gpu_info() == [
        {"index": i, "name": "NVIDIA H200", "driver": "570.86.15", "memory_mib": 143771}
        for i in (0, 1)
    ]
