"""Preprocess scaling: memory stays flat with dataset size, decoding keeps up with raw PyAV.

Run: ``.venv/bin/python bench/preprocess_scaling.py [--n 30] [--workers 2]``. In one run it

1. writes 10N same-size H.264 videos (the first N of them form the small dataset),
2. runs ``build_clip_cache`` on N and on 10N videos, each in a fresh process, and compares
   their peak RSS (target: ratio <= 1.2; a cache held in RAM would grow ~10x its clip bytes),
3. times ``build_clip_cache`` with one worker against a raw sequential PyAV loop that decodes
   every frame of the same files, interleaved ``--reps`` times (target: throughput ratio of the
   best times >= 0.8; the median of the paired ratios is printed too), and with ``--workers``
   decoder processes (what the preprocess rule runs with ``threads: data.workers``).

Timings on a shared machine are noisy: the script reports, it never asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd

from fvc.data import build_clip_cache, load_metadata

DATA = {"positive_label": "fake", "group_column": None, "num_frames": 8, "size": 128}

CHILD = """
import json, resource, sys
from fvc.data import build_clip_cache
md, out, workers, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
build_clip_cache(md, out + "/clips.npy", out + "/clips.parquet", out + "/dx.tsv", data, workers)
print(json.dumps({"self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "workers_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def write_videos(folder: Path, count: int, frames: int = 48, w: int = 192, h: int = 144) -> None:
    """``count`` textured, moving H.264 clips (so decoding does real work)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (h * 2, w * 2, 3), dtype=np.uint8)
    for i in range(count):
        with av.open(str(folder / f"v{i:04d}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt, stream.gop_size = w, h, "yuv420p", 16
            stream.codec_context.options = {"preset": "ultrafast"}
            for t in range(frames):
                y, x = (i * 7 + t * 2) % h, (i * 3 + t * 3) % w
                img = np.ascontiguousarray(texture[y : y + h, x : x + w])
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = t
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))


def metadata(folder: Path, count: int, out: Path) -> Path:
    """metadata.parquet for the first ``count`` videos (alternating labels)."""
    table = pd.DataFrame(
        {"path": [f"v{i:04d}.mp4" for i in range(count)], "label": ["real", "fake"] * (count // 2)}
    )
    table.to_csv(folder / f"meta_{count}.csv", index=False)
    md = out / f"metadata_{count}.parquet"
    load_metadata({**DATA, "workers": 2}, folder / f"meta_{count}.csv", md, out / "x.tsv", 1)
    return md


def peak_rss(md: Path, out: Path, workers: int) -> dict[str, float]:
    """Peak RSS (MiB) of build_clip_cache in a fresh process, and of its largest worker."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(md), str(out), str(workers), json.dumps(DATA)],
        check=True,
        capture_output=True,
        text=True,
    )
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"main_mib": res["self_kib"] / 1024, "worker_mib": res["workers_kib"] / 1024}


def raw_decode(paths: list[Path]) -> float:
    """Seconds to decode every frame of every file sequentially with plain PyAV."""
    start = time.perf_counter()
    for path in paths:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                pass
    return time.perf_counter() - start


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="small dataset size N (even)")
    parser.add_argument("--workers", type=int, default=2, help="decoder processes for the RSS run")
    parser.add_argument("--reps", type=int, default=5, help="interleaved throughput repetitions")
    args = parser.parse_args()
    n = args.n + args.n % 2
    with tempfile.TemporaryDirectory(prefix="fvc_bench_") as tmp:
        root = Path(tmp)
        videos = root / "videos"
        videos.mkdir()
        write_videos(videos, 10 * n)
        small, large = metadata(videos, n, root), metadata(videos, 10 * n, root)
        rss_small = peak_rss(small, root / "small", args.workers)
        rss_large = peak_rss(large, root / "large", args.workers)
        clip_mib = 10 * n * 8 * 128 * 128 * 3 / 2**20

        paths = sorted(videos.glob("*.mp4"))
        raw_s, ours_s, par_s = [], [], []
        for rep in range(args.reps):  # interleaved: other jobs share this machine
            raw_s.append(raw_decode(paths))
            for workers, times in ((1, ours_s), (args.workers, par_s)):
                d = root / f"tp{rep}_{workers}"
                start = time.perf_counter()
                build_clip_cache(large, d / "c.npy", d / "c.parquet", d / "x.tsv", DATA, workers)
                times.append(time.perf_counter() - start)
        raw, ours, par = min(raw_s), min(ours_s), min(par_s)
        paired = statistics.median(r / o for r, o in zip(raw_s, ours_s, strict=True))

    print(f"videos: N={n}, 10N={10 * n} (192x144, 48 frames); clips {clip_mib:.0f} MiB at 10N")
    print(
        f"peak RSS main process: N {rss_small['main_mib']:.0f} MiB, "
        f"10N {rss_large['main_mib']:.0f} MiB; largest worker: N "
        f"{rss_small['worker_mib']:.0f} MiB, 10N {rss_large['worker_mib']:.0f} MiB"
    )
    rss_ratio = rss_large["main_mib"] / rss_small["main_mib"]
    print(f"RSS ratio 10N/N: {rss_ratio:.2f} (target <= 1.2: {_verdict(rss_ratio <= 1.2)})")
    print(
        f"raw PyAV decode: {len(paths) / raw:.1f} videos/s; build_clip_cache: "
        f"{len(paths) / ours:.1f} videos/s (1 worker), "
        f"{len(paths) / par:.1f} videos/s ({args.workers} workers)"
    )
    print(
        f"throughput ratio (ours/raw, 1 worker, best of {args.reps}): {raw / ours:.2f} "
        f"(target >= 0.8: {_verdict(raw / ours >= 0.8)}); median of paired runs "
        f"{paired:.2f}; with {args.workers} workers: {raw / par:.2f}"
    )


if __name__ == "__main__":
    main()
