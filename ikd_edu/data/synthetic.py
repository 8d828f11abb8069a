"""A built-in, offline, multi-person pose dataset: articulated stick figures in COCO format.

Why it exists: the course must run end-to-end on a laptop CPU in minutes, without
downloading COCO. The images are small (192 x 192 by default) but keep what makes
multi-person pose estimation hard: several people of very different sizes, people that
overlap (joints hidden behind a nearer person are labelled ``v=1``), people cut by the
image border (joints outside the image are ``v=0`` at ``(0, 0)``, as in COCO), textured
backgrounds, and unannotated limb-like distractors.

What is in one image
--------------------
* **Background**: a colour gradient, low-frequency noise, sometimes stripes, then 3-10
  random rectangles / ellipses / polygons, then 2-7 *distractors*: chains of limb-like
  sticks and head-like discs that are not annotated.
* **1-4 people** (probabilities 0.30 / 0.30 / 0.22 / 0.18), each ``h`` = 30-150 px tall
  (log-uniform, scaled with the image; at most 120 px with 3-4 people), placed so that
  the centre of the body lies inside the image (big people near a border get truncated).
  The body is a kinematic tree: pelvis -> torso (lean) -> shoulders -> upper arm -> forearm,
  pelvis -> hips -> thigh -> shin, torso -> neck -> head. Joint angles are drawn within
  human-like limits (arms down / out / raised, elbows and knees bent 0-140 deg, hips
  mostly under the body, sometimes striding or sitting). The whole figure is then rotated:
  upright (75 %), leaning 15-40 deg (15 %) or lying 65-115 deg (10 %).
* **Facing** (yaw): front (55 %), side (30 %) or back (15 %). Yaw moves the shoulders and
  hips together (side view) and places the nose, eyes and ears on the head as on a
  cylinder; face points turned away from the camera are labelled ``v=1`` (not drawn).
* **Nearer people are drawn later** (depth order = height x noise), then 0-2 front
  occluders (blobs, bars, sticks) may cover parts of anyone.

How bodies are drawn (the left/right cue)
-----------------------------------------
Limbs are capsules (thick lines with round caps), the torso a polygon, the head a disc
with a hair cap; each person gets a random shirt and trouser colour. **Every left limb is
drawn in a light tint of its garment colour (50 % towards white) and every right limb in a
dark shade (45 % of it)**, for every person, so left and right can be told apart from the
pixels (a horizontal flip swaps the tints; without this cue flip augmentation would make
the task ill-posed). The face shows the direction the person looks: dark eyes, a red nose
that sticks out of the head outline in profile, ears on the sides, and a hair cap on top
(back view: hair only).

Labels
------
* **Visibility rule.** Every drawn pixel also gets a part id in a label buffer (painter's
  order, like the RGB image). Joint ``j`` of person ``p`` is ``v=2`` iff it lies in the
  image, its face point (if any) is turned towards the camera, and the topmost part at
  its pixel is one of the parts that carry it (e.g. the elbow: upper arm or forearm;
  a shoulder: upper arm or, on the near side, the torso). Anything else on top (another
  person, the person's own torso over a far arm, a front occluder) gives ``v=1`` with
  the true position kept. Joints outside the image give ``v=0`` and ``(0, 0)``.
* **bbox** = the tight box of the person's whole drawn silhouette (amodal: as if nobody
  stood in front), clipped to the image, ``[x, y, w, h]`` with pixel centres at integers.
* **area** = the pixel count of that silhouette inside the image (COCO's "segmentation
  area"; it sets the OKS scale). For an untruncated person ``h`` px tall it is
  ~0.2 h^2 (10-90 %: 0.16-0.24 h^2), i.e. ~0.25-0.4 of the box area (arms spread widen the
  box, not the body).
* Each annotation has at least one ``v=2`` joint (people hidden entirely are removed and
  the image is redrawn), ``num_keypoints`` = number of joints with ``v > 0``.

Reproducibility: image ``i`` of split ``s`` is drawn from
``numpy.random.SeedSequence([seed, split_code, i])`` only, so the output does not depend
on the number of worker processes; the same seed gives byte-identical annotation files
(and, with the same Pillow/libjpeg, identical JPEGs).

Default split size: ``val_images = max(1, num_images // 16)`` (the prototype used 8,000
train / 500 val).
"""
from __future__ import annotations

import argparse
import io
import math
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ikd_edu.errors import UserError, os_error_message
from ikd_edu.io import lock_output_dir, read_json, write_json
from ikd_edu.skeleton import COCO, coco_category

GENERATOR = "ikd-edu-synthetic"
GENERATOR_VERSION = 1
DEFAULT_IMAGE_SIZE = (192, 192)  # (H, W)
JPEG_QUALITY = 90
SPLITS = ("train", "val")
_SPLIT_CODES = {"train": 0, "val": 1}
_IMAGE_NAME = re.compile(r"^\d{12}\.jpg$")
STAGING_PREFIX = ".synth-staging-"  # generate_synthetic renders into out/.synth-staging-<pid>/

