"""GPU throughput of ikd-edu's own models and IntegralKD loss, tensor-only (no data loading).

Prints img/s for (a) teacher training, (b) plain student training, (c) student with all three
distillation terms (teacher forward under inference_mode in the same autocast), (d) inference
teacher vs student at batch 1/64/256, plus peak GPU memory per step and the ratios the GPU issue
asks for. Same timing method as shared/bench/gpu_anchor.py (CUDA events, warm-up, mean of N),
so the two can run side by side in one device call:

    python3 benchmarks/gpu_train.py --batch 128 [--compile] [--json out.json]

Needs a CUDA device; exits with a message otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ikd_edu.distill import IntegralKD, JointsMSELoss
from ikd_edu.models import build_model
from ikd_edu.profile import count_macs, count_params
from ikd_edu.validate import parse_size


def bench(fn, iters: int = 30, warm: int = 10) -> float:
    """Seconds per call of ``fn`` (CUDA events around ``iters`` calls after ``warm`` calls)."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / iters


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--input", default="256x192")
    ap.add_argument("--teacher", default="teacher-r50")
    ap.add_argument("--student", default="student")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models (compile time reported)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_train.py needs a CUDA device (none found); see benchmarks/bench_distill.py for CPU figures.")
        return 2
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = torch.device("cuda")
    H, W = parse_size(a.input, "--input")
    B, K = a.batch, 17
    amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    res: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": B, "input": a.input,
                 "compile": a.compile, "amp": str(amp)}

    cl = torch.channels_last
    teacher = build_model(a.teacher, num_joints=K).to(dev, memory_format=cl)
    student = build_model(a.student, num_joints=K).to(dev, memory_format=cl)
    res["teacher_mparams"] = round(count_params(teacher) / 1e6, 2)
    res["student_mparams"] = round(count_params(student) / 1e6, 2)
    res["teacher_gmacs"] = round(count_macs(teacher.eval(), (H, W)) / 1e9, 3)
    res["student_gmacs"] = round(count_macs(student.eval(), (H, W)) / 1e9, 3)
    frozen = build_model(a.teacher, num_joints=K).to(dev, memory_format=cl).eval()
    frozen.requires_grad_(False)
    kd = IntegralKD.for_models(student, frozen).to(dev, memory_format=cl)
    gt_loss = JointsMSELoss()

    x = torch.randn(B, 3, H, W, device=dev).contiguous(memory_format=cl)
    target = torch.rand(B, K, H // 4, W // 4, device=dev)
    weight = torch.ones(B, K, device=dev)
    t_opt = torch.optim.Adam(teacher.parameters(), 1e-3)
    s_opt = torch.optim.Adam(list(student.parameters()) + list(kd.parameters()), 1e-3)
    autocast = lambda: torch.autocast("cuda", dtype=amp)  # noqa: E731

    t_fwd, s_fwd, f_fwd = teacher, student, frozen
    s_taps = lambda inp: student.forward_taps(inp, kd.required_taps)  # noqa: E731
    f_taps = lambda inp: frozen.forward_taps(inp, kd.required_teacher_taps)  # noqa: E731

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
        with torch.inference_mode(), autocast():
            f_taps(x)

    def ikd_step():
        with autocast():
            with torch.inference_mode():
                t = f_taps(x)
            t = {k: v.clone() for k, v in t.items()}  # inference tensors -> normal tensors for autograd
            losses = kd(s_taps(x), t, target, weight)
        s_opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        s_opt.step()

    if a.compile:
        t0 = time.time()
        t_fwd, s_fwd = torch.compile(teacher), torch.compile(student)
        s_taps = torch.compile(s_taps)
        f_taps = torch.compile(f_taps)
        teacher_step(); student_step(); ikd_step(); teacher_infer_step()  # noqa: E702
        torch.cuda.synchronize()
        res["compile_s"] = round(time.time() - t0, 1)

    teacher.train(); student.train()  # noqa: E702
    for name, fn in [("teacher_train", teacher_step), ("student_train", student_step),
                     ("teacher_infer_taps", teacher_infer_step), ("ikd_train", ikd_step)]:
        torch.cuda.reset_peak_memory_stats()
        dt = bench(fn)
        res[name + "_img_s"] = round(B / dt, 1)
        res[name + "_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    plain_plus_teacher = 1 / (1 / res["student_train_img_s"] + 1 / res["teacher_infer_taps_img_s"])
    res["ikd_cost_over_student_plus_teacher_infer"] = round(plain_plus_teacher / res["ikd_train_img_s"], 3)
    res["ikd_cost_over_student_step"] = round(res["student_train_img_s"] / res["ikd_train_img_s"], 3)

    teacher.eval(); student.eval()  # noqa: E702
    for bi in (1, 64, 256):
        xi = torch.randn(bi, 3, H, W, device=dev).contiguous(memory_format=cl)
        for name, m in [("teacher", f_fwd if not a.compile else torch.compile(frozen)), ("student", s_fwd)]:
            def infer(m=m, xi=xi):
                with torch.inference_mode(), autocast():
                    m(xi)
            res[f"{name}_infer_b{bi}_img_s"] = round(bi / bench(infer, iters=30 if bi > 1 else 100), 1)
        res[f"student_over_teacher_infer_b{bi}"] = round(
            res[f"student_infer_b{bi}_img_s"] / res[f"teacher_infer_b{bi}_img_s"], 2)
    print(json.dumps(res, indent=1))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
