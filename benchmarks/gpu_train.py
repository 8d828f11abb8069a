"""Training throughput of ikd-edu on a GPU: the engine's real loop from JPEGs, the data alone, tensor-only steps.

Four parts, one JSON (and ``--json FILE``):

1. **data only**: training crops/s at the input size from synthetic JPEGs at COCO-like size
   (640x480, 1-4 people each), host pipeline vs device pipeline, ``--workers`` workers
   (``benchmarks/bench_device_pipeline.py``'s two loops);
2. **end to end**: :func:`ikd_edu.train.engine.train` itself - teacher (SimpleBaseline-R50),
   labels-only student (R18 + 3x64 deconvs) and IKD student (logit + feature + structure,
   teacher on the fly) on the same JPEGs, ``data.pipeline=device``, bf16 autocast,
   channels_last, ``run.compile`` with ``--compile``. img/s is steady state: the time
   between the loss read-backs (the loop's sync points, every ``--log-every`` steps) after
   the first one (warm-up and compilation excluded);
3. **tensor only**: the same models and loss on random tensors (no data): teacher step,
   student step, teacher inference (taps), IKD step with the teacher on the fly, IKD step
   with cached teacher outputs (a gather, ``distill.teacher_cache``), peak memory of each;
4. **inference** teacher vs student at batch 1/64/256.

Timing as shared/bench/gpu_anchor.py (CUDA events, warm-up, mean of N), so both run side by
side in one device call::

    python3 benchmarks/gpu_train.py --batch 128 --compile --workers 14 --json gpu_train.json

``--device cpu --tiny`` runs every part at a tiny size on a CPU (the CI smoke test);
figures from a CPU say nothing about a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ikd_edu.distill import IntegralKD, JointsMSELoss  # noqa: E402
from ikd_edu.models import build_model  # noqa: E402
from ikd_edu.profile import count_macs, count_params  # noqa: E402
from ikd_edu.validate import parse_size  # noqa: E402


def bench(fn, device: torch.device, iters: int = 30, warm: int = 10) -> float:
    """Seconds per call of ``fn`` (CUDA events around ``iters`` calls after ``warm`` calls; perf_counter on CPU)."""
    for _ in range(warm):
        fn()
    if device.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) / iters
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / iters


# ---------------------------------------------------------------------------------- 2. end to end
def engine_run(role: str, terms: str, a, root: Path, out: Path, teacher_ckpt: str = "") -> dict:
    """One :func:`ikd_edu.train.engine.train` run; steady-state img/s between the loss read-backs."""
    from ikd_edu.train import engine as E
    from ikd_edu.train.config import load_config

    stamps: list[tuple[int, float]] = []
    original = E.RunLog.csv_row

    def timed_row(self, name, row):  # written right after the loop's sync point (flush_losses)
        if name == "metrics.csv":
            stamps.append((int(row["step"]), time.perf_counter()))
        return original(self, name, row)

    H, W = a.input_hw
    over = [
        "data.dataset=synthetic", f"data.root={root}", f"data.synthetic_images={a.images}",
        "data.synthetic_val_images=2", f"data.synthetic_image_size={a.image_hw[0]},{a.image_hw[1]}",
        f"data.input_size={H},{W}", f"data.heatmap_size={H // 4},{W // 4}", f"data.num_workers={a.workers}",
        "data.train_ann=annotations/person_keypoints_train.json", "data.train_images=train",
        "data.val_ann=annotations/person_keypoints_val.json", "data.val_images=val",
        "data.pipeline=device", "data.val_subset=1", "model.pretrained=", f"model.teacher={a.teacher}",
        f"model.student={a.student}", f"optim.batch_size={a.batch}", f"optim.steps={a.steps}",
        f"run.log_every={a.log_every}", "run.eval_every=0", "run.ckpt_every=0", "run.tensorboard=false",
        "run.progress=off", "run.resume=off", f"run.compile={str(a.compile).lower()}", f"run.device={a.device}",
        f"run.out_dir={out}", "run.eval_batch_size=8", "run.magnitude_batches=0",
    ]
    if role == "student":
        over += [f"distill.terms={terms}"] + ([f"model.teacher_checkpoint={teacher_ckpt}"] if teacher_ckpt else [])
    cfg = load_config("coco-r50-256x192", over, role=role, check_files=False)
    E.RunLog.csv_row = timed_row
    try:
        summary = E.train(cfg)
    finally:
        E.RunLog.csv_row = original
    res = {"steps": summary["steps"], "train_s": summary["train_s"]}
    if len(stamps) >= 2:
        (s0, t0), (s1, t1) = stamps[0], stamps[-1]
        res["img_s"] = round((s1 - s0) * a.batch / (t1 - t0), 1)
    return res


# ---------------------------------------------------------------------------------- 3./4. tensors
def tensor_only(a, device: torch.device) -> dict:
    H, W = a.input_hw
    B, K = a.batch, 17
    res: dict = {}
    amp = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if device.type == "cuda" else \
        (lambda: torch.autocast("cpu", enabled=False))
    cl = torch.channels_last
    teacher = build_model(a.teacher, num_joints=K).to(device, memory_format=cl)
    student = build_model(a.student, num_joints=K).to(device, memory_format=cl)
    res["teacher_mparams"] = round(count_params(teacher) / 1e6, 2)
    res["student_mparams"] = round(count_params(student) / 1e6, 2)
    res["teacher_gmacs"] = round(count_macs(teacher.eval(), (H, W)) / 1e9, 3)
    res["student_gmacs"] = round(count_macs(student.eval(), (H, W)) / 1e9, 3)
    frozen = build_model(a.teacher, num_joints=K).to(device, memory_format=cl).eval()
    frozen.requires_grad_(False)
    kd = IntegralKD.for_models(student, frozen).to(device, memory_format=cl)
    gt_loss = JointsMSELoss()
    x = torch.randn(B, 3, H, W, device=device).contiguous(memory_format=cl)
    target = torch.rand(B, K, H // 4, W // 4, device=device)
    weight = torch.ones(B, K, device=device)
    progress = torch.zeros((), device=device)
    t_opt = torch.optim.Adam(teacher.parameters(), 1e-3)
    s_opt = torch.optim.Adam(list(student.parameters()) + list(kd.parameters()), 1e-3)
    t_fwd, s_fwd, f_fwd = teacher, student, frozen
    s_taps = lambda inp: student.forward_taps(inp, kd.required_taps)  # noqa: E731
    f_taps = lambda inp: frozen.forward_taps(inp, kd.required_teacher_taps)  # noqa: E731
    with torch.no_grad():  # what TeacherCache.lookup returns: stored outputs gathered per crop
        cached = {k: v.detach().to(torch.float16).float() for k, v in f_taps(x).items()}

    def teacher_step():
        with autocast():
            loss = gt_loss(t_fwd(x).float(), target, weight)
        t_opt.zero_grad(set_to_none=True)
        loss.backward()
        t_opt.step()

    def student_step():
        with autocast():
            loss = gt_loss(s_fwd(x).float(), target, weight)
        s_opt.zero_grad(set_to_none=True)
        loss.backward()
        s_opt.step()

    def teacher_infer_step():
        with torch.no_grad(), autocast():
            f_taps(x)

    def ikd_step(t_taps=None):
        with autocast():
            if t_taps is None:
                with torch.no_grad():
                    t_taps = f_taps(x)
            losses = kd(s_taps(x), t_taps, target, weight, progress)
        s_opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        s_opt.step()

    if a.compile:
        t0 = time.time()
        t_fwd, s_fwd = torch.compile(teacher), torch.compile(student)
        s_taps, f_taps = torch.compile(s_taps), torch.compile(f_taps)
        teacher_step(); student_step(); ikd_step(); teacher_infer_step()  # noqa: E702
        if device.type == "cuda":
            torch.cuda.synchronize()
        res["compile_s"] = round(time.time() - t0, 1)
    teacher.train(); student.train()  # noqa: E702
    for name, fn in [("teacher_train", teacher_step), ("student_train", student_step),
                     ("teacher_infer_taps", teacher_infer_step), ("ikd_train", ikd_step),
                     ("ikd_cached_teacher_train", lambda: ikd_step(cached))]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        res[name + "_img_s"] = round(B / bench(fn, device, a.iters, a.warm), 1)
        if device.type == "cuda":
            res[name + "_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    plain_plus_teacher = 1 / (1 / res["student_train_img_s"] + 1 / res["teacher_infer_taps_img_s"])
    res["ikd_cost_over_student_plus_teacher_infer"] = round(plain_plus_teacher / res["ikd_train_img_s"], 3)
    res["ikd_cost_over_student_step"] = round(res["student_train_img_s"] / res["ikd_train_img_s"], 3)

    teacher.eval(); student.eval()  # noqa: E702
    f_inf = torch.compile(frozen) if a.compile else f_fwd
    for bi in a.infer_batches:
        xi = torch.randn(bi, 3, H, W, device=device).contiguous(memory_format=cl)
        for name, m in [("teacher", f_inf), ("student", s_fwd)]:
            def infer(m=m, xi=xi):
                with torch.no_grad(), autocast():
                    m(xi)
            res[f"{name}_infer_b{bi}_img_s"] = round(bi / bench(infer, device, a.iters if bi > 1 else 3 * a.iters,
                                                                 a.warm), 1)
        res[f"student_over_teacher_infer_b{bi}"] = round(
            res[f"student_infer_b{bi}_img_s"] / res[f"teacher_infer_b{bi}_img_s"], 2)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny: the CI smoke test)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: 128x96 images, 64x64 crops, quick models")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--input", default="256x192")
    ap.add_argument("--image-size", default="480x640", help="synthetic JPEG H x W (COCO-like)")
    ap.add_argument("--images", type=int, default=2000, help="synthetic training images for parts 1-2")
    ap.add_argument("--workers", type=int, default=min(14, os.cpu_count() or 1))
    ap.add_argument("--steps", type=int, default=60, help="engine steps per run (part 2)")
    ap.add_argument("--log-every", type=int, default=20, help="engine loss read-back interval = timing interval")
    ap.add_argument("--teacher", default="simplebaseline-r50")
    ap.add_argument("--student", default="student")
    ap.add_argument("--compile", action="store_true", help="torch.compile (run.compile for the engine)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: data,engine,tensor")
    ap.add_argument("--data", help="an existing synthetic root with these settings (else generated)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    if a.tiny:
        a.batch, a.input, a.image_size, a.images, a.steps, a.log_every = 4, "64x64", "128x96", 6, 4, 2
        a.teacher, a.student, a.workers = "quick-teacher", "quick-student", min(a.workers, 1)
    a.iters, a.warm = (2, 1) if a.tiny else (30, 10)
    a.infer_batches = (1, 4) if a.tiny else (1, 64, 256)
    a.input_hw = parse_size(a.input, "--input")
    a.image_hw = parse_size(a.image_size, "--image-size")
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_train.py: no CUDA device found; run with --device cpu --tiny for the smoke test, or see "
              "benchmarks/bench_distill.py for CPU figures.")
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    res: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                 "torch": torch.__version__, "batch": a.batch, "input": a.input, "image_size": a.image_size,
                 "compile": a.compile, "workers": a.workers, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.data) if a.data else Path(tmp) / "synthetic"
        if not (skip >= {"data", "engine"}):
            from ikd_edu.data.synthetic import ensure_synthetic

            t0 = time.time()
            ensure_synthetic(root, a.images, seed=0, val_images=2, image_size=a.image_hw, progress=False)
            res["synthetic_s"] = round(time.time() - t0, 1)
        if "data" not in skip:
            from bench_device_pipeline import device_crops_per_s, host_crops_per_s

            from ikd_edu.data.coco import TopDownCocoDataset

            H, W = a.input_hw
            ds = TopDownCocoDataset(root / "annotations/person_keypoints_train.json", root / "train",
                                    input_size=(H, W), heatmap_size=(H // 4, W // 4), train=True)
            epochs = 1 if len(ds) >= 4 * a.batch else 2
            res["data_host_crops_s"] = round(host_crops_per_s(ds, a.workers, a.batch, epochs, device), 1)
            res["data_device_crops_s"] = round(device_crops_per_s(ds, a.workers, a.batch, epochs, device)[0], 1)
            print(json.dumps({k: res[k] for k in ("data_host_crops_s", "data_device_crops_s")}), flush=True)
        if "engine" not in skip:
            runs = Path(tmp) / "runs"
            teacher = engine_run("teacher", "", a, root, runs / "teacher")
            res["e2e_teacher"] = teacher
            res["e2e_student"] = engine_run("student", "none", a, root, runs / "student")
            res["e2e_ikd"] = engine_run("student", "all", a, root, runs / "ikd",
                                        teacher_ckpt=str(runs / "teacher" / "best.pt"))
            print(json.dumps({k: res[k] for k in ("e2e_teacher", "e2e_student", "e2e_ikd")}), flush=True)
        if "tensor" not in skip:
            res.update(tensor_only(a, device))
    if "ikd_train_img_s" in res and "img_s" in res.get("e2e_ikd", {}):
        res["e2e_over_tensor_only_ikd"] = round(res["e2e_ikd"]["img_s"] / res["ikd_train_img_s"], 3)
    from bench_device_pipeline import report

    report(res, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
