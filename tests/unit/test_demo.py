"""fvc.demo: the generated dataset is complete, deterministic and has a temporal fake artefact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fvc import demo as demo_module
from fvc.demo import make_demo_dataset
from fvc.video import decode_clip, probe_video

CFG = {"sources": 3, "clips_per_source": 2, "frames": 12, "size": 48, "seed": 5}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data" / "metadata.csv"
    make_demo_dataset(out, CFG)
    return out


def _decode_all(csv: Path) -> np.ndarray:
    table = pd.read_csv(csv)
    return np.stack([decode_clip(csv.parent / p, 12, 48)[0] for p in table["path"]])


def test_metadata_lists_every_clip_with_groups(demo: Path) -> None:
    table = pd.read_csv(demo)
    assert list(table.columns) == ["path", "label", "group"]
    assert len(table) == 3 * 2 * 2
    assert table["label"].value_counts().to_dict() == {"real": 6, "fake": 6}
    assert table.groupby("group")["label"].value_counts().eq(2).all()
    for rel in table["path"]:
        assert not Path(rel).is_absolute() and rel.startswith("videos/")
        info = probe_video(demo.parent / rel)
        assert (info["frames"], info["width"], info["height"]) == (12, 48, 48)
        assert info["codec"] == "h264"
    assert not list(demo.parent.rglob("*.tmp"))


def test_same_seed_same_data_other_seed_other_data(demo: Path, tmp_path: Path) -> None:
    again = tmp_path / "again" / "metadata.csv"
    make_demo_dataset(again, CFG)
    assert again.read_text() == demo.read_text()
    assert np.array_equal(_decode_all(again), _decode_all(demo))
    other = tmp_path / "other" / "metadata.csv"
    make_demo_dataset(other, {**CFG, "seed": 6})
    assert not np.array_equal(_decode_all(other), _decode_all(demo))


def _frame_change(csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute frame-to-frame change of each fake and each real clip."""
    table = pd.read_csv(csv)
    clips = _decode_all(csv).astype(np.float32)
    change = np.abs(np.diff(clips, axis=1)).mean(axis=(1, 2, 3, 4))
    return change[table["label"].eq("fake").to_numpy()], change[
        table["label"].eq("real").to_numpy()
    ]


def test_fake_clips_flicker_more_than_real_clips(demo: Path) -> None:
    """The learnable artefact: fakes change more from frame to frame than reals on average
    (not every fake: the subtle ones are meant to be hard).
    """
    fake, real = _frame_change(demo)
    assert fake.mean() > 1.5 * real.mean()
    assert fake.max() > 2 * real.max()


def test_artefact_strength_decides_how_visible_a_fake_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The difficulty knob: a fake's extra flicker over the reals grows with its strength, and
    the subtle end is close to a real clip.
    """
    excess = {}
    for strength in (0.1, 0.5, 1.0):
        monkeypatch.setattr(demo_module, "STRENGTH", (strength, strength))
        monkeypatch.setattr(demo_module, "SUBTLE", (strength, strength))
        csv = tmp_path / str(strength) / "metadata.csv"
        make_demo_dataset(csv, CFG)
        fake, real = _frame_change(csv)
        excess[strength] = fake.mean() - real.mean()
    assert excess[0.1] < excess[0.5] < excess[1.0]
    assert excess[0.1] < 0.2 * excess[1.0]


def test_bad_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.demo"):
        make_demo_dataset(tmp_path / "m.csv", {**CFG, "sources": 0})
    assert not (tmp_path / "m.csv").exists()
