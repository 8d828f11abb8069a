"""Widgets to poke at heatmaps, feature channels and affinities (ipywidgets, no ipympl).

Each explorer is a plain object with

* ``explorer.state`` - a dict of the current choices (sample, joint, view, ...);
* ``explorer.update(**changes) -> Figure`` - the callback: apply the changes, redraw,
  return the new figure (tests and scripts call it directly, no browser needed);
* ``explorer.current_data() -> dict`` - the arrays being shown right now;
* ``explorer.controls`` - ``{name: ipywidget}``; moving a control calls ``update``;
* ``explorer.widget`` - the box to display in a notebook: the controls above the figure.
  The figure is rendered to PNG into an ``ipywidgets.Image``, so it works under any
  matplotlib backend (inline, ipympl or none) and in VS Code / Colab / Voila.

Usage in a notebook::

    explorer = HeatmapExplorer(batch["image"], teacher_heatmaps, student_heatmaps)
    explorer.widget            # last expression of the cell: shows the controls and the figure
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ikd_edu.skeleton import COCO, Skeleton
from ikd_edu.viz.affinity import affinity_maps, common_grid, plot_affinity
from ikd_edu.viz.features import features_pca_rgb
from ikd_edu.viz.heatmaps import DIFF_CMAP, HEATMAP_CMAP, _draw_map, heatmap_view, resolve_joint
from ikd_edu.viz.skeleton import as_display_image, draw_pose, hide_ticks, joint_label, new_figure, to_numpy

__all__ = ["HeatmapExplorer", "FeatureBrowser", "AffinityExplorer", "figure_to_png"]


def figure_to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a Figure to PNG bytes (no pyplot, no backend needed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _batch(x, name: str, ndim: int) -> list:
    """A batch (tensor/array with a leading N axis) or a list -> list of per-item arrays."""
    if isinstance(x, (list, tuple)):
        items = [to_numpy(v) for v in x]
    else:
        arr = to_numpy(x)
        if arr.ndim == ndim - 1:
            arr = arr[None]
        items = list(arr)
    if not items:
        raise ValueError(f"{name} is empty")
    return items


def _one_of(name: str, value, options) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value


def _index_below(name: str, value, n: int) -> int:
    value = int(value)
    if not 0 <= value < n:
        raise ValueError(f"{name} {value} out of range 0..{n - 1}")
    return value


class _Explorer:
    """Shared plumbing: state, controls -> update, lazy widget, PNG rendering."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.controls: dict[str, Any] = {}
        self.figure: Figure | None = None
        self._view = None  # ipywidgets.Image, made with .widget
        self._box = None
        self._syncing = False

    # -- subclasses implement
    def _normalise(self, name: str, value):  # validate one change; return the stored value
        raise NotImplementedError

    def _after_change(self, changed: set[str]) -> None:  # e.g. clamp dependent controls
        pass

    def current_data(self) -> dict:
        raise NotImplementedError

    def draw(self) -> Figure:
        raise NotImplementedError

    # -- the callback
    def update(self, **changes) -> Figure:
        """Apply ``changes`` (names as in ``state``), redraw, show and return the figure."""
        unknown = sorted(set(changes) - set(self.state))
        if unknown:
            raise ValueError(f"unknown control(s) {unknown}; this explorer has {sorted(self.state)}")
        for name, value in changes.items():
            self.state[name] = self._normalise(name, value)
        self._after_change(set(changes))
        self._sync_controls()
        self.figure = self.draw()
        if self._view is not None:
            self._view.value = figure_to_png(self.figure)
        return self.figure

    def _sync_controls(self) -> None:
        self._syncing = True
        try:
            for name, control in self.controls.items():
                value = self._control_value(name)
                if control.value != value:
                    control.value = value
        finally:
            self._syncing = False

    def _control_value(self, name: str):
        return self.state[name]

    def _on_control(self, name: str):
        def callback(change) -> None:
            if not self._syncing:
                self.update(**{name: change["new"]})
        return callback

    def _wire(self) -> None:
        for name, control in self.controls.items():
            control.observe(self._on_control(name), names="value")

    @property
    def widget(self):
        """The ipywidgets box (controls + figure) to display in a notebook."""
        if self._box is None:
            import ipywidgets as W

            self._view = W.Image(format="png", layout=W.Layout(max_width="100%"))
            self._box = W.VBox([W.HBox(list(self.controls.values()), layout=W.Layout(flex_flow="row wrap")),
                                self._view])
            self.update()
        return self._box

    def _ipython_display_(self) -> None:  # `explorer` as the last expression shows the widget
        from IPython.display import display

        display(self.widget)


