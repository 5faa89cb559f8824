"""The corpus is built once per test session (about 1 s) and only read afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus.corpus import build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the corpus: ``real/`` and ``fake/`` folders with every good and broken file."""
    return build_corpus(tmp_path_factory.mktemp("corpus") / "videos")
