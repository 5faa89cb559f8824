"""Cost of noticing dataset changes: ``snakemake -n`` on a 10,000-video dataset.

Run: ``.venv/bin/python bench/dataset_scan.py [--n 10000] [--reps 3]``. In one run it

1. writes ``--n`` tiny placeholder files (a stat never reads them, so they need not decode)
   as class folders, as a CSV table and as an FVC.csv with a ``{url_id}.*`` pattern,
2. copies the workflow twice: as it is, and with the scan switched off (``get_dataset_inventory``
   returning ``[]``) as the baseline,
3. times ``snakemake -n`` (a fresh process each, best of ``--reps``, interleaved) for each
   format: the baseline, the scan with an unchanged dataset (the common case: the inventory is
   compared, not rewritten) and right after one video was added (the inventory is rewritten),
   and prints seconds and the ratio to the baseline.

Target: every ``-n`` with the scan under 3 s on the 2-core machine. Timings on a shared machine
are noisy: the script reports, it never asserts.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SCAN_OFF = 'if not VARIANTS[variant]["data"]["metadata"]:\n        return []'


def make_project(dest: Path, scan: bool) -> Path:
    """A copy of the workflow; ``scan=False`` makes _variant_inventory return [] always."""
    dest.mkdir(parents=True)
    shutil.copy2(REPO / "Snakefile", dest / "Snakefile")
    for sub in ("workflow", "config", "envs"):
        shutil.copytree(REPO / sub, dest / sub, ignore=shutil.ignore_patterns("__pycache__"))
    if not scan:
        common = dest / "workflow/rules/common.smk"
        text = common.read_text()
        assert SCAN_OFF in text, "get_dataset_inventory changed: update the bench"
        common.write_text(text.replace(SCAN_OFF, "if True:\n        return []"))
    return dest


def make_dataset(root: Path, n: int) -> dict[str, Path]:
    """``n`` tiny files laid out as class folders, plus a table and an FVC.csv over them."""
    for label in ("real", "fake"):
        (root / "classes" / label).mkdir(parents=True)
    rows, fvc = ["path,label,group"], ["cascade_id,video_url,label"]
    for i in range(n):
        label = "fake" if i % 2 else "real"
        rel = f"classes/{label}/vid{i:06d}.mp4"
        (root / rel).write_bytes(b"\0" * (100 + i % 7))
        rows.append(f"{rel},{label},g{i // 4}")
        fvc.append(f"{i // 4},https://www.youtube.com/watch?v=vid{i:06d},{label}")
    (root / "table.csv").write_text("\n".join(rows) + "\n")
    (root / "FVC.csv").write_text("\n".join(fvc) + "\n")
    return {"folders": root / "classes", "table": root / "table.csv", "fvc": root / "FVC.csv"}


def overlay(project: Path, name: str, source: Path, root: Path) -> str:
    text = f"experiment: {name}\ndata:\n  metadata: {source}\n"
    if name == "fvc":
        text += f"  root: {root}/classes\n  fvc_filename: '*/{{url_id}}.*'\n"
    (project / f"{name}.yaml").write_text(text)
    return f"{name}.yaml"


def dry_run(project: Path, overlay_file: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``snakemake -n`` in a fresh process.

    CPU time (user + system of the child) is printed too: on a loaded machine the wall time is
    mostly waiting for a core, the CPU time is what the scan really costs.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [SNAKEMAKE, "--configfile", overlay_file, "--cores", "1", "-n", "--quiet", "all"],
        cwd=project,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def scan_seconds(source: Path, fmt: str, root: Path, reps: int) -> tuple[float, float]:
    """Best (wall, CPU) seconds of one in-process scan: what the parse adds to ``-n``."""
    from fvc.inventory import scan_inventory

    cfg = {"format": "auto", "root": None, "fvc_filename": "{url_id}.mp4"}
    if fmt == "fvc":
        cfg.update(root=str(root / "classes"), fvc_filename="*/{url_id}.*")
    best = (float("inf"), float("inf"))
    for _ in range(reps):
        start, cpu = time.perf_counter(), time.process_time()
        entries, error = scan_inventory(source, cfg)
        best = min(best, (time.perf_counter() - start, time.process_time() - cpu))
        assert not error and entries, error
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--formats", default="folders,table,fvc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fvc_scan_") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        sources = make_dataset(tmp_path / "data", args.n)
        print(f"dataset: {args.n} files in {time.perf_counter() - t0:.1f} s")
        base = make_project(tmp_path / "baseline", scan=False)
        scan = make_project(tmp_path / "scan", scan=True)
        print("seconds of `snakemake -n`, wall (CPU), best of --reps; ratio = wall / baseline wall")
        print(
            f"{'format':8} {'baseline':>14} {'unchanged':>14} {'ratio':>6} "
            f"{'1 added':>14} {'ratio':>6}"
        )
        scans: dict[str, tuple[float, float]] = {}
        for fmt in args.formats.split(","):
            ov_base = overlay(base, fmt, sources[fmt], tmp_path / "data")
            ov_scan = overlay(scan, fmt, sources[fmt], tmp_path / "data")
            dry_run(scan, ov_scan)  # first scan writes the inventory
            times: dict[str, list[tuple[float, float]]] = {"base": [], "same": [], "added": []}
            for rep in range(args.reps):
                times["base"].append(dry_run(base, ov_base))
                times["same"].append(dry_run(scan, ov_scan))
                extra = tmp_path / "data/classes/fake" / f"new{rep}.mp4"
                extra.write_bytes(b"\0" * 50)
                if fmt != "folders":  # tables list their files: add a row too
                    with open(sources[fmt], "a") as fh:
                        fh.write(
                            f"classes/fake/new{rep}.mp4,fake,new\n"
                            if fmt == "table"
                            else f"new,https://youtu.be/new{rep},fake\n"
                        )
                times["added"].append(dry_run(scan, ov_scan))
                os.utime(sources[fmt])
            (b, bc), (s, sc), (a, ac) = (min(times[k]) for k in ("base", "same", "added"))
            print(
                f"{fmt:8} {b:6.2f}s ({bc:4.2f}s) {s:6.2f}s ({sc:4.2f}s) {s / b:6.2f} "
                f"{a:6.2f}s ({ac:4.2f}s) {a / b:6.2f}"
            )
            scans[fmt] = scan_seconds(sources[fmt], fmt, tmp_path / "data", args.reps)
        print("target: every -n with the scan < 3 s (the ratio is the scan's share on top)")
        print("the scan alone, in process (fvc.inventory.scan_inventory, best of --reps):")
        for fmt, (wall, cpu) in scans.items():
            print(f"  {fmt:8} {wall:.3f} s ({cpu:.3f} s CPU) for {args.n} videos")


if __name__ == "__main__":
    main()