# ----------------------------------------------------------------------------------------
# Body parts. Part ids in the label buffer: 1 + person * _PARTS_PER_PERSON + part.
# ----------------------------------------------------------------------------------------
TORSO, HEAD, NECK = 0, 1, 2
L_UPPER_ARM, L_FOREARM, R_UPPER_ARM, R_FOREARM = 3, 4, 5, 6
L_THIGH, L_SHIN, R_THIGH, R_SHIN = 7, 8, 9, 10
_PARTS_PER_PERSON = 12
_OCCLUDER_LABEL = 255  # front occluders in the label buffer (background and clutter: 0)

# Joint index (COCO order) -> parts that carry it when the side is near/frontal.
_JOINT_PARTS = (
    (HEAD,), (HEAD,), (HEAD,), (HEAD,), (HEAD,),  # nose, eyes, ears
    (TORSO, L_UPPER_ARM), (TORSO, R_UPPER_ARM),  # shoulders
    (L_UPPER_ARM, L_FOREARM), (R_UPPER_ARM, R_FOREARM),  # elbows
    (L_FOREARM,), (R_FOREARM,),  # wrists
    (TORSO, L_THIGH), (TORSO, R_THIGH),  # hips
    (L_THIGH, L_SHIN), (R_THIGH, R_SHIN),  # knees
    (L_SHIN,), (R_SHIN,),  # ankles
)
# Face points on the head "cylinder": (azimuth rad, +1 = towards the person's left; height
# as a fraction of the head radius, +down; radius fraction; min depth to be seen).
_FACE_POINTS = {
    0: (0.0, 0.20, 1.00, 0.20),  # nose
    1: (0.50, -0.15, 0.80, 0.15),  # left eye
    2: (-0.50, -0.15, 0.80, 0.15),  # right eye
    3: (math.pi / 2, 0.0, 0.92, -0.35),  # left ear
    4: (-math.pi / 2, 0.0, 0.92, -0.35),  # right ear
}
_NUM_PERSONS_P = (0.30, 0.30, 0.22, 0.18)


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The only source of randomness for one image (independent of worker count)."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))


def _rgb(values) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(float(v))))) for v in values)  # type: ignore[return-value]


def _hsv_colour(rng: np.random.Generator, s=(0.35, 0.9), v=(0.35, 0.85)) -> np.ndarray:
    """A random saturated colour as float RGB 0..255."""
    h = rng.uniform(0, 1)
    sat, val = rng.uniform(*s), rng.uniform(*v)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return np.array(rgb) * 255.0


def _left_tint(colour: np.ndarray) -> tuple[int, int, int]:
    """Left limbs: 50 % towards white (lighter than the garment)."""
    return _rgb(colour + (255.0 - colour) * 0.5)


def _right_shade(colour: np.ndarray) -> tuple[int, int, int]:
    """Right limbs: 45 % of the garment colour (darker)."""
    return _rgb(colour * 0.45)


# ----------------------------------------------------------------------------------------
# Drawing: one painter writes the RGB image and the part-label buffer with the same shapes.
# ----------------------------------------------------------------------------------------
class _Painter:
    def __init__(self, rgb: Image.Image, labels: Image.Image):
        self.rgb = ImageDraw.Draw(rgb)
        self.lab = ImageDraw.Draw(labels)
        self.mask: ImageDraw.ImageDraw | None = None  # the current person's silhouette

    def _each(self, colour, label):
        yield self.rgb, colour
        yield self.lab, label
        if self.mask is not None and label not in (0, _OCCLUDER_LABEL):
            yield self.mask, 255

    def capsule(self, p0, p1, width: float, colour, label: int) -> None:
        r = max(width, 1.0) / 2.0
        w = max(1, int(round(width)))
        for draw, fill in self._each(colour, label):
            draw.line([tuple(p0), tuple(p1)], fill=fill, width=w)
            for x, y in (p0, p1):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)

    def disc(self, centre, radius: float, colour, label: int) -> None:
        x, y = centre
        for draw, fill in self._each(colour, label):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)

    def polygon(self, points, colour, label: int) -> None:
        pts = [tuple(p) for p in points]
        for draw, fill in self._each(colour, label):
            draw.polygon(pts, fill=fill)

    def rect(self, box, colour, label: int) -> None:
        for draw, fill in self._each(colour, label):
            draw.rectangle(list(box), fill=fill)

    def chord(self, box, start: float, end: float, colour, label: int) -> None:
        for draw, fill in self._each(colour, label):
            draw.chord(list(box), start, end, fill=fill)


