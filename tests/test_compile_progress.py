"""The decayed distillation weights do not recompile a compiled training step (graphs counted)."""
from __future__ import annotations

import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter

from ikd_edu.distill import IntegralKD
from ikd_edu.models import build_model
from ikd_edu.train import engine as E


def _compiled_steps(as_tensor: bool, steps: int = 4) -> int:
    """Graphs compiled for ``steps`` training steps of a tiny IKD student with a linear decay.

    With ``specialize_float=True``, torch 2.4-2.5's default (config.patch restores it afterwards).
    """
    with torch._dynamo.config.patch(specialize_float=True):
        return _count_graphs(as_tensor, steps)


def _count_graphs(as_tensor: bool, steps: int) -> int:
    torch._dynamo.reset()
    torch.manual_seed(0)
    student = build_model("quick-student", num_joints=17)
    teacher = build_model("quick-student", num_joints=17).eval().requires_grad_(False)
    kd = IntegralKD.for_models(student, teacher, terms=("logit", "feature", "structure"), decay="linear",
                               feature_tap="layer4", structure_tap="layer4")
    s_taps, t_taps = E.required_taps(kd)
    counter = CompileCounter()
    module = torch.compile(E.TrainModule(student, kd, s_taps), backend=counter)
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)
    x, target, weight = torch.randn(2, 3, 64, 64), torch.rand(2, 17, 16, 16), torch.ones(2, 17)
    step_t, scale = torch.zeros(()), 1.0 / max(steps - 1, 1)
    for step in range(steps):
        progress = E.training_progress(step_t, steps) if as_tensor else step * scale
        with torch.no_grad():
            teacher_taps = teacher.forward_taps(x, t_taps)
        losses = module(x, target, weight, teacher_taps, progress)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        step_t += 1
    torch._dynamo.reset()
    return counter.frame_count


def test_progress_tensor_compiles_once_float_would_recompile():
    before = torch._dynamo.config.specialize_float
    once = _compiled_steps(as_tensor=True)
    assert once == _compiled_steps(as_tensor=True, steps=2)  # independent of the number of steps
    # the control: a Python float progress is a new constant every step (the bug on torch 2.4-2.5)
    assert _compiled_steps(as_tensor=False) > once
    assert torch._dynamo.config.specialize_float == before  # restored for the tests that follow


def test_progress_tensor_gives_the_float_decay():
    from ikd_edu.distill.integral import decay_factor

    for schedule in ("linear", "cosine", "none"):
        for p in (0.0, 0.3, 1.0):
            assert abs(float(decay_factor(torch.tensor(p), schedule)) - decay_factor(p, schedule)) < 1e-6


def test_uncompiled_run_passes_the_exact_float_progress(synthetic_root, tmp_path, monkeypatch):
    """Without run.compile the loss gets ``step / (total - 1)`` as a Python float, as before the tensor:
    float32 ``step * scale`` and ``torch.cos`` differ from it (and ``math.cos``) in the last bits,
    which changed the weights of a decayed run on the CPU."""
    from tiny_runs import make_teacher_checkpoint, tiny

    from ikd_edu.train.config import load_config

    seen = []
    forward = IntegralKD.forward

    def spy(self, *args, **kwargs):
        seen.append(args[4] if len(args) > 4 else kwargs.get("progress"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(IntegralKD, "forward", spy)
    ckpt = make_teacher_checkpoint(tmp_path / "teacher.pt")
    cfg = load_config("quick", tiny(synthetic_root, tmp_path / "s", steps=4, **{
        "distill.terms": "[logit]", "distill.decay": "cosine", "model.teacher_checkpoint": ckpt}))
    E.train(cfg)
    assert seen == [0.0, 1 / 3, 2 / 3, 1.0] and all(type(p) is float for p in seen)


def test_compiled_run_compiles_the_on_the_fly_teacher_and_feeds_a_progress_tensor(synthetic_root, tmp_path,
                                                                                   monkeypatch):
    """``run.compile``: the student with its loss *and* the teacher's forward_taps; the decay gets a 0-d tensor."""
    from tiny_runs import make_teacher_checkpoint, tiny

    from ikd_edu.train.config import load_config

    compiled, seen = [], []
    real_compile = torch.compile

    def eager_compile(fn, **kwargs):  # dynamo's eager backend: the same graphs, no C++ toolchain needed
        compiled.append(getattr(fn, "__name__", type(fn).__name__))
        return real_compile(fn, backend="eager")

    forward = IntegralKD.forward

    def spy(self, *args, **kwargs):
        seen.append(args[4] if len(args) > 4 else kwargs.get("progress"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    monkeypatch.setattr(IntegralKD, "forward", spy)
    torch._dynamo.reset()
    ckpt = make_teacher_checkpoint(tmp_path / "teacher.pt")
    cfg = load_config("quick", tiny(synthetic_root, tmp_path / "s", steps=3, **{
        "distill.terms": "[logit,feature]", "distill.decay": "linear", "distill.teacher_cache": "false",
        "model.teacher_checkpoint": ckpt, "run.compile": "true"}))
    summary = E.train(cfg)
    torch._dynamo.reset()
    assert compiled == ["TrainModule", "forward_taps"]  # the student + loss, then the on-the-fly teacher
    assert summary["steps"] == 3 and all(isinstance(p, torch.Tensor) and p.dim() == 0 for p in seen)
    assert [round(float(p), 6) for p in seen] == [0.0, 0.5, 1.0]
