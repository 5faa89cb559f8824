"""What produced a run: code version, environment and command line -> provenance.json.

A results table is only comparable with another one when both say which code, which library
versions and which machine produced them. :func:`code_version` is cheap (two ``git`` calls) and
runs when Snakemake parses the workflow, so the provenance rule can take it as a param: a new
commit or a different uncommitted diff changes the param and Snakemake rewrites
provenance.json on the next run. Everything else is collected when the file is written, at the
end of the run.

Only the standard library is imported at module level: the workflow imports this module while
it parses the Snakefile.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Distributions whose versions are recorded (missing ones are recorded as null).
PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "scipy",
    "av",
    "matplotlib",
    "psutil",
    "snakemake",
    "snakemake-executor-plugin-slurm",
)
#: Untracked files larger than this are hashed by name and size only (a stray video or
#: checkpoint in the repository must not make every Snakemake start slow).
MAX_HASHED_UNTRACKED = 1 << 20
_GIT_TIMEOUT_S = 20


def _git(repo: Path, *args: str) -> bytes | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def code_version(repo: str | os.PathLike[str]) -> dict[str, Any]:
    """Git commit, dirty flag and a hash of the uncommitted changes of the workflow's repository.

    ``diff_sha256`` covers ``git diff HEAD`` (staged and unstaged changes of tracked files) plus
    the untracked, not ignored files (content up to :data:`MAX_HASHED_UNTRACKED`, else name and
    size), so two runs with the same value ran the same code. Outside a git repository (or
    without git) every field is null.
    """
    root = Path(repo)
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "dirty": None, "diff_sha256": None, "untracked": None}
    diff = _git(root, "diff", "HEAD", "--binary", "--no-ext-diff") or b""
    listed = _git(root, "ls-files", "--others", "--exclude-standard", "-z") or b""
    untracked = sorted(p for p in listed.decode(errors="replace").split("\0") if p)
    top = Path((_git(root, "rev-parse", "--show-toplevel") or b"").decode().strip() or root)
    h = hashlib.sha256(diff)
    for name in untracked:
        path = top / name
        h.update(b"\0untracked\0" + name.encode())
        try:
            size = path.stat().st_size
            h.update(path.read_bytes() if size <= MAX_HASHED_UNTRACKED else str(size).encode())
        except OSError:
            continue
    dirty = bool(diff) or bool(untracked)
    return {
        "commit": head.decode().strip(),
        "dirty": dirty,
        "diff_sha256": h.hexdigest() if dirty else None,
        "untracked": untracked,
    }


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (null when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def gpu_info() -> list[dict[str, Any]]:
    """Name, driver and memory of each visible NVIDIA GPU; empty when there is none.

    ``nvidia-smi`` is asked first (it knows the driver); without it, ``torch.cuda`` names the
    devices. Only the machine that writes provenance.json is described: under SLURM that is the
    submit host, and each train job's log names the device it used.
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            proc = subprocess.run(
                [
                    smi,
                    "--query-gpu=index,name,driver_version,memory.total",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0:
            gpus = []
            for line in proc.stdout.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 4:
                    index, name, driver, mem = parts
                    gpus.append(
                        {
                            "index": int(index) if index.isdigit() else index,
                            "name": name,
                            "driver": driver,
                            "memory_mib": int(mem) if mem.isdigit() else mem,
                        }
                    )
            return gpus
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [
        {
            "index": i,
            "name": torch.cuda.get_device_name(i),
            "driver": None,
            "cuda_runtime": torch.version.cuda,
        }
        for i in range(torch.cuda.device_count())
    ]


def environment() -> dict[str, Any]:
    """Python, host, packages and GPUs of the current process."""
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "packages": package_versions(),
        "gpus": gpu_info(),
    }


def write_provenance(
    out_json: str | os.PathLike[str],
    config: dict[str, Any],
    code: dict[str, Any],
    command_line: Sequence[str] | None,
    variants: dict[str, Any] | None = None,
    snakemake_version: str | None = None,
) -> dict[str, Any]:
    """Write provenance.json: resolved config, code version, environment, command line."""
    from datetime import UTC, datetime

    from fvc import io

    record: dict[str, Any] = {
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": code,
        "snakemake": {
            "version": snakemake_version or package_versions(("snakemake",))["snakemake"],
            "command_line": list(command_line) if command_line else None,
            "working_directory": os.getcwd(),
        },
        **environment(),
        "config": config,
        "variants": variants or {},
    }
    io.write_text(out_json, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record
