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


@pytest.fixture(scope="session")
def course_env(tmp_path_factory) -> dict:
    """Environment for executing course notebooks: quick mode, one shared course folder per session.

    The folder (``IKD_COURSE_DIR``) is shared so that notebook 03 loads the teacher that
    notebook 02 trained, as it does for a learner working through the course.
    """
    import os

    env = dict(os.environ)
    env["IKD_QUICK"] = "1"
    env["IKD_COURSE_DIR"] = str(tmp_path_factory.mktemp("course"))
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    env["FIFTYONE_DO_NOT_TRACK"] = "true"
    env["IKD_QUICKSTART_DIR"] = str(tmp_path_factory.mktemp("no-quickstart"))  # CI has none either
    env["IKD_CAPSTONE_STEPS"] = "20"  # notebook 09 trains two students: the pipeline, not the result, is tested
    return env