# ======================================================================================
class HeatmapExplorer(_Explorer):
    """Browse teacher / student / difference heatmaps per sample, person and joint.

    Args:
        images: ``N`` crops, ``(N, 3, H, W)`` (ImageNet-normalised is fine) / ``(N, H, W, 3)``
            or a list.
        teacher_heatmaps, student_heatmaps: ``(N, K, h, w)`` each.
        keypoints: optional ``(N, K, 2|3)`` in crop pixels (e.g. the GT, or decoded
            predictions times the stride), drawn on top.
        image_ids: optional ``(N,)``: crops with the same id are people of one image, so
            ``sample`` picks the image and ``person`` the crop within it. Default: every
            crop is its own sample with one person.
        skeleton: joint names and colours.

    Controls / ``state``: ``sample`` (int), ``person`` (int), ``joint`` (``"all"`` = max over
    joints, or an index; names are accepted by ``update``), ``view`` (``"teacher"``,
    ``"student"``, ``"difference"`` = student - teacher).
    """

    VIEWS = ("teacher", "student", "difference")

    def __init__(self, images, teacher_heatmaps, student_heatmaps, keypoints=None, image_ids=None,
                 skeleton: Skeleton = COCO) -> None:
        super().__init__()
        import ipywidgets as W

        self.images = _batch(images, "images", 4)
        self.teacher = _batch(teacher_heatmaps, "teacher_heatmaps", 4)
        self.student = _batch(student_heatmaps, "student_heatmaps", 4)
        n = len(self.images)
        if len(self.teacher) != n or len(self.student) != n:
            raise ValueError(f"got {n} images, {len(self.teacher)} teacher and {len(self.student)} student heatmaps; "
                             "pass one (K, h, w) heatmap per crop for both models")
        if self.teacher[0].shape != self.student[0].shape:
            raise ValueError(f"teacher heatmaps {self.teacher[0].shape} and student heatmaps "
                             f"{self.student[0].shape} differ per crop")
        self.keypoints = None if keypoints is None else _batch(keypoints, "keypoints", 3)
        if self.keypoints is not None and len(self.keypoints) != n:
            raise ValueError(f"keypoints has {len(self.keypoints)} entries but there are {n} crops")
        self.skeleton = skeleton
        self.num_joints = self.teacher[0].shape[0]
        ids = list(range(n)) if image_ids is None else [int(i) for i in to_numpy(image_ids).reshape(-1)]
        if len(ids) != n:
            raise ValueError(f"image_ids has {len(ids)} entries but there are {n} crops")
        self.groups: list[list[int]] = []  # sample -> crop indices
        seen: dict[int, int] = {}
        for crop, image_id in enumerate(ids):
            if image_id not in seen:
                seen[image_id] = len(self.groups)
                self.groups.append([])
            self.groups[seen[image_id]].append(crop)

        self.state = {"sample": 0, "person": 0, "joint": "all", "view": "teacher"}
        names = [joint_label(skeleton, k) if self.num_joints == skeleton.num_joints else f"joint {k}"
                 for k in range(self.num_joints)]
        self.controls = {
            "sample": W.IntSlider(value=0, min=0, max=len(self.groups) - 1, description="sample"),
            "person": W.IntSlider(value=0, min=0, max=max(len(self.groups[0]) - 1, 0), description="person",
                                  disabled=len(self.groups[0]) < 2),
            "joint": W.Dropdown(options=[("all joints", "all")] + [(nm, k) for k, nm in enumerate(names)],
                                value="all", description="joint"),
            "view": W.ToggleButtons(options=list(self.VIEWS), value="teacher", description="view"),
        }
        self._wire()

    def _normalise(self, name, value):
        if name == "sample":
            return _index_below("sample", value, len(self.groups))
        if name == "person":
            return int(value)  # clamped in _after_change (depends on the sample)
        if name == "joint":
            index = resolve_joint(value, self.skeleton, self.num_joints)
            return "all" if index is None else index
        if name == "view":
            return _one_of("view", value, self.VIEWS)
        raise KeyError(name)

    def _after_change(self, changed):
        people = len(self.groups[self.state["sample"]])
        if "sample" in changed and "person" not in changed:
            self.state["person"] = 0
        if not 0 <= self.state["person"] < people:
            raise ValueError(f"person {self.state['person']} out of range: sample {self.state['sample']} "
                             f"has {people} person(s)")
        control = self.controls["person"]
        self._syncing = True
        try:
            control.max = max(people - 1, 0)
            control.disabled = people < 2
        finally:
            self._syncing = False

    @property
    def crop_index(self) -> int:
        """The crop (index into the inputs) shown now."""
        return self.groups[self.state["sample"]][self.state["person"]]

    def current_data(self) -> dict:
        """``{"index", "image" (H, W, 3), "heatmap" (h, w) as displayed, "teacher", "student" (h, w), "view", "joint"}``."""
        i = self.crop_index
        joint = None if self.state["joint"] == "all" else self.state["joint"]
        t = heatmap_view(self.teacher[i], joint, self.skeleton)
        s = heatmap_view(self.student[i], joint, self.skeleton)
        shown = {"teacher": t, "student": s, "difference": s - t}[self.state["view"]]
        return {"index": i, "image": as_display_image(self.images[i]), "heatmap": shown, "teacher": t, "student": s,
                "view": self.state["view"], "joint": self.state["joint"],
                "keypoints": None if self.keypoints is None else self.keypoints[i]}

    def draw(self) -> Figure:
        data = self.current_data()
        fig, axes = new_figure(1, 1, panel_size=4.0)
        ax = axes[0, 0]
        hm = data["heatmap"]
        if data["view"] == "difference":
            m = max(float(np.abs(hm).max()), 1e-6)
            shown = _draw_map(ax, hm, data["image"], 0.75, Normalize(-m, m), DIFF_CMAP)
        else:
            top = max(float(data["teacher"].max()), float(data["student"].max()), 1e-6)  # one scale for both
            shown = _draw_map(ax, hm, data["image"], 0.65, Normalize(min(0.0, float(hm.min())), top), HEATMAP_CMAP)
        if data["keypoints"] is not None:
            draw_pose(ax, data["keypoints"], skeleton=self.skeleton, marker_size=14, linewidth=1.0, alpha=0.8)
        fig.colorbar(shown, ax=ax, shrink=0.8)
        joint = "all joints" if data["joint"] == "all" else joint_label(self.skeleton, data["joint"])
        view = "student - teacher" if data["view"] == "difference" else data["view"]
        ax.set_title(f"sample {self.state['sample']}, person {self.state['person']}: {view}, {joint}", fontsize=9)
        hide_ticks(ax)
        return fig


