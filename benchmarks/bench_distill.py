"""What each distillation term costs on top of a plain student training step (256x192).

Usage: python benchmarks/bench_distill.py [--batch 8] [--repeats 5] [--loss-reps 30] [--device cpu|cuda|all]
                                          [--student student] [--teacher teacher-r50] [--amp]

One training step = forward + loss + backward + Adam step of the student (and of the KD
adapter). Configurations, run round-robin (one step of each per round, so slow drifts of a
shared machine hit all of them alike), median over ``--repeats`` rounds after one warm-up:

    plain            student step with the ground-truth loss only
    +teacher         plain + the teacher's forward under no_grad (taps: layer4, heatmaps)
    +logit ...       plain + teacher + one IKD term (IntegralKD defaults)
    +all             plain + teacher + logit + feature + structure

Columns: ms per step, % over *plain*, % over *plain + teacher*, for the median and for the
minimum over rounds (on a busy shared CPU the minimum is the steadier estimate: other
processes only ever add time). The loss-only table times
each term's forward + backward on fixed tensors of the real shapes (no network), which is
the term's own cost without the noise of a whole training step. Defaults: batch 8 on CPU,
64 on CUDA (``--amp``: bf16 autocast on CUDA).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ikd_edu.distill import IntegralKD  # noqa: E402
from ikd_edu.models import build_model  # noqa: E402

INPUT = (256, 192)
CONFIGS: dict[str, tuple[bool, tuple[str, ...]]] = {  # name -> (teacher forward?, terms)
    "plain": (False, ()),
    "+teacher": (True, ()),
    "+logit": (True, ("logit",)),
    "+feature": (True, ("feature",)),
    "+structure": (True, ("structure",)),
    "  (affinity)": (True, ("affinity",)),
    "  (relation)": (True, ("relation",)),
    "+all": (True, ("logit", "feature", "structure")),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(student, teacher, terms, use_teacher, x, target, weight, device, amp):
    kd = IntegralKD.for_models(student, teacher, terms=terms).to(device).train()
    params = list(student.parameters()) + list(kd.parameters())
    opt = torch.optim.Adam(params, lr=1e-4)
    teacher_taps = ("layer4", "heatmaps") if use_teacher else ()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            t = {}
            if use_teacher:
                with torch.no_grad():
                    t = teacher.forward_taps(x, teacher_taps)
            s = student.forward_taps(x, kd.required_taps)
            losses = kd(s, t, target, weight)
        losses["total"].backward()
        opt.step()

    return step


def bench_steps(device: torch.device, batch: int, repeats: int, student_name: str, teacher_name: str, amp: bool):
    torch.manual_seed(0)
    student = build_model(student_name).to(device).train()
    teacher = build_model(teacher_name).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, 3, *INPUT, device=device)
    h, w = INPUT[0] // 4, INPUT[1] // 4
    target = torch.rand(batch, student.num_joints, h, w, device=device)
    weight = torch.ones(batch, student.num_joints, device=device)
    steps = {name: make_step(student, teacher, terms, use_t, x, target, weight, device, amp)
             for name, (use_t, terms) in CONFIGS.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(repeats + 1):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            if round_ > 0:  # round 0 is the warm-up
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}, times


def bench_losses(device: torch.device, batch: int, student_name: str, teacher_name: str, reps: int = 30):
    """Forward + backward of each term alone on fixed tensors with the real tap shapes."""
    student, teacher = build_model(student_name), build_model(teacher_name)
    h, w = INPUT[0] // 4, INPUT[1] // 4
    k = student.num_joints
    taps_s = {"layer4": torch.randn(batch, student.tap_channels("layer4"), INPUT[0] // 32, INPUT[1] // 32),
              "deconv3": torch.randn(batch, student.tap_channels("deconv3"), h, w),
              "heatmaps": torch.rand(batch, k, h, w)}
    taps_t = {"layer4": torch.randn(batch, teacher.tap_channels("layer4"), INPUT[0] // 32, INPUT[1] // 32),
              "deconv3": torch.randn(batch, teacher.tap_channels("deconv3"), h, w),
              "heatmaps": torch.rand(batch, k, h, w)}
    taps_s = {n: v.to(device).requires_grad_(True) for n, v in taps_s.items()}
    taps_t = {n: v.to(device) for n, v in taps_t.items()}
    target, weight = torch.rand(batch, k, h, w, device=device), torch.ones(batch, k, device=device)
    cases = {
        "gt only": dict(terms=()),
        "logit": dict(terms=("logit",)),
        "feature (layer4, l2)": dict(terms=("feature",)),
        "affinity (layer4 8x6)": dict(terms=("affinity",)),
        "affinity (deconv3 64x48 -> auto 16x12)": dict(terms=("affinity",), structure_tap="deconv3"),
        "affinity (deconv3, pool=None, P=3072)": dict(terms=("affinity",), structure_tap="deconv3", pool=None),
        "relation (heatmaps)": dict(terms=("relation",)),
        "all (defaults)": dict(terms=("logit", "feature", "structure")),
    }
    out = {}
    for name, kwargs in cases.items():
        kd = IntegralKD.for_models(student, teacher, **kwargs).to(device)
        samples = []
        for i in range(reps + 2):
            sync(device)
            start = time.perf_counter()
            kd(taps_s, taps_t, target, weight)["total"].backward()
            sync(device)
            if i >= 2:
                samples.append((time.perf_counter() - start) * 1e3)
            for v in taps_s.values():
                v.grad = None
        out[name] = (statistics.median(samples), min(samples))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 64 on CUDA")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--student", default="student")
    parser.add_argument("--teacher", default="teacher-r50")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    parser.add_argument("--loss-reps", type=int, default=30, help="timed repetitions per loss-only row")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    for dev in devices:
        device = torch.device(dev)
        batch = args.batch or (8 if dev == "cpu" else 64)
        threads = f", {torch.get_num_threads()} threads" if dev == "cpu" else f", {torch.cuda.get_device_name()}"
        print(f"\n== {dev}{threads}: {args.student} student, {args.teacher} teacher, batch {batch}, "
              f"{INPUT[0]}x{INPUT[1]}, median of {args.repeats} rounds{' (bf16)' if args.amp and dev == 'cuda' else ''}")
        med, raw = bench_steps(device, batch, args.repeats, args.student, args.teacher, args.amp)
        low = {name: min(v) for name, v in raw.items()}

        def pct(stats, name, base):
            return "" if name == base else f"{100 * (stats[name] - stats[base]) / stats[base]:+.1f} %"

        print(f"{'config':<14} {'median ms':>10} {'% plain':>9} {'% pl+teacher':>13} | {'min ms':>8} "
              f"{'% plain':>9} {'% pl+teacher':>13} | max ms")
        for name in med:
            print(f"{name:<14} {med[name]:10.1f} {pct(med, name, 'plain'):>9} {pct(med, name, '+teacher'):>13} | "
                  f"{low[name]:8.1f} {pct(low, name, 'plain'):>9} {pct(low, name, '+teacher'):>13} | "
                  f"{max(raw[name]):.0f}")
        print("\nloss only (forward + backward of the term on fixed tensors of the real shapes), median / min:")
        loss_ms = bench_losses(device, batch, args.student, args.teacher, reps=args.loss_reps)
        for name, (m, lo) in loss_ms.items():
            print(f"  {name:<40} {m:8.2f} / {lo:8.2f} ms  = {100 * m / med['plain']:6.2f} / "
                  f"{100 * lo / low['plain']:6.2f} % of a plain student step")
        default_struct = ("affinity (layer4 8x6)", "relation (heatmaps)")
        loss_med = sum(loss_ms[n][0] for n in default_struct)
        loss_min = sum(loss_ms[n][1] for n in default_struct)
        print(f"\nstructure term (default: affinity on layer4 + joint relations), target <= 15 % of plain:")
        print(f"  whole-step difference (+structure) - (+teacher): median {pct(med, '+structure', '+teacher')} "
              f"of plain+teacher = {100 * (med['+structure'] - med['+teacher']) / med['plain']:+.1f} % of plain; "
              f"min {100 * (low['+structure'] - low['+teacher']) / low['plain']:+.1f} % of plain")
        print(f"  loss only: median {loss_med:.2f} ms = {100 * loss_med / med['plain']:.2f} % of plain; "
              f"min {loss_min:.2f} ms = {100 * loss_min / low['plain']:.2f} % of plain")

if __name__ == "__main__":
    main()