# ----------------------------------------------------------------------------------------
# Sampling a scene (all randomness happens here; rendering is deterministic).
# ----------------------------------------------------------------------------------------
def _direction(angle_deg: float, outward: float) -> np.ndarray:
    """Unit vector at ``angle`` from straight down (image y grows down), turned outward."""
    a = math.radians(angle_deg)
    return np.array([outward * math.sin(a), math.cos(a)])


def _rotate(v: np.ndarray, angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _sample_person(rng: np.random.Generator, height: float) -> dict:
    """One person in a local frame (pelvis at the origin, upright before the global turn)."""
    h = height
    kind = rng.choice(3, p=(0.55, 0.30, 0.15))
    if kind == 0:
        yaw = rng.uniform(-35, 35)
    elif kind == 1:
        yaw = rng.choice((-1, 1)) * rng.uniform(55, 110)
    else:
        yaw = 180 + rng.uniform(-35, 35)
    yaw_r = math.radians(yaw)
    cos_yaw, sin_yaw = math.cos(yaw_r), math.sin(yaw_r)
    # depth of the left / right side towards the camera (+1 near, -1 far)
    depth = {+1: -sin_yaw, -1: sin_yaw}
    # image direction of "outward" for the left side (+x when facing the camera)
    out_left = float(np.sign(cos_yaw)) if abs(cos_yaw) > 0.2 else float(rng.choice((-1, 1)))

    lean = rng.normal(0, 7) + (rng.uniform(10, 35) * rng.choice((-1, 1)) if rng.random() < 0.15 else 0)
    up = _rotate(np.array([0.0, -1.0]), lean)  # torso axis, pointing to the head
    lateral = _rotate(np.array([1.0, 0.0]), lean)  # +x of the torso

    torso_len = h * rng.uniform(0.27, 0.32)
    shoulder_w = h * rng.uniform(0.10, 0.13)
    hip_w = h * rng.uniform(0.075, 0.095)
    pelvis = np.zeros(2)
    shoulder_c = pelvis + up * torso_len
    head_up = _rotate(up, rng.normal(0, 12))
    head_r = max(2.5, h * rng.uniform(0.055, 0.068))
    neck_len = h * rng.uniform(0.045, 0.06)
    head_c = shoulder_c + head_up * (neck_len + head_r)

    kp = np.zeros((17, 2))
    side_x = {+1: cos_yaw, -1: -cos_yaw}  # lateral offset factor (left = +1, right = -1)
    for side, (sh, el, wr, hp, kn, an) in ((+1, (5, 7, 9, 11, 13, 15)), (-1, (6, 8, 10, 12, 14, 16))):
        outward = out_left * side
        kp[sh] = shoulder_c + lateral * shoulder_w * side_x[side] - up * h * 0.015
        kp[hp] = pelvis + lateral * hip_w * side_x[side]
        # arm
        u = rng.random()
        a_sh = rng.uniform(-25, 50) if u < 0.5 else rng.uniform(30, 125) if u < 0.85 else rng.uniform(100, 180)
        d_upper = _rotate(_direction(a_sh, outward), lean)
        bend = rng.uniform(0, 140) * (1 if rng.random() < 0.7 else -1) * -outward
        d_fore = _rotate(d_upper, bend)
        stretch = rng.uniform(0.6, 1.0) if rng.random() < 0.3 else 1.0
        kp[el] = kp[sh] + d_upper * h * 0.17 * stretch
        kp[wr] = kp[el] + d_fore * h * 0.15 * (rng.uniform(0.6, 1.0) if rng.random() < 0.3 else 1.0)
        # leg
        u = rng.random()
        a_hp = rng.normal(6, 7) if u < 0.7 else rng.uniform(-25, 60) if u < 0.9 else rng.uniform(60, 100)
        d_thigh = _direction(a_hp, outward)
        k_bend = rng.uniform(0, 20) if rng.random() < 0.7 else rng.uniform(20, 110)
        d_shin = _rotate(d_thigh, k_bend * rng.choice((-1, 1)))
        kp[kn] = kp[hp] + d_thigh * h * 0.23 * (rng.uniform(0.65, 1.0) if rng.random() < 0.25 else 1.0)
        kp[an] = kp[kn] + d_shin * h * 0.23 * (rng.uniform(0.65, 1.0) if rng.random() < 0.25 else 1.0)

    # face points on the head cylinder
    head_lat = _rotate(head_up, 90)  # +x of the head
    face_seen = np.ones(17, dtype=bool)
    for j, (azimuth, down, radius, min_depth) in _FACE_POINTS.items():
        kp[j] = head_c + head_lat * head_r * radius * math.sin(yaw_r + azimuth) - head_up * head_r * down
        face_seen[j] = math.cos(yaw_r + azimuth) > min_depth

    skin = np.array(rng.choice([(241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)]),
                    dtype=float) * rng.uniform(0.85, 1.1)
    return {
        "kp": kp,
        "face_seen": face_seen,
        "far": {side: depth[side] < -0.45 for side in (+1, -1)},
        "back": kind == 2,
        "head": (head_c, head_r, head_up),
        "shoulder_c": shoulder_c,
        "torso_half": (max(shoulder_w * abs(cos_yaw), h * 0.075), max(hip_w * abs(cos_yaw), h * 0.07)),
        "lateral": lateral,
        "arm_w": max(2.0, h * rng.uniform(0.05, 0.062)),
        "leg_w": max(3.0, h * rng.uniform(0.065, 0.08)),
        "shirt": _hsv_colour(rng),
        "trousers": _hsv_colour(rng, s=(0.2, 0.8), v=(0.25, 0.75)),
        "skin": skin,
        "hair": _hsv_colour(rng, s=(0.3, 0.7), v=(0.08, 0.35)),
        "height": h,
    }


def _place_person(rng: np.random.Generator, person: dict, size: tuple[int, int]) -> None:
    """Turn the whole person (upright / leaning / lying) and move it into the image."""
    H, W = size
    u = rng.random()
    turn = rng.normal(0, 6) if u < 0.75 else rng.choice((-1, 1)) * (rng.uniform(15, 40) if u < 0.9 else rng.uniform(65, 115))
    a = math.radians(turn)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = person["kp"] @ rot.T
    lo, hi = pts.min(0), pts.max(0)
    target = np.array([rng.uniform(0.05, 0.95) * W, rng.uniform(0.05, 0.95) * H])
    shift = target - (lo + hi) / 2
    person["transform"] = (rot, shift)
    person["kp"] = pts + shift


def _to_image(person: dict, p: np.ndarray) -> np.ndarray:
    rot, shift = person["transform"]
    return rot @ p + shift


def _sample_stick_chain(rng: np.random.Generator, size: tuple[int, int]) -> list:
    H, W = size
    s = min(H, W)
    p = np.array([rng.uniform(0, W), rng.uniform(0, H)])
    length, width = s * rng.uniform(0.06, 0.2), max(2.0, s * rng.uniform(0.01, 0.045))
    base = _hsv_colour(rng)
    colour = rng.choice(3)
    fill = _rgb(base) if colour == 0 else _left_tint(base) if colour == 1 else _right_shade(base)
    angle = rng.uniform(0, 360)
    segments = []
    for _ in range(rng.integers(1, 4)):
        q = p + _rotate(np.array([length, 0.0]), angle)
        segments.append(("capsule", p, q, width, fill))
        p, angle = q, angle + rng.uniform(-120, 120)
    if rng.random() < 0.3:  # a head-like disc at one end
        segments.append(("disc", segments[0][1], width * rng.uniform(1.2, 2.2), _rgb(_hsv_colour(rng))))
    return segments


def _sample_scene(rng: np.random.Generator, size: tuple[int, int]) -> dict:
    H, W = size
    s = min(H, W)
    # background array (float)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = rng.uniform(30, 220, 3).astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(a) + yy * math.sin(a)) / s - 0.5
    bg = base + ramp[..., None] * rng.uniform(-90, 90, 3).astype(np.float32)
    coarse = rng.normal(0, 1, (int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3)) * rng.uniform(8, 35)
    coarse_img = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((W, H), Image.BILINEAR)
    bg += np.asarray(coarse_img, dtype=np.float32) - 128
    if rng.random() < 0.35:  # stripes
        b = rng.uniform(0, math.pi)
        period = rng.uniform(6, 30)
        wave = np.sin((xx * math.cos(b) + yy * math.sin(b)) * 2 * math.pi / period)
        bg += wave[..., None] * rng.uniform(-40, 40, 3).astype(np.float32)

    clutter = []
    for _ in range(rng.integers(3, 11)):
        kind = rng.choice(3)
        c = np.array([rng.uniform(0, W), rng.uniform(0, H)])
        r = s * rng.uniform(0.03, 0.2, 2)
        colour = _rgb(rng.uniform(0, 255, 3))
        if kind == 0:
            clutter.append(("rect", (c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1]), colour))
        elif kind == 1:
            clutter.append(("ellipse", (c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1]), colour))
        else:
            n = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * math.pi, n))
            rad = r[0] * rng.uniform(0.4, 1.0, n)
            clutter.append(("polygon", [tuple(c + rr * np.array([math.cos(t), math.sin(t)])) for t, rr in zip(ang, rad)], colour))
    distractors = [seg for _ in range(rng.integers(2, 8)) for seg in _sample_stick_chain(rng, size)]

    n = int(rng.choice(4, p=_NUM_PERSONS_P)) + 1
    h_max = 150 if n <= 2 else 120
    persons = []
    for _ in range(n):
        height = math.exp(rng.uniform(math.log(30), math.log(h_max))) * s / 192.0
        person = _sample_person(rng, height)
        for _attempt in range(10):  # keep at least 6 joints inside the image
            trial = dict(person)
            _place_person(rng, trial, size)
            kp = trial["kp"]
            inside = (kp[:, 0] >= 0) & (kp[:, 0] <= W - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= H - 1)
            if inside.sum() >= 6:
                break
        persons.append(trial)
    depth_key = [p["height"] * math.exp(rng.normal(0, 0.35)) for p in persons]
    persons = [persons[i] for i in np.argsort(depth_key, kind="stable")]  # far (small) first

    occluders = []
    for _ in range(rng.choice(3, p=(0.6, 0.28, 0.12))):
        kind = rng.choice(3)
        c = np.array([rng.uniform(0, W), rng.uniform(0, H)])
        colour = _rgb(rng.uniform(0, 255, 3))
        if kind == 0:
            r = s * rng.uniform(0.03, 0.09)
            occluders.append(("disc", c, r, colour))
        elif kind == 1:
            r = s * rng.uniform(0.02, 0.12, 2)
            occluders.append(("rect", (c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1]), colour))
        else:
            occluders.extend(_sample_stick_chain(rng, size))
    return {
        "background": bg,
        "clutter": clutter,
        "distractors": distractors,
        "persons": persons,
        "occluders": occluders,
        "noise_sigma": float(rng.uniform(2, 7)),
        "noise_seed": int(rng.integers(2**31)),
    }


