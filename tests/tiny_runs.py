"""Tiny CPU training runs for the engine tests: seconds-long configs and a tiny teacher checkpoint."""
from __future__ import annotations

import torch

TINY_TEACHER = "{widths: [8, 8, 16, 16], blocks: [1, 1, 1, 1], deconv_channels: 16}"
TINY_STUDENT = "{widths: [8, 8, 8, 16], blocks: [1, 1, 1, 1], deconv_channels: 8}"


def tiny(root, out, steps=4, batch=8, **extra) -> list[str]:
    """Overrides for a seconds-long CPU run on the session's small synthetic set."""
    sets = {
        "data.dataset": "coco", "data.root": str(root), "data.input_size": "64x64", "data.heatmap_size": "16x16",
        "data.num_workers": 0, "model.teacher_options": TINY_TEACHER, "model.student_options": TINY_STUDENT,
        "optim.steps": steps, "optim.batch_size": batch, "optim.schedule": "constant", "run.out_dir": str(out),
        "run.log_every": 1, "run.eval_every": 1000, "run.ckpt_every": 2, "run.tensorboard": "false",
        "run.progress": "off", "run.deterministic": "true", "run.eval_batch_size": 16,
    }
    sets.update(extra)
    return [f"{k}={v}" for k, v in sets.items()]


def make_teacher_checkpoint(path):
    from ikd_edu.models import build_model

    torch.manual_seed(0)
    model = build_model("quick-teacher", widths=[8, 8, 16, 16], blocks=[1, 1, 1, 1], deconv_channels=16)
    torch.save(model.state_dict(), path)
    return path