# ======================================================================================
class FeatureBrowser(_Explorer):
    """Browse feature maps by layer, channel and sample.

    Args:
        features: ``{layer name: (N, C, H, W)}`` - e.g. ``model.forward_taps(x, names)``; use
            names like ``"teacher/layer4"`` and ``"student/layer4"`` to compare models.
        images: optional ``N`` crops shown next to the map.

    Controls / ``state``: ``layer`` (name), ``channel`` (int; clamped to the layer's C),
    ``sample`` (int), ``mode`` (``"channel"``: one channel; ``"pca"``: all channels as a
    PCA colour image, see :func:`~ikd_edu.viz.features.features_pca_rgb`).
    """

    MODES = ("channel", "pca")

    def __init__(self, features: dict, images=None) -> None:
        super().__init__()
        import ipywidgets as W

        if not isinstance(features, dict) or not features:
            raise ValueError("features must be a non-empty dict {layer name: (N, C, H, W)}, e.g. model.forward_taps(x, names)")
        self.features = {}
        for name, value in features.items():
            arr = to_numpy(value, np.float32)
            if arr.ndim == 3:
                arr = arr[None]
            if arr.ndim != 4:
                raise ValueError(f"features[{name!r}] must be (N, C, H, W); got shape {arr.shape}")
            self.features[str(name)] = arr
        sizes = {arr.shape[0] for arr in self.features.values()}
        if len(sizes) != 1:
            raise ValueError(f"every layer must hold the same N samples; got {sorted(sizes)}")
        self.num_samples = sizes.pop()
        self.images = None if images is None else _batch(images, "images", 4)
        if self.images is not None and len(self.images) != self.num_samples:
            raise ValueError(f"images has {len(self.images)} entries but the features hold {self.num_samples} samples")
        first = next(iter(self.features))
        self.state = {"layer": first, "channel": 0, "sample": 0, "mode": "channel"}
        self.controls = {
            "layer": W.Dropdown(options=list(self.features), value=first, description="layer"),
            "channel": W.IntSlider(value=0, min=0, max=self.features[first].shape[1] - 1, description="channel"),
            "sample": W.IntSlider(value=0, min=0, max=self.num_samples - 1, description="sample"),
            "mode": W.ToggleButtons(options=list(self.MODES), value="channel", description="show"),
        }
        self._wire()

    def _normalise(self, name, value):
        if name == "layer":
            if value not in self.features:
                raise ValueError(f"unknown layer {value!r}; choose one of {list(self.features)}")
            return value
        if name == "channel":
            return int(value)
        if name == "sample":
            return _index_below("sample", value, self.num_samples)
        if name == "mode":
            return _one_of("mode", value, self.MODES)
        raise KeyError(name)

    def _after_change(self, changed):
        channels = self.features[self.state["layer"]].shape[1]
        if "channel" in changed and not 0 <= self.state["channel"] < channels:
            raise ValueError(f"channel {self.state['channel']} out of range: layer {self.state['layer']!r} "
                             f"has {channels} channels (0..{channels - 1})")
        self.state["channel"] = min(self.state["channel"], channels - 1)  # a new layer may have fewer
        self._syncing = True
        try:
            self.controls["channel"].max = channels - 1
            self.controls["channel"].disabled = self.state["mode"] == "pca"
        finally:
            self._syncing = False

    def current_data(self) -> dict:
        """``{"layer", "channel", "sample", "mode", "data"}``: ``data`` is ``(H, W)`` or the ``(H, W, 3)`` PCA image."""
        f = self.features[self.state["layer"]][self.state["sample"]]  # (C, H, W)
        data = f[self.state["channel"]] if self.state["mode"] == "channel" else features_pca_rgb(f)
        return {**self.state, "data": data, "num_channels": f.shape[0]}

    def draw(self) -> Figure:
        d = self.current_data()
        panels = 1 + (self.images is not None)
        fig, axes = new_figure(1, panels, panel_size=3.2)
        axes = list(axes[0])
        if self.images is not None:
            ax = axes.pop(0)
            ax.imshow(as_display_image(self.images[d["sample"]]), interpolation="nearest")
            ax.set_title(f"sample {d['sample']}", fontsize=9)
            hide_ticks(ax)
        ax = axes[0]
        if d["mode"] == "channel":
            shown = ax.imshow(d["data"], cmap="viridis", interpolation="nearest")
            fig.colorbar(shown, ax=ax, shrink=0.8)
            ax.set_title(f"{d['layer']}: channel {d['channel']} of {d['num_channels']}", fontsize=9)
        else:
            ax.imshow(d["data"], interpolation="nearest")
            ax.set_title(f"{d['layer']}: {d['num_channels']} channels, PCA -> RGB", fontsize=9)
        hide_ticks(ax)
        return fig


