"""Incremental preprocessing: adding one video to N decodes one video.

Run: ``.venv/bin/python bench/preprocess_incremental.py [--n 40] [--reps 3] [--workers 1]``.
In one run it writes N + 1 textured H.264 clips (the videos of ``preprocess_scaling.py``), then,
interleaved ``--reps`` times:

- **from scratch**: ``build_clip_cache`` on the N + 1 videos with no cache (what every dataset
  change cost before: Snakemake deletes clips.npy before rerunning preprocess);
- **N + 1 after N**: ``build_clip_cache`` on N videos with a cache folder (untimed), then on
  the N + 1 videos with the same cache folder (timed): one decode, N clips copied.

It prints the decode counts, the best times and the ratio incremental / from scratch (target:
well under 1, roughly the cost of copying N clips instead of decoding them), and checks that
both arrays are byte-identical. Timings on a shared machine are noisy: it reports, never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from preprocess_scaling import DATA, write_videos  # the script's folder is on sys.path

from fvc.data import build_clip_cache, load_metadata


def metadata(folder: Path, count: int, out: Path) -> Path:
    """metadata.parquet for the first ``count`` videos (alternating labels, any count)."""
    names = [f"v{i:04d}.mp4" for i in range(count)]
    labels = ["fake" if i % 2 else "real" for i in range(count)]
    pd.DataFrame({"path": names, "label": labels}).to_csv(folder / f"m{count}.csv", index=False)
    md = out / f"metadata_{count}.parquet"
    load_metadata({**DATA, "workers": 2}, folder / f"m{count}.csv", md, out / "x.tsv", 1)
    return md


def timed_build(md: Path, out: Path, workers: int, cache: Path | None) -> tuple[float, int]:
    start = time.perf_counter()
    index = build_clip_cache(
        md, out / "clips.npy", out / "clips.parquet", out / "dx.tsv", DATA, workers, cache_dir=cache
    )
    return time.perf_counter() - start, int(index.attrs["decoded"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="videos before the one added")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--workers", type=int, default=1, help="decoder processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fvc_incr_") as tmp:
        root = Path(tmp)
        videos = root / "videos"
        videos.mkdir()
        write_videos(videos, args.n + 1)
        before, after = metadata(videos, args.n, root), metadata(videos, args.n + 1, root)
        scratch_s, incr_s = [], []
        for rep in range(args.reps):  # interleaved: other jobs share this machine
            seconds, scratch_decodes = timed_build(after, root / f"s{rep}", args.workers, None)
            scratch_s.append(seconds)
            cache = root / f"cache{rep}"
            timed_build(before, root / f"n{rep}", args.workers, cache)
            seconds, incr_decodes = timed_build(after, root / f"i{rep}", args.workers, cache)
            incr_s.append(seconds)
            same = (root / f"s{rep}/clips.npy").read_bytes() == (
                root / f"i{rep}/clips.npy"
            ).read_bytes()
        scratch, incr = min(scratch_s), min(incr_s)
    print(
        f"videos: N={args.n} + 1 (192x144, 48 frames, clips {DATA['num_frames']}x"
        f"{DATA['size']}x{DATA['size']}), {args.workers} decoder process(es)"
    )
    print(f"from scratch: {scratch_decodes} decodes, {scratch:.2f} s (best of {args.reps})")
    print(f"N+1 after N:  {incr_decodes} decode(s), {incr:.2f} s (best of {args.reps})")
    print(
        f"time ratio incremental / from scratch: {incr / scratch:.3f} "
        f"(ideal ~1/(N+1) = {1 / (args.n + 1):.3f} plus copying N clips)"
    )
    print(f"arrays byte-identical: {same}")


if __name__ == "__main__":
    main()