# ----------------------------------------------------------------------------------------
# Rendering and labelling.
# ----------------------------------------------------------------------------------------
def _draw_shape(painter: _Painter, shape, label: int) -> None:
    kind = shape[0]
    if kind == "capsule":
        painter.capsule(shape[1], shape[2], shape[3], shape[4], label)
    elif kind == "disc":
        painter.disc(shape[1], shape[2], shape[3], label)
    elif kind == "rect":
        painter.rect(shape[1], shape[2], label)
    elif kind == "ellipse":
        x0, y0, x1, y1 = shape[1]
        for draw, fill in painter._each(shape[2], label):
            draw.ellipse([x0, y0, x1, y1], fill=fill)
    elif kind == "polygon":
        painter.polygon(shape[1], shape[2], label)


def _draw_person(painter: _Painter, person: dict, index: int) -> None:
    kp = person["kp"]
    base = 1 + index * _PARTS_PER_PERSON
    shirt, trousers, skin = person["shirt"], person["trousers"], person["skin"]
    arm_w, leg_w = person["arm_w"], person["leg_w"]

    def limbs(side: int, legs: bool, arms: bool) -> None:
        tint = _left_tint if side == +1 else _right_shade
        if side == +1:
            sh, el, wr, hp, kn, an = 5, 7, 9, 11, 13, 15
            parts = (L_UPPER_ARM, L_FOREARM, L_THIGH, L_SHIN)
        else:
            sh, el, wr, hp, kn, an = 6, 8, 10, 12, 14, 16
            parts = (R_UPPER_ARM, R_FOREARM, R_THIGH, R_SHIN)
        if legs:
            painter.capsule(kp[hp], kp[kn], leg_w, tint(trousers), base + parts[2])
            painter.capsule(kp[kn], kp[an], leg_w * 0.9, tint(trousers), base + parts[3])
        if arms:
            painter.capsule(kp[sh], kp[el], arm_w, tint(shirt), base + parts[0])
            painter.capsule(kp[el], kp[wr], arm_w * 0.9, tint(shirt), base + parts[1])
            painter.disc(kp[wr], arm_w * 0.75, _rgb(skin), base + parts[1])  # hand

    far = [side for side in (+1, -1) if person["far"][side]]
    near = [side for side in (+1, -1) if not person["far"][side]]
    for side in far:
        limbs(side, legs=True, arms=True)

    # torso: a quadrilateral from the shoulder line to the hip line
    rot, _ = person["transform"]
    lateral = rot @ person["lateral"]
    s_half, h_half = person["torso_half"]
    shoulder_c = _to_image(person, person["shoulder_c"])
    hip_c = (kp[11] + kp[12]) / 2
    pad = arm_w * 0.4
    quad = [shoulder_c - lateral * (s_half + pad), shoulder_c + lateral * (s_half + pad),
            hip_c + lateral * (h_half + pad * 0.5), hip_c - lateral * (h_half + pad * 0.5)]
    painter.polygon(quad, _rgb(shirt), base + TORSO)
    painter.disc(shoulder_c, s_half * 0.5 + pad, _rgb(shirt), base + TORSO)

    for side in near:
        limbs(side, legs=True, arms=False)

    # neck + head (face points drawn only where they face the camera)
    head_c, head_r, head_up = person["head"]
    head_c = _to_image(person, head_c)
    up_img = rot @ head_up
    painter.capsule(shoulder_c, head_c, max(2.0, head_r * 0.8), _rgb(skin * 0.9), base + NECK)
    painter.disc(head_c, head_r, _rgb(person["hair"] if person["back"] else skin), base + HEAD)
    seen = person["face_seen"]
    dot = max(0.8, head_r * 0.2)
    for ear in (3, 4):
        if seen[ear]:
            painter.disc(kp[ear], dot * 1.3, _rgb(skin * 0.75), base + HEAD)
    if not person["back"]:
        up_angle = math.degrees(math.atan2(up_img[1], up_img[0]))
        box = (head_c[0] - head_r, head_c[1] - head_r, head_c[0] + head_r, head_c[1] + head_r)
        painter.chord(box, up_angle - 75, up_angle + 75, _rgb(person["hair"]), base + HEAD)
    for eye in (1, 2):
        if seen[eye]:
            painter.disc(kp[eye], dot, (20, 20, 30), base + HEAD)
    if seen[0]:
        painter.disc(kp[0], dot * 1.15, (200, 30, 40), base + HEAD)

    for side in near:
        limbs(side, legs=False, arms=True)