# ======================================================================================
class AffinityExplorer(_Explorer):
    """Move a query cell over the crop; see teacher and student affinity to it.

    Args:
        image: the crop (or None).
        teacher_features, student_features: ``(C, H, W)`` (or ``(1, C, H, W)``) maps of one crop.
        pool: pooling of the affinity, as in :mod:`ikd_edu.distill.structure`.

    Controls / ``state``: ``query_y``, ``query_x`` - a cell of the pooled grid. Values come
    from :func:`~ikd_edu.distill.structure.affinity_at` (see :func:`~ikd_edu.viz.affinity.affinity_maps`).
    """

    def __init__(self, image, teacher_features, student_features, pool="auto") -> None:
        super().__init__()
        import ipywidgets as W

        self.image = image
        self.teacher_features, self.student_features, self.pool = teacher_features, student_features, pool
        self.grid, _ = common_grid(teacher_features, student_features, pool)
        gh, gw = self.grid
        self.state = {"query_y": gh // 2, "query_x": gw // 2}
        self.controls = {
            "query_y": W.IntSlider(value=gh // 2, min=0, max=gh - 1, description="query y"),
            "query_x": W.IntSlider(value=gw // 2, min=0, max=gw - 1, description="query x"),
        }
        self._wire()

    def _normalise(self, name, value):
        limit = self.grid[0] if name == "query_y" else self.grid[1]
        value = int(value)
        if not 0 <= value < limit:
            raise ValueError(f"{name}={value} is outside the {self.grid[0]} x {self.grid[1]} pooled grid (0..{limit - 1})")
        return value

    def current_data(self) -> dict:
        """:func:`~ikd_edu.viz.affinity.affinity_maps` at the current query."""
        return affinity_maps(self.teacher_features, self.student_features,
                             (self.state["query_y"], self.state["query_x"]), self.pool)

    def draw(self) -> Figure:
        return plot_affinity(self.image, self.teacher_features, self.student_features,
                             (self.state["query_y"], self.state["query_x"]), self.pool)
