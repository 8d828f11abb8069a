"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic COCO-format set (24 train / 8 val images, 192x192, seed 0), made once.

    Layout: ``annotations/person_keypoints_{train,val}.json``, ``{train,val}/*.jpg``.
    Treat it as read-only: it is shared by every test in the session.
    """
    from ikd_edu.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, 24, seed=0, val_images=8, progress=False, workers=1)
    return root
