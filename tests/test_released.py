"""The released quick teacher: sha256 against its card, its AP re-measured, and refusal where it does not fit."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from ikd_edu.errors import UserError
from ikd_edu.apps import quickstart as Q
from ikd_edu.train import released as R

REPO = Path(__file__).resolve().parent.parent
ARTIFACT = REPO / "test-artifacts" / "released-teacher.json"


@pytest.fixture(scope="module")
def val_data(tmp_path_factory):
    """The quickstart's 500 validation images (the val split does not depend on the number of training images)."""
    from ikd_edu.data.synthetic import ensure_synthetic

    root = tmp_path_factory.mktemp("released") / "data"
    return ensure_synthetic(root, 8, seed=0, val_images=Q.SETTINGS["val_images"], progress=False)


def test_card_describes_the_file():
    card = R.load_card()
    path = R.verify()
    assert path.stat().st_size == card["bytes"] <= 8 * 10**6
    assert R.sha256_file(path) == card["sha256"]
    assert card["recipe"]["model"] == "quick-teacher" and card["steps"] == Q.SETTINGS["teacher_steps"]
    assert card["ap_curve"][-1] == [card["steps"], card["final"]["AP"]]
    pack = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in pack["model"].values() if v.is_floating_point())
    # the card's recipe is the quickstart's teacher recipe
    t_cfg = Q.teacher_config(Q.settings(), Path("/nonexistent"), Path("/nonexistent"), 0, False, [])
    assert R.card_mismatch(card, t_cfg, None) == []


@pytest.mark.slow
def test_released_teacher_reaches_its_card_ap(tmp_path, val_data):
    """Loaded, checked and evaluated on the synthetic validation set: the card's AP to +-0.3 AP."""
    card = R.load_card()
    # data.synthetic_images=8: the fixture's set, so evaluating does not generate the 8,000 training images first
    t_cfg = Q.teacher_config(Q.settings(), tmp_path, val_data, 0, False, ["data.num_workers=0", "data.synthetic_images=8"])
    t0 = time.perf_counter()
    summary = R.install(t_cfg, None, out_dir=tmp_path / "teacher")  # data_root=None: this set has 8 train images
    seconds = time.perf_counter() - t0
    assert summary is not None and summary["final_checked"]
    ap = summary["final"]["AP"]
    assert abs(ap - card["final"]["AP"]) <= 0.003, R.compare_with_card(ap, card)
    assert json.loads((tmp_path / "teacher" / "summary.json").read_text())["final"]["AP"] == ap
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps({"AP": ap, "card_AP": card["final"]["AP"], "install_and_eval_s": round(seconds, 1)}))


def test_a_changed_file_is_refused(tmp_path, monkeypatch):
    card = R.load_card()
    bad = tmp_path / "weights"
    bad.mkdir()
    shutil.copy(R.card_path(), bad / R.card_path().name)
    data = bytearray(R.weights_path().read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    (bad / R.weights_path().name).write_bytes(bytes(data))
    monkeypatch.setattr(R, "WEIGHTS_DIR", bad)
    with pytest.raises(UserError, match="does not match its card's sha256"):
        R.verify()
    (bad / R.weights_path().name).write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(UserError, match="git-lfs pointer"):
        R.verify()
    (bad / R.weights_path().name).unlink()
    with pytest.raises(UserError, match="is missing"):
        R.verify()
    assert card["sha256"] != R.sha256_file(bad / R.card_path().name)


def test_not_installed_where_recipe_or_data_differ(tmp_path, val_data, capsys):
    card = R.load_card()
    s = Q.settings()
    longer = dict(s, teacher_steps=s["teacher_steps"] + 1)
    t_cfg = Q.teacher_config(longer, tmp_path, val_data, 0, False, [])
    assert "optim" in R.card_mismatch(card, t_cfg, None)
    assert R.install(t_cfg, val_data) is None
    assert "not used, its optim" in capsys.readouterr().out
    other = tmp_path / "other-data" / "annotations"  # annotations that differ from the card's by one byte
    other.mkdir(parents=True)
    for split in ("train", "val"):
        text = (val_data / "annotations" / f"person_keypoints_{split}.json").read_text()
        (other / f"person_keypoints_{split}.json").write_text(text + " ")
    t_cfg = Q.teacher_config(s, tmp_path, other.parent, 0, False, [])
    assert R.card_mismatch(card, t_cfg, other.parent) == ["training data (annotation sha256)"]
    assert R.install(t_cfg, other.parent) is None
    assert "training data (annotation sha256) differ" in capsys.readouterr().out
    assert not (tmp_path / "teacher" / "best.pt").exists()


def test_compare_curves_says_where_a_retrained_curve_leaves_the_card():
    card = {"ap_curve": [[250, 0.112118], [500, 0.18951], [750, 0.272818]]}
    same = R.compare_curves([(250, 0.112118), (500, 0.18951), (750, 0.272818)], card)
    assert "equals the card's at all 3" in same
    first = R.compare_curves([(250, 0.102767), (500, 0.186931)], card)
    assert "from the first evaluation at step 250 (10.3 here vs 11.2" in first
    later = R.compare_curves([(250, 0.112118), (500, 0.1895), (750, 0.3)], card)
    assert "first at step 500" in later
    assert "no evaluation step in common" in R.compare_curves([(100, 0.1)], card)
