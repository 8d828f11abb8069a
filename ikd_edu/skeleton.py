"""Skeleton metadata: the one home for joint names, flip pairs, edges, OKS sigmas, colours.

Everything else (codec flip-back, augmentation, evaluation, visualisation, FiftyOne)
imports from here; nothing re-types these lists.

Joint indices are 0-based. COCO's JSON files store the skeleton 1-based; we convert once
here (``COCO.edges``) and convert back only when writing a COCO ``categories`` entry
(:func:`coco_category`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Colours (RGB in 0..1) by body side: left and right must be told apart at a glance.
LEFT_COLOUR = (0.12, 0.47, 0.71)  # blue
RIGHT_COLOUR = (1.00, 0.50, 0.05)  # orange
CENTRE_COLOUR = (0.17, 0.63, 0.17)  # green


@dataclass(frozen=True)
class Skeleton:
    """Joint layout of one dataset.

    Attributes:
        name: ``"coco"`` or ``"mpii"``.
        joints: K joint names, index = channel of the heatmap.
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        edges: (a, b) index pairs drawn as limbs.
        sigmas: K per-joint OKS constants (COCO's sigmas / 10 as used by pycocotools),
            or None where the dataset defines no OKS (MPII uses PCKh).
        upper_body: joints counted as "upper body" by the half-body augmentation (HRNet's
            ``upper_body_ids``); None = the first K // 2 (see :attr:`upper_body_joints`).
    """

    name: str
    joints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    edges: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] | None = None
    upper_body: tuple[int, ...] | None = None
    _flip_index: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index = list(range(len(self.joints)))
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        object.__setattr__(self, "_flip_index", tuple(index))

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def upper_body_joints(self) -> tuple[int, ...]:
        """The half-body augmentation's upper-body joints: :attr:`upper_body`, else the first K // 2."""
        return self.upper_body if self.upper_body is not None else tuple(range(self.num_joints // 2))

    @property
    def flip_index(self) -> list[int]:
        """Permutation p with ``flipped[:, k] = original[:, p[k]]`` after a horizontal flip."""
        return list(self._flip_index)

    def side(self, joint: int) -> str:
        """``"left"``, ``"right"`` or ``"centre"`` for a joint index (from its name)."""
        name = self.joints[joint]
        if name.startswith(("left", "l_")):
            return "left"
        if name.startswith(("right", "r_")):
            return "right"
        return "centre"

    def joint_colours(self) -> list[tuple[float, float, float]]:
        """RGB colour per joint: left blue, right orange, centre green."""
        table = {"left": LEFT_COLOUR, "right": RIGHT_COLOUR, "centre": CENTRE_COLOUR}
        return [table[self.side(k)] for k in range(self.num_joints)]

    def edge_colours(self) -> list[tuple[float, float, float]]:
        """RGB colour per edge: the side both ends share, else centre."""
        out = []
        for a, b in self.edges:
            sa, sb = self.side(a), self.side(b)
            side = sa if sa == sb else "centre"
            out.append({"left": LEFT_COLOUR, "right": RIGHT_COLOUR, "centre": CENTRE_COLOUR}[side])
        return out

    def sigmas_array(self) -> np.ndarray:
        """OKS sigmas as a float64 array of shape (K,); raises if the dataset has none."""
        if self.sigmas is None:
            raise ValueError(f"the {self.name} skeleton has no OKS sigmas (use PCKh for MPII)")
        return np.asarray(self.sigmas, dtype=np.float64)


COCO = Skeleton(
    name="coco",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # COCO's person_keypoints skeleton, converted from 1-based to 0-based.
    edges=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
        (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
        (3, 5), (4, 6),
    ),
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
    upper_body=tuple(range(11)),  # nose, eyes, ears, shoulders, elbows, wrists
)

MPII = Skeleton(
    name="mpii",
    joints=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
        "l_elbow", "l_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    edges=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15),
    ),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),  # thorax, neck, head, arms
)

SKELETONS = {"coco": COCO, "mpii": MPII}


def get_skeleton(name_or_num_joints: str | int) -> Skeleton:
    """Look a skeleton up by name (``"coco"``, ``"mpii"``) or joint count (17, 16)."""
    if isinstance(name_or_num_joints, int):
        for sk in SKELETONS.values():
            if sk.num_joints == name_or_num_joints:
                return sk
        raise ValueError(f"no skeleton with {name_or_num_joints} joints; known: COCO 17, MPII 16")
    try:
        return SKELETONS[name_or_num_joints.lower()]
    except KeyError:
        raise ValueError(
            f"unknown skeleton {name_or_num_joints!r}; choose one of {sorted(SKELETONS)}"
        ) from None


def coco_category(skeleton: Skeleton = COCO) -> dict:
    """The COCO ``categories`` entry for persons (skeleton written back 1-based)."""
    return {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(skeleton.joints),
        "skeleton": [[a + 1, b + 1] for a, b in skeleton.edges],
    }