def _render(scene: dict, size: tuple[int, int]) -> tuple[np.ndarray, list[dict]]:
    """Draw a scene; return the RGB image (H, W, 3) uint8 and one label dict per person."""
    H, W = size
    image = Image.fromarray(np.clip(scene["background"], 0, 255).astype(np.uint8))
    labels = Image.new("L", (W, H), 0)
    painter = _Painter(image, labels)
    for shape in scene["clutter"] + scene["distractors"]:
        _draw_shape(painter, shape, 0)
    masks = []
    for i, person in enumerate(scene["persons"]):
        mask = Image.new("L", (W, H), 0)
        painter.mask = ImageDraw.Draw(mask)
        _draw_person(painter, person, i)
        masks.append(mask)
    painter.mask = None
    for shape in scene["occluders"]:
        _draw_shape(painter, shape, _OCCLUDER_LABEL)

    label_arr = np.asarray(labels)
    results = []
    for i, person in enumerate(scene["persons"]):
        kp = person["kp"]
        base = 1 + i * _PARTS_PER_PERSON
        inside = (kp[:, 0] >= 0) & (kp[:, 0] <= W - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= H - 1)
        vis = np.zeros(17, dtype=np.int64)
        for j in range(17):
            if not inside[j]:
                continue
            parts = _JOINT_PARTS[j]
            side = +1 if COCO.side(j) == "left" else -1
            if j in (5, 6, 11, 12) and person["far"][side]:
                parts = tuple(p for p in parts if p != TORSO)  # far shoulder/hip: behind the torso
            top = int(label_arr[int(round(kp[j, 1])), int(round(kp[j, 0]))])
            vis[j] = 2 if person["face_seen"][j] and top in {base + p for p in parts} else 1
        mask_arr = np.asarray(masks[i]) > 0
        rows, cols = np.flatnonzero(mask_arr.any(1)), np.flatnonzero(mask_arr.any(0))
        results.append({
            "keypoints": kp, "visibility": vis, "area": int(mask_arr.sum()),
            "bbox": (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
            if len(rows) else None,
        })

    arr = np.asarray(image).astype(np.float32)
    noise_rng = np.random.default_rng(scene["noise_seed"])
    arr += noise_rng.normal(0, scene["noise_sigma"], arr.shape).astype(np.float32)
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8), results


