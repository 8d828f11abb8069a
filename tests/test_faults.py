"""Fault injection: every bad file, path, argument and fault ends in one clear line and loses nothing.

One test (or parametrised family) per category of issue 20: empty / truncated / foreign /
unsafe checkpoints for every loader; read-only, file and full-disk outputs (a patched
writer: tests run as root, where permissions do not stop a write); two writers on one
folder; corrupt run files on reuse; malformed results and ground truth; hostile paths;
oversized images; deep JSON; bad arguments; leftovers of killed writers. Each asserts a
one-line error, a non-zero exit and (where files exist) nothing changed on disk.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

from ikd_edu import io as ikd_io
from ikd_edu.cli import main
from ikd_edu.errors import UserError, user_message

REPO = Path(__file__).resolve().parents[1]
TINY_TEACHER = "{widths: [8, 8, 16, 16], blocks: [1, 1, 1, 1], deconv_channels: 16}"
TINY_STUDENT = "{widths: [8, 8, 8, 16], blocks: [1, 1, 1, 1], deconv_channels: 8}"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict:
    """Every file under ``folder``: relative path -> (size, mtime_ns, first bytes)."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, p.read_bytes()[:64])
    return out


def run_cli(argv, capsys) -> tuple[int, str]:
    """``ikd-edu argv`` in-process: (exit status, the single stderr line); asserts exactly one line, no traceback."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0, f"exit 0 for {argv}: {err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("ikd-edu: error: "), err
    assert "\x1b[" not in lines[0], "raw ANSI codes in the message"
    return code, lines[0]


def tiny_sets(root, out, steps=2, **extra) -> list[str]:
    sets = {
        "data.dataset": "coco", "data.root": str(root), "data.input_size": "64x64", "data.heatmap_size": "16x16",
        "data.num_workers": 0, "model.teacher_options": TINY_TEACHER, "model.student_options": TINY_STUDENT,
        "optim.steps": steps, "optim.batch_size": 8, "optim.schedule": "constant", "run.out_dir": str(out),
        "run.log_every": 1, "run.eval_every": 1000, "run.ckpt_every": 2, "run.tensorboard": "false",
        "run.progress": "off", "run.deterministic": "true", "run.eval_batch_size": 16,
    }
    sets.update(extra)
    args = []
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


class Evil:
    """Unpickling this would create the marker file: the refused-pickle tests check it never appears."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_checkpoints(folder: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a word the message must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.pt"
    torch.save({"w": torch.zeros(64)}, good)
    data = good.read_bytes()
    files = {
        "empty": (b"", "empty"),
        "truncated": (data[: len(data) // 2], "truncated"),
        "foreign-text": (b'{"not": "a checkpoint"}', "not a PyTorch checkpoint"),
        "foreign-binary": (b"GIF89a\x01\x00\x01\x00" + bytes(100), "not a PyTorch checkpoint"),
    }
    out = {}
    for name, (content, word) in files.items():
        p = folder / f"{name}.pt"
        p.write_bytes(content)
        out[name] = (p, word)
    Evil.marker = str(marker)
    evil = folder / "evil.pt"
    torch.save({"model": {"x": Evil()}}, evil)
    out["evil-pickle"] = (evil, "refuses")
    legacy = folder / "evil-legacy.pt"
    legacy.write_bytes(pickle.dumps(Evil(), protocol=2))
    out["evil-legacy-pickle"] = (legacy, "refuse")
    return out


# ---------------------------------------------------------------------------------------
# 1. checkpoints: empty, truncated, foreign, unsafe - for every loader
# ---------------------------------------------------------------------------------------
def _loaders(tmp_path):
    from ikd_edu.models import build_model
    from ikd_edu.models.checkpoints import load_pose_checkpoint
    from ikd_edu.models.simple_baseline import load_trunk_weights
    from ikd_edu.train.config import check_teacher_checkpoint, load_config

    def pose(path):
        load_pose_checkpoint(build_model("quick-student"), path)

    def trunk(path):
        load_trunk_weights(build_model("quick-student"), path, None)

    def teacher(path):
        cfg = load_config("quick", [f"model.teacher_checkpoint={path}", "distill.terms=logit"], role="student",
                          check_files=False)
        check_teacher_checkpoint(cfg)

    def raw(path):
        ikd_io.load_torch(path)

    return {"pose (eval/app/teacher)": pose, "trunk (pretrained)": trunk, "teacher check": teacher, "load_torch": raw}


def test_bad_checkpoints_in_every_loader_are_one_line(tmp_path):
    marker = tmp_path / "PWNED"
    files = bad_checkpoints(tmp_path / "ckpts", marker)
    before = snapshot(tmp_path / "ckpts")
    for loader_name, load in _loaders(tmp_path).items():
        for name, (path, word) in files.items():
            with pytest.raises(UserError) as info:
                load(path)
            message = user_message(info.value)
            assert "\n" not in message and "\x1b[" not in message, (loader_name, name, message)
            assert str(path) in message and word in message, (loader_name, name, message)
            assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert not marker.exists(), "an unsafe pickle ran code"
    assert snapshot(tmp_path / "ckpts") == before


def test_bad_checkpoints_through_the_cli(synthetic_root, tmp_path, capsys):
    """`train student` with a bad teacher, `train teacher --resume` with bad files: one line, exit 2, no run files."""
    marker = tmp_path / "PWNED"
    files = bad_checkpoints(tmp_path / "ckpts", marker)
    out = tmp_path / "run"
    for name, (path, word) in files.items():
        code, line = run_cli(["train", "student", "--preset", "quick", "--distill", "logit", "--teacher-ckpt", path,
                              *tiny_sets(synthetic_root, out)], capsys)
        assert code == 2 and word in line and str(path) in line, (name, line)
        code, line = run_cli(["train", "teacher", "--preset", "quick", "--resume", path,
                              *tiny_sets(synthetic_root, out)], capsys)
        assert code == 2 and word in line, (name, line)
    assert not marker.exists()
    assert not out.exists() or not any(p.name != ".ikd-edu.lock" for p in out.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def student_run(synthetic_root, tmp_path_factory):
    """A finished 2-step tiny student run (its last.pt)."""
    from ikd_edu.train.config import load_config
    from ikd_edu.train.engine import train

    out = tmp_path_factory.mktemp("student-run")
    sets = tiny_sets(synthetic_root, out)
    train(load_config("quick", [s for s in sets if s != "--set"], role="student"))
    return out


def test_resume_with_the_wrong_kind_of_checkpoint(synthetic_root, student_run, tmp_path, capsys):
    """Optimizer-only file, a student's last.pt resumed as a teacher, a weights-only best.pt: one line each."""
    last = torch.load(student_run / "last.pt", weights_only=True)
    opt_only = tmp_path / "optimizer-only.pt"
    torch.save({"optimizer": last["optimizer"]}, opt_only)
    cases = {
        opt_only: "not a resumable",
        student_run / "last.pt": "student run",
        student_run / "best.pt": "not a resumable",
    }
    out = tmp_path / "teacher-run"
    before = snapshot(student_run)
    for path, word in cases.items():
        code, line = run_cli(["train", "teacher", "--preset", "quick", "--resume", path,
                              *tiny_sets(synthetic_root, out)], capsys)
        assert code == 2 and word in line, line
    # the student's weights in a teacher-shaped run, the role check aside: the keys are compared
    doctored = tmp_path / "doctored.pt"
    torch.save({**last, "config": {**last["config"], "role": "teacher"}}, doctored)
    code, line = run_cli(["train", "teacher", "--preset", "quick", "--resume", doctored,
                          *tiny_sets(synthetic_root, out)], capsys)
    assert "does not fit this run's model" in line
    assert snapshot(student_run) == before


# ---------------------------------------------------------------------------------------
# 2. outputs: a file in the way, read-only, full disk (patched writer)
# ---------------------------------------------------------------------------------------
def _results_file(tmp_path, synthetic_root) -> Path:
    data = json.loads((synthetic_root / "annotations" / "person_keypoints_val.json").read_text())
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in data["annotations"]]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


def test_output_is_a_file(synthetic_root, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    ann = synthetic_root / "annotations" / "person_keypoints_val.json"
    results = _results_file(tmp_path, synthetic_root)
    before = snapshot(tmp_path)
    commands = [
        ["eval", "--ann", ann, "--results", results, "--out", blocker / "metrics.json"],
        ["eval", "--ann", ann, "--results", results, "--out", tmp_path],  # a folder where a file goes
        ["data", "synth", "--out", blocker, "--images", "2", "--quiet"],
        ["train", "teacher", "--preset", "quick", *tiny_sets(synthetic_root, blocker)],
        ["quickstart", "--out", blocker, "--fast"],
        ["assignments", "build", "--out", blocker, "--notebooks", REPO / "notebooks"],
        ["ablation", "--preset", "quick", "--out", blocker, "--variants", "labels", "--seeds", "1"],
    ]
    for argv in commands:
        code, line = run_cli(argv, capsys)
        assert code == 2 and ("file" in line or "folder" in line), (argv[0], line)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fault", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_read_only_and_full_disk_writers(synthetic_root, tmp_path, capsys, monkeypatch, fault):
    """Every writer creates its files through io._make_temp: make it fail like the real file system would."""
    def refuse(path):
        raise OSError(fault, os.strerror(fault), str(path))

    monkeypatch.setattr(ikd_io, "_make_temp", refuse)
    out = tmp_path / "out"
    out.mkdir()
    ann = synthetic_root / "annotations" / "person_keypoints_val.json"
    results = _results_file(tmp_path, synthetic_root)
    before = snapshot(tmp_path)
    words = {errno.EROFS: "read-only", errno.EACCES: "permission denied", errno.ENOSPC: "no space"}[fault]
    for argv in (
        ["eval", "--ann", ann, "--results", results, "--out", out / "metrics.json"],
        ["data", "synth", "--out", out / "synth", "--images", "2", "--quiet"],
        ["train", "teacher", "--preset", "quick", *tiny_sets(synthetic_root, out / "run")],
        ["assignments", "build", "--out", out / "student", "--notebooks", REPO / "notebooks"],
    ):
        code, line = run_cli(argv, capsys)
        assert code == 2 and words in line and str(out) in line, (argv[0], line)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items()} == before


def test_full_disk_is_said_before_training(synthetic_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ikd_io, "free_bytes", lambda folder: 1000)
    out = tmp_path / "run"
    code, line = run_cli(["train", "teacher", "--preset", "quick", *tiny_sets(synthetic_root, out)], capsys)
    assert code == 2 and "only 0.0 MiB is free" in line and "needs about" in line
    assert not (out / "metrics.csv").exists() and not (out / "last.pt").exists()


def test_torch_save_failure_is_one_line(tmp_path, monkeypatch):
    def broken_save(obj, fh):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 123 vs 456")

    monkeypatch.setattr(torch, "save", broken_save)
    monkeypatch.setattr(ikd_io, "free_bytes", lambda folder: 0)
    with pytest.raises(UserError, match="no space left"):
        ikd_io.save_torch(tmp_path / "last.pt", {"x": 1})
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_atomic_write_mode_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        ikd_io.write_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o027)
        ikd_io.write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640


# ---------------------------------------------------------------------------------------
# 3. two writers on one folder; stale locks and leftovers of killed writers
# ---------------------------------------------------------------------------------------
_HOLD = """
import sys, time
from ikd_edu.io import lock_output_dir
with lock_output_dir(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_on_one_folder_is_refused(synthetic_root, tmp_path, capsys):
    folder = tmp_path / "shared"
    proc = _holder(folder)
    try:
        before = snapshot(folder)
        for argv in (
            ["data", "synth", "--out", folder, "--images", "2", "--quiet", "--seed", "1"],
            ["train", "teacher", "--preset", "quick", *tiny_sets(synthetic_root, folder)],
            ["quickstart", "--out", folder, "--fast"],
        ):
            code, line = run_cli(argv, capsys)
            assert code == 2 and f"in use by PID {proc.pid} since" in line, line
        assert snapshot(folder) == before
    finally:
        proc.kill()
        proc.wait()
    # the holder was killed: its lock is stale and is taken over, its temp files are removed
    (folder / ".summary.json.abc123xy.tmp").write_text("half a file")
    with ikd_io.lock_output_dir(folder):
        assert not (folder / ".summary.json.abc123xy.tmp").exists()
        assert json.loads((folder / ikd_io.LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (folder / ikd_io.LOCK_NAME).exists()


def test_lock_of_a_dead_pid_without_flock_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(ikd_io, "_try_flock", lambda fd: None)  # a file system without flock
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (folder / ikd_io.LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                       "since": "yesterday"}))
    with ikd_io.lock_output_dir(folder):
        pass
    (folder / ikd_io.LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "since": "2020-01-01T00:00:00"}))
    with pytest.raises(UserError, match=f"in use by PID {os.getppid()} since 2020-01-01"):
        with ikd_io.lock_output_dir(folder):
            pass


def test_synth_killed_mid_write_leaves_no_partial_set(tmp_path):
    """SIGKILL during generation: no synth_meta.json, the next run cleans the staging folder and completes."""
    out = tmp_path / "synth"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ikd_edu.cli", "data", "synth", "--out", str(out), "--images",
                             "400", "--quiet", "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not any(out.glob(".synth-staging-*/train/*.jpg")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(out.glob(".synth-staging-*")) and not (out / "synth_meta.json").exists()
    from ikd_edu.data.synthetic import generate_synthetic, synthetic_matches

    generate_synthetic(out, 3, seed=0, val_images=1, progress=False, workers=1)
    assert synthetic_matches(out, 3, 0, 1) and not any(out.glob(".synth-staging-*"))


def test_final_eval_row_is_not_repeated_after_a_kill(synthetic_root, student_run, tmp_path):
    """Killed after the final evaluation but before summary.json: the rerun redoes it, eval.csv keeps one row."""
    import shutil

    from ikd_edu.train.config import load_config
    from ikd_edu.train.engine import train

    run = tmp_path / "run"
    shutil.copytree(student_run, run)
    (run / "summary.json").unlink()
    sets = [s for s in tiny_sets(synthetic_root, run) if s != "--set"]
    train(load_config("quick", sets, role="student"))
    steps = [line.split(",")[0] for line in (run / "eval.csv").read_text().splitlines()[1:]]
    assert steps == ["2"], steps


# ---------------------------------------------------------------------------------------
# 4. corrupt run files on reuse (quickstart, ablation)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["[1, 2]", '{"rows": 1, "final": 3}', "{not json", ""])
def test_corrupt_run_files_on_reuse(tmp_path, content):
    from ikd_edu.apps import quickstart as Q
    from ikd_edu.train.config import load_config

    cfg = load_config("quick", [f"run.out_dir={tmp_path / 'run'}"], role="teacher", check_files=False)
    (tmp_path / "run").mkdir()
    calls = {
        "summary.json": lambda: Q._finished(cfg),
        "equal_time.json": lambda: Q.equal_time_steps(tmp_path, {}, {}, 10),
        "profile.json": lambda: Q.profile_models(tmp_path, cfg, fast=True),
        "results-seed0.json": lambda: Q.collect_seeds(tmp_path),
    }
    for name, call in calls.items():
        path = (tmp_path / "run" / name) if name == "summary.json" else tmp_path / name
        path.write_text(content)
        if content == '{"rows": 1, "final": 3}' and name == "results-seed0.json":
            path.write_text('[{"rows": 1}]')
        before = path.read_bytes()
        with pytest.raises(UserError) as info:
            call()
        message = user_message(info.value)
        assert str(path) in message and "delete it" in message and "\n" not in message, (name, message)
        assert path.read_bytes() == before
        path.unlink()
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "eval.csv").write_text("step,AP\n2,not-a-number\n")
    with pytest.raises(UserError, match="eval.csv"):
        Q.teacher_curve(tmp_path / "teacher")


# ---------------------------------------------------------------------------------------
# 5. malformed results and ground truth for `eval`
# ---------------------------------------------------------------------------------------
def test_malformed_results_and_ground_truth(synthetic_root, tmp_path, capsys):
    ann = synthetic_root / "annotations" / "person_keypoints_val.json"
    good = json.loads(_results_file(tmp_path, synthetic_root).read_text())[0]
    bad_results = {
        "image-id-list": {**good, "image_id": [good["image_id"]]},
        "category-dict": {**good, "category_id": {"id": 1}},
        "bbox-string": {**good, "bbox": "box"},
        "keypoints-strings": {**good, "keypoints": ["1"] * 51},
        "score-nan": {**good, "score": float("nan")},
        "bool-id": {**good, "image_id": True},
        "unknown-image": {**good, "image_id": 987654},
    }
    for name, entry in bad_results.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps([entry]))
        code, line = run_cli(["eval", "--ann", ann, "--results", path], capsys)
        assert code == 2 and str(path) in line, (name, line)
    gt = json.loads(ann.read_text())
    results = _results_file(tmp_path, synthetic_root)
    for name, data in {
        "no-annotations": {**gt, "annotations": []},
        "no-labelled-joints": {**gt, "annotations": [{**a, "keypoints": [0] * 51, "num_keypoints": 0}
                                                     for a in gt["annotations"]]},
        "string-image-id": {**gt, "annotations": [{**gt["annotations"][0], "image_id": "1"}]},
    }.items():
        path = tmp_path / f"gt-{name}.json"
        path.write_text(json.dumps(data))
        code, line = run_cli(["eval", "--ann", path, "--results", results], capsys)
        assert code == 2 and str(path) in line, (name, line)


# ---------------------------------------------------------------------------------------
# 6. hostile paths, 7. oversized images, corrupt images
# ---------------------------------------------------------------------------------------
def _one_image_set(tmp_path, synthetic_root, file_names: list[str]) -> tuple[Path, Path]:
    gt = json.loads((synthetic_root / "annotations" / "person_keypoints_val.json").read_text())
    images = tmp_path / "images"
    images.mkdir()
    first = gt["images"][0]
    src = synthetic_root / "val" / first["file_name"]
    entries, anns = [], []
    person = next(a for a in gt["annotations"] if a["image_id"] == first["id"])
    for i, name in enumerate(file_names, start=1):
        if name.endswith(".jpg") and "/" not in name:
            (images / name).write_bytes(src.read_bytes())
        entries.append({**first, "id": i, "file_name": name})
        anns.append({**person, "id": i, "image_id": i})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({**gt, "images": entries, "annotations": anns}))
    return ann, images


def test_hostile_paths_are_never_opened(synthetic_root, tmp_path, capsys, monkeypatch):
    from ikd_edu.data import check as check_module
    from ikd_edu.data.coco import HOSTILE_PATH, TopDownCocoDataset

    hostile = ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.jpg", "C:\\Windows\\win.ini"]
    ann, folder = _one_image_set(tmp_path, synthetic_root, ["ok.jpg", *hostile])
    opened = []
    real = check_module.load_rgb
    monkeypatch.setattr(check_module, "load_rgb", lambda p: opened.append(str(p)) or real(p))
    assert main(["data", "check", str(ann), "--images", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problems"][HOSTILE_PATH] == len(hostile) and report["n_usable_persons"] == 1
    ds = TopDownCocoDataset(ann, folder, input_size=(64, 64), heatmap_size=(16, 16))
    assert len(ds) == 1 and all(Path(p).parent == folder for p in ds.image_paths)
    assert not any("passwd" in p or "win.ini" in p or "outside" in p for p in opened)


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_oversized_and_corrupt_images(synthetic_root, tmp_path, capsys, monkeypatch):
    from ikd_edu.data.images import load_rgb

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20000, 20000))  # 400 megapixels claimed by a 100-byte file
    with pytest.raises(UserError, match=r"20000x20000 \(400 megapixels\), over the limit of 50 megapixels"):
        load_rgb(bomb)
    bmp = tmp_path / "bomb.bmp"
    bmp.write_bytes(bomb.read_bytes())  # PIL path (any suffix): the same rule
    with pytest.raises(UserError, match="over the limit"):
        load_rgb(bmp)

    ann, folder = _one_image_set(tmp_path, synthetic_root, ["a.jpg", "b.jpg"])
    from PIL import Image

    Image.new("RGB", (300, 300)).save(folder / "b.jpg")  # 90,000 pixels; a.jpg has 192 x 192 = 36,864
    before = snapshot(tmp_path)
    code, line = run_cli(["data", "check", ann, "--images", folder, "--max-pixels", "40000"], capsys)
    assert code == 1 and "over the pixel limit" in line and "b.jpg" in line
    assert "IKD_MAX_IMAGE_PIXELS" not in os.environ  # the option does not outlive the command
    (folder / "b.jpg").write_bytes((folder / "b.jpg").read_bytes()[:300])  # truncated
    before = snapshot(tmp_path)
    code, line = run_cli(["data", "check", ann, "--images", folder], capsys)
    assert code == 1 and "corrupt" in line and "b.jpg" in line
    code, line = run_cli(["data", "check", ann, "--images", folder, "--quick"], capsys)
    assert code == 1
    assert snapshot(tmp_path) == before
    # training stops at the same image with one line, also through DataLoader workers
    from ikd_edu.data.coco import TopDownCocoDataset

    ds = TopDownCocoDataset(ann, folder, input_size=(64, 64), heatmap_size=(16, 16))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    with pytest.raises(UserError) as info:
        next(iter(loader))
    message = user_message(info.value)
    assert "b.jpg" in message and "Traceback" not in message and "\n" not in message


# ---------------------------------------------------------------------------------------
# 8. deep JSON, 9. arguments, 10. IKD_DEBUG
# ---------------------------------------------------------------------------------------
def test_deep_json_is_one_line(synthetic_root, tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    ann = synthetic_root / "annotations" / "person_keypoints_val.json"
    for argv in (["eval", "--ann", ann, "--results", deep], ["eval", "--ann", deep, "--results", deep],
                 ["data", "check", deep]):
        code, line = run_cli(argv, capsys)
        assert code == 2 and "nested too deeply" in line and str(deep) in line


def test_bad_arguments(synthetic_root, tmp_path, capsys):
    for argv, word in (
        (["app", "--input", "0x0", "--no-wait"], "out of range"),
        (["app", "--input", "100000x100000", "--no-wait"], "out of range"),
        (["app", "--input", "130x96", "--no-wait"], "multiples of 32"),
        (["app", "--input", "big", "--no-wait"], "HxW"),
        (["app", "--heatmap-joint", "99", "--no-wait"], "0..16"),
        (["app", "--heatmap-joint", "-1", "--no-wait"], "0..16"),
        (["profile", "--input", "100000x100000", "--no-latency"], "out of range"),
        (["train", "teacher", "--preset", "quick", "--set", "data.input_size=100000x100000",
          "--set", "data.heatmap_size=25000x25000", "--out", tmp_path / "r"], "out of range"),
    ):
        code, line = run_cli(argv, capsys)
        assert code == 2 and word in line, (argv, line)
    assert not (tmp_path / "r").exists()


def test_debug_shows_the_traceback_too(tmp_path, capsys, monkeypatch):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    ann = tmp_path / "ann.json"
    ann.write_text("{")
    assert main(["eval", "--ann", str(ann), "--results", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setenv("IKD_DEBUG", "1")
    assert main(["eval", "--ann", str(ann), "--results", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("ikd-edu: error: ")


def test_unexpected_errors_say_internal_error(capsys, monkeypatch):
    import ikd_edu.evaluate as E

    monkeypatch.setattr(E, "cli_main", lambda args: {}["boom"])
    assert main(["eval", "--ann", "a", "--results", "b"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ikd-edu: internal error: KeyError") and "IKD_DEBUG=1" in err and "Traceback" not in err


def test_short_keypoint_list_is_skipped_and_counted_not_broadcast(synthetic_root, tmp_path):
    """A person with 50 keypoint numbers instead of 51: left out of training and counted, no broadcast error."""
    import json
    import shutil

    from ikd_edu.data.coco import TopDownCocoDataset

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    ann = root / "annotations" / "person_keypoints_train.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-1]
    ann.write_text(json.dumps(data))
    full = TopDownCocoDataset(ann_file=synthetic_root / "annotations" / "person_keypoints_train.json",
                              image_dir=synthetic_root / "train", input_size=(128, 96), heatmap_size=(32, 24))
    short = TopDownCocoDataset(ann_file=ann, image_dir=root / "train", input_size=(128, 96), heatmap_size=(32, 24))
    assert len(short) == len(full) - 1
    assert short.persons.problems["wrong keypoint count (expected 51 numbers)"] == 1
    item = short[0]  # every remaining item is whole
    assert item["heatmaps"].shape == (17, 32, 24) and item["target_weight"].shape == (17,)
