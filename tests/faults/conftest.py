"""Fixtures of the real-fault tests: tiny artifacts and an uninterrupted reference run."""

from __future__ import annotations

import pytest
import torch
from faultkit import MODEL, TRAIN, weights

from bench.synthetic import fit_synthetic, write_synthetic_inputs


@pytest.fixture(scope="session")
def fault_inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fault_in")
    return write_synthetic_inputs(root, n_videos=96, frames=8, size=48, n_folds=2, seed=1)


@pytest.fixture(scope="session")
def fault_reference(fault_inputs, tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    """Final and best weights of an uninterrupted in-process run of TRAIN."""
    root = tmp_path_factory.mktemp("fault_ref")
    fit_synthetic(fault_inputs, root, MODEL, TRAIN, device="cpu")
    return weights(root)