def make_image(seed: int, split: str, index: int, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
               ) -> tuple[np.ndarray, list[dict]]:
    """Image ``index`` of ``split``: ``(rgb (H, W, 3) uint8, persons)``.

    Each person is ``{"keypoints": (17, 2) float, "visibility": (17,) int in {0, 1, 2},
    "bbox": (x, y, w, h), "area": int}``; every returned person has a visible joint.
    People hidden completely are removed and the image is drawn again without them.
    """
    rng = _image_rng(seed, split, index)
    while True:
        scene = _sample_scene(rng, image_size)
        while scene["persons"]:
            image, persons = _render(scene, image_size)
            hidden = [i for i, p in enumerate(persons) if not (p["visibility"] == 2).any() or p["bbox"] is None]
            if not hidden:
                return image, persons
            scene["persons"] = [p for i, p in enumerate(scene["persons"]) if i not in hidden]


def _coco_annotation(person: dict) -> dict:
    kp, vis = person["keypoints"], person["visibility"]
    flat = []
    for (x, y), v in zip(kp, vis):
        flat += [round(float(x), 2), round(float(y), 2), int(v)] if v > 0 else [0, 0, 0]
    return {
        "category_id": 1,
        "keypoints": flat,
        "num_keypoints": int((vis > 0).sum()),
        "bbox": [float(b) for b in person["bbox"]],
        "area": float(person["area"]),
        "iscrowd": 0,
    }


