"""ikd-edu: Integral Knowledge Distillation for multi-person pose estimation, as a course.

Package map (data flows one way, top to bottom):

    skeleton.py   joint names, flip pairs, edges, OKS sigmas, colours
    geometry.py   box -> center/scale, affine crop matrices, mapping back
    data/         COCO / MPII / synthetic datasets, augmentation, dataset check
    codec.py      keypoints <-> heatmaps, flip-back
    models/       SimpleBaseline teacher, students, feature taps, checkpoint loading
    distill/      logit, feature, structure distillation and their integral sum
    train/        configs, training engine, distributed helpers
    evaluate.py   COCO AP via pycocotools, PCKh, per-instance OKS
    profile.py    params, true MACs, latency
    viz/ explain.py browse.py course.py cli.py   sit on top; nothing below imports them
"""
import os as _os

__version__ = "0.1.0"

# libgomp (torch's CPU threads) busy-waits between parallel regions by default; on shared or
# busy cores that makes every op wait for descheduled spinning threads. Measured on 2 cores at
# load 6: quick-student forward, batch 32, 2 threads: 1.5 s active vs 0.12 s passive (1 thread:
# 0.11 s). Only takes effect when ikd_edu is imported before torch; an explicit setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