def _work(task: tuple) -> tuple[str, int, list[dict]]:
    """Render one image, write its JPEG, return its annotations (worker entry point)."""
    seed, split, index, image_size, path = task
    image, persons = make_image(seed, split, index, image_size)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(buffer.getvalue())
    os.replace(tmp, path)
    return split, index, [_coco_annotation(p) for p in persons]


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------
def _check_args(num_images, val_images, seed, image_size) -> tuple[int, int, int, tuple[int, int]]:
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise UserError(f"number of training images must be an integer >= 1, got {num_images!r}")
    if val_images is None:
        val_images = max(1, int(num_images) // 16)
    if isinstance(val_images, bool) or not isinstance(val_images, (int, np.integer)) or val_images < 1:
        raise UserError(f"number of validation images must be an integer >= 1, got {val_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be an integer >= 0, got {seed!r}")
    try:
        H, W = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise UserError(f"image_size must be (H, W), got {image_size!r}") from None
    if H < 64 or W < 64 or H > 4096 or W > 4096:
        raise UserError(f"image size {H}x{W} out of range: use 64..4096 per side (default 192x192)")
    return int(num_images), int(val_images), int(seed), (H, W)


def _expected_meta(num_images: int, val_images: int, seed: int, image_size: tuple[int, int]) -> dict:
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": [image_size[0], image_size[1]],
        "num_images": {"train": num_images, "val": val_images},
    }


def generate_synthetic(out_dir, num_images: int, seed: int = 0, val_images: int | None = None,
                       image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, progress: bool = True,
                       workers: int | None = None) -> dict:
    """Write the synthetic dataset in COCO layout under ``out_dir``; return a summary.

    Layout: ``annotations/person_keypoints_{train,val}.json``, ``{train,val}/NNNNNNNNNNNN.jpg``
    (ids from 1 in each split) and ``synth_meta.json`` (written last: its presence means the
    set is complete). The set is made in a temporary folder inside ``out_dir`` whose
    ``annotations/``, ``train/`` and ``val/`` then replace the old ones (renames), while
    ``out_dir`` is locked (:func:`ikd_edu.io.lock_output_dir`): a second generator on the
    same folder is refused, and the leftovers of a killed one are removed on the next start.

    Args:
        out_dir: target folder (created).
        num_images: training images (>= 1).
        seed: integer >= 0; the same seed gives byte-identical annotation files.
        val_images: validation images; default ``max(1, num_images // 16)``.
        image_size: ``(H, W)`` in pixels.
        progress: show a tqdm bar on stderr.
        workers: processes; default ``min(cpu_count, 8)``, 1 for fewer than 64 images.
            The output does not depend on it.

    Returns:
        ``{"out_dir": str, "seed", "image_size", "train": {"images", "persons",
        "visible_joints", "occluded_joints"}, "val": {...}}``.
    """
    num_images, val_images, seed, image_size = _check_args(num_images, val_images, seed, image_size)
    out = Path(out_dir)
    with lock_output_dir(out, "synthetic dataset folder"):
        for old in out.glob(f"{STAGING_PREFIX}*"):  # left by a killed generator (we hold the lock)
            shutil.rmtree(old, ignore_errors=True)
        staging = out / f"{STAGING_PREFIX}{os.getpid()}"
        try:
            summary = _generate(out, staging, num_images, seed, val_images, image_size, progress, workers)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return summary


def _generate(out: Path, staging: Path, num_images: int, seed: int, val_images: int, image_size: tuple[int, int],
              progress: bool, workers: int | None) -> dict:
    """Render into ``staging``, then swap its folders into ``out`` (see :func:`generate_synthetic`)."""
    meta_path = out / "synth_meta.json"
    counts = {"train": num_images, "val": val_images}
    tasks = []
    try:
        for split in SPLITS:
            (staging / split).mkdir(parents=True)
    except OSError as exc:
        raise UserError(os_error_message(exc, staging, "write")) from None
    for split in SPLITS:
        folder = staging / split
        tasks += [(seed, split, i, image_size, str(folder / f"{i:012d}.jpg")) for i in range(1, counts[split] + 1)]

    total = len(tasks)
    if workers is None:
        workers = 1 if total < 64 else min(os.cpu_count() or 1, 8)
    workers = max(1, min(int(workers), total))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="synthetic images", unit="img", file=sys.stderr)
    results: dict[str, list] = {split: [None] * counts[split] for split in SPLITS}
    pool = None
    try:
        if workers == 1:
            iterator = map(_work, tasks)
        else:
            import multiprocessing

            pool = multiprocessing.get_context("spawn").Pool(workers)
            iterator = pool.imap(_work, tasks, chunksize=8)
        for split, index, anns in iterator:
            results[split][index - 1] = anns
            if bar is not None:
                bar.update(1)
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.terminate()

    H, W = image_size
    summary: dict = {"out_dir": str(out), "seed": seed, "image_size": [H, W]}
    for split in SPLITS:
        images, annotations = [], []
        for index, anns in enumerate(results[split], start=1):
            images.append({"id": index, "file_name": f"{index:012d}.jpg", "width": W, "height": H})
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": index, **ann})
        coco = {
            "info": {"description": f"ikd-edu synthetic stick figures ({split})", "version": str(GENERATOR_VERSION),
                     "seed": seed},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [coco_category()],
        }
        write_json(staging / "annotations" / f"person_keypoints_{split}.json", coco, indent=None)
        vis = np.array([a["keypoints"][2::3] for a in annotations]).reshape(-1)
        summary[split] = {"images": len(images), "persons": len(annotations),
                          "visible_joints": int((vis == 2).sum()), "occluded_joints": int((vis == 1).sum())}
    meta_path.unlink(missing_ok=True)  # from here until the new meta file the set must not look complete
    try:
        for name in ("annotations", *SPLITS):
            target = out / name
            if target.is_dir() and not target.is_symlink():
                os.replace(target, staging / f"old-{name}")
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(staging / name, target)
    except OSError as exc:
        raise UserError(os_error_message(exc, out, "write")) from None
    write_json(meta_path, {**_expected_meta(num_images, val_images, seed, image_size),
                           "counts": {s: summary[s] for s in SPLITS}})
    return summary


def synthetic_matches(root, num_images: int, seed: int = 0, val_images: int | None = None,
                      image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> bool:
    """True when ``root`` holds a complete set made with exactly these settings."""
    num_images, val_images, seed, image_size = _check_args(num_images, val_images, seed, image_size)
    root = Path(root)
    meta_path = root / "synth_meta.json"
    if not meta_path.is_file():
        return False
    try:
        meta = read_json(meta_path, "synthetic dataset metadata")
    except UserError:
        return False
    expected = _expected_meta(num_images, val_images, seed, image_size)
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
        return False
    counts = {"train": num_images, "val": val_images}
    for split in SPLITS:
        if not (root / "annotations" / f"person_keypoints_{split}.json").is_file():
            return False
        folder = root / split
        if not folder.is_dir() or sum(1 for f in folder.iterdir() if _IMAGE_NAME.match(f.name)) != counts[split]:
            return False
    return True


def ensure_synthetic(root, num_images: int, seed: int = 0, val_images: int | None = None,
                     image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, progress: bool = True,
                     workers: int | None = None) -> Path:
    """Return ``root`` after making sure it holds this exact synthetic set.

    A set with matching ``synth_meta.json`` (generator version, seed, counts, image size)
    and all files present is reused untouched; anything else is regenerated.
    """
    if synthetic_matches(root, num_images, seed, val_images, image_size):
        return Path(root)
    with lock_output_dir(root, "synthetic dataset folder"):  # another process may be making it right now
        if not synthetic_matches(root, num_images, seed, val_images, image_size):
            generate_synthetic(root, num_images, seed=seed, val_images=val_images, image_size=image_size,
                               progress=progress, workers=workers)
    return Path(root)


# ----------------------------------------------------------------------------------------
# CLI: ikd-edu data synth --out DIR --images N [--val-images M] [--seed S] [--size HxW]
# ----------------------------------------------------------------------------------------
def _parse_size(text: str) -> tuple[int, int]:
    from ikd_edu.validate import parse_size

    try:
        return parse_size(text, "--size")
    except UserError as exc:  # argparse turns this into its usage error
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (e.g. data/synthetic)")
    parser.add_argument("--images", type=int, required=True, help="number of training images (>= 1)")
    parser.add_argument("--val-images", type=int, default=None,
                        help="number of validation images (default: images // 16, at least 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=_parse_size, default=DEFAULT_IMAGE_SIZE, metavar="HxW",
                        help="image size, height x width (default 192x192)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching set exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def cli_main(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    with lock_output_dir(args.out, "synthetic dataset folder"):  # checked and written by one process at a time
        if not args.force and synthetic_matches(args.out, args.images, args.seed, args.val_images, args.size):
            print(f"{args.out}: a matching synthetic set exists (seed {args.seed}); reusing it (--force regenerates)")
            return 0
        summary = generate_synthetic(args.out, args.images, seed=args.seed, val_images=args.val_images,
                                     image_size=args.size, progress=not args.quiet, workers=args.workers)
    for split in SPLITS:
        s = summary[split]
        print(f"{split}: {s['images']} images, {s['persons']} persons, "
              f"{s['visible_joints']} visible + {s['occluded_joints']} occluded joints")
    print(f"wrote {summary['out_dir']}")
    return 0
