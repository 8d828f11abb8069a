"""Automatic checks for the course's exercises (the nbgrader "check" cells call these).

Each ``check_*`` compares a learner's function with the library's on random inputs. When they
disagree it *probes* the function to find out what is wrong (a zeroed target weight that
still changes the loss, a gradient that reaches the teacher, a result that changes when the
features are scaled ...) and raises :class:`AssertionError` with a message that says what to
fix. Messages name shapes and rules, never the expected numbers or the solution code, so
they can be shown to a student as they are. On success one line is printed::

    ✓ logit_kd matches ikd_edu.distill.LogitDistillation on 12 random cases

==========================  ========  ========================================================
check                       notebook  the library function it is compared with
==========================  ========  ========================================================
:func:`check_encode`        01        ``ikd_edu.codec.encode_heatmaps`` (reference encoding)
:func:`check_logit_kd`      03        ``ikd_edu.distill.LogitDistillation(alpha, "mse")``
:func:`check_feature_kd`    04        ``ikd_edu.distill.FeatureDistillation`` (``"l2"``)
:func:`check_affinity`      05        ``ikd_edu.distill.structure.pairwise_affinity``
:func:`check_joint_relations` 05      ``ikd_edu.distill.structure.joint_relations``
:func:`check_integral`      06        ``ikd_edu.distill.IntegralKD.current_weights`` (the weighted sum, decay)
==========================  ========  ========================================================

Every check runs in well under a second on a laptop CPU (small random tensors, float64).

What keeps a check honest, and what a learner sees when it steps in:

* **Behaviour, not one implementation.** Values and gradients are compared where they are
  defined: at an all-zero vector a cosine's gradient depends on the eps (about 1/eps), so there
  the gradient is not compared; any eps <= 1e-6 and every usual idiom passes.
* **No shortcut.** The learner's function runs as *learner code*
  (:func:`ikd_edu.exercise_guard.learner_code`): the library's reference implementations raise
  there, and a call is reported even when the learner catches the error.
* **No tampering.** The checks compare with the reference objects captured at import;
  replacing a check, a reference, a helper of this module or ``torch.allclose`` is reported
  ("... was replaced (monkey-patching) ... restart the kernel").
* **A time budget.** A check stops after :data:`DEFAULT_BUDGET_S` seconds
  (``$IKD_CHECK_BUDGET_S``, or ``budget_s=``) and says the solution is too slow.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import sys
import threading
import time
import types
from typing import Callable

import torch
from torch.nn import functional as F

# The reference implementations, captured once: the checks compare with these objects even if a
# notebook later rebinds the library's names (which _verify_integrity reports).
from ikd_edu.codec import encode_heatmaps
from ikd_edu.distill import FeatureDistillation, LogitDistillation, heatmap_kl, joints_mse
from ikd_edu.distill.integral import IntegralKD, decay_factor
from ikd_edu.distill.structure import AUTO_GRID, joint_relations, pairwise_affinity, pooled_grid_size
from ikd_edu.exercise_guard import (ReferenceCalled, learner_code, reference_calls, reference_message,
                                    registered)

__all__ = ["check_encode", "check_logit_kd", "check_feature_kd", "check_affinity", "check_joint_relations",
           "check_integral", "INTEGRAL_PARTS", "NOT_WRITTEN", "BUDGET_ENV", "DEFAULT_BUDGET_S"]

NOT_WRITTEN = "not written yet: replace `raise NotImplementedError()` with your code"

#: seconds a check may take before it stops and says the solution is too slow (``budget_s=`` overrides)
DEFAULT_BUDGET_S = 20.0
#: environment variable with the default budget in seconds (e.g. ``IKD_CHECK_BUDGET_S=60`` on a slow grader)
BUDGET_ENV = "IKD_CHECK_BUDGET_S"

_ATOL = 1e-5
_RTOL = 1e-4


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------
def _shape(t) -> str:
    return "(" + ", ".join(str(int(s)) for s in t.shape) + ")"


def _fail(name: str, message: str):
    raise AssertionError(f"{name}: {message}")


def _new_reference_calls(name: str, before: int) -> None:
    """Fail when the learner's code called a reference implementation since ``before`` (even if it caught it)."""
    calls = reference_calls()[before:]
    if calls:
        raise AssertionError(f"{name}: {reference_message(calls[0])}") from None


def _call(fn: Callable, name: str, args: tuple, described: str, hints: tuple[tuple[str, str], ...] = ()):
    """``fn(*args)`` as learner code (reference functions switched off); errors -> AssertionError with context.

    NotImplementedError -> "not written yet"; a reference call -> says so; any other exception ->
    its type and message, the shapes it was called with and, when one applies, a hint.
    """
    before = len(reference_calls())
    try:
        with learner_code():
            out = fn(*args)
    except NotImplementedError:
        _new_reference_calls(name, before)
        raise AssertionError(f"{name}: {NOT_WRITTEN}") from None
    except AssertionError:
        _new_reference_calls(name, before)  # a ReferenceCalled, or the learner's own assert
        raise
    except Exception as exc:  # the learner's own bug: say where, keep their traceback chained
        _new_reference_calls(name, before)
        text = f"{type(exc).__name__}: {exc}"
        extra = next((hint for needle, hint in hints if needle.lower() in text.lower()), "")
        raise AssertionError(f"{name} raised {text}\n  (called with {described}){extra}") from exc
    _new_reference_calls(name, before)
    return out


def _backward(name: str, out: torch.Tensor, grad: torch.Tensor | None = None) -> None:
    """``out.backward(grad)``: the learner's graph (custom autograd functions included) runs as learner code."""
    before = len(reference_calls())
    try:
        with learner_code():
            out.backward(grad)
    except AssertionError:
        _new_reference_calls(name, before)
        raise
    except Exception as exc:
        _new_reference_calls(name, before)
        raise AssertionError(f"{name}: backpropagating through your result raised {type(exc).__name__}: {exc}; "
                             "build the result from the inputs with differentiable torch operations") from exc
    _new_reference_calls(name, before)


def _as_tensor(value, name: str, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
    except ImportError:  # pragma: no cover - numpy is a dependency of torch here
        pass
    _fail(name, f"{what} must be a torch.Tensor, got {type(value).__name__}")


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = _ATOL, rtol: float = _RTOL) -> bool:
    a, b = a.detach().double(), b.detach().double()
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and torch.allclose(a, b, atol=atol, rtol=rtol)


def _scalar(value, name: str) -> torch.Tensor:
    t = _as_tensor(value, name, "the loss")
    if t.numel() != 1 or t.dim() > 1:
        _fail(name, f"must return a scalar (a 0-d tensor) but returned shape {_shape(t)}: average over every "
                    "axis (instances, joints/channels and pixels), as the formula's mean does")
    return t.reshape(())


# ----------------------------------------------------------------------------------------------
# the time budget: a check stops after DEFAULT_BUDGET_S seconds instead of hanging the grader
# ----------------------------------------------------------------------------------------------
class _TimeUp(BaseException):
    """Raised into the check when its budget is spent (a BaseException: ``except Exception`` won't swallow it)."""


def _budget_seconds(budget_s: float | None) -> float:
    if budget_s is None:
        raw = os.environ.get(BUDGET_ENV, "").strip()
        if not raw:
            return DEFAULT_BUDGET_S
        try:
            budget_s = float(raw)
        except ValueError:
            raise ValueError(f"{BUDGET_ENV}={raw!r} is not a number of seconds; set it to e.g. 20 or unset it") from None
    budget_s = float(budget_s)
    if not budget_s > 0:
        raise ValueError(f"the check's time budget must be > 0 seconds, got {budget_s}")
    return budget_s


@contextlib.contextmanager
def _alarm(seconds: float):
    """SIGALRM after ``seconds`` raises :class:`_TimeUp` in the main thread (and again every 0.25 s until done).

    Nests with an alarm that is already set (pytest-timeout, an outer check): the outer one is
    handed over when it is due first and re-armed with its remaining time afterwards. A signal
    also interrupts ``time.sleep``; a single long C call (one huge torch op) ends first.
    """
    start = time.monotonic()
    deadline = start + seconds
    previous_handler = signal.getsignal(signal.SIGALRM)
    previous_left, previous_interval = signal.getitimer(signal.ITIMER_REAL)
    previous_deadline = start + previous_left if previous_left > 0 else None
    armed = [True]

    def on_alarm(signum, frame):
        now = time.monotonic()
        if previous_deadline is not None and now >= previous_deadline and callable(previous_handler):
            signal.signal(signal.SIGALRM, previous_handler)  # the outer alarm is due: it decides
            previous_handler(signum, frame)
            return
        if armed[0] and now >= deadline:
            raise _TimeUp()

    signal.signal(signal.SIGALRM, on_alarm)
    first = seconds if previous_deadline is None else min(seconds, previous_left)
    signal.setitimer(signal.ITIMER_REAL, first, 0.25)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler if previous_handler is not None else signal.SIG_DFL)
        if previous_deadline is not None:
            signal.setitimer(signal.ITIMER_REAL, max(previous_deadline - time.monotonic(), 1e-3), previous_interval)


@contextlib.contextmanager
def _watchdog(seconds: float):
    """Off the main thread (or without SIGALRM): a watchdog thread raises :class:`_TimeUp` in this thread.

    ``PyThreadState_SetAsyncExc`` takes effect between two bytecodes, so it stops Python loops
    but not a ``time.sleep`` already under way (that ends first).
    """
    from ikd_edu._threads import beside

    target = threading.get_ident()
    set_async = ctypes.pythonapi.PyThreadState_SetAsyncExc

    def watch(done):
        if done.wait(seconds):
            return
        while not done.is_set():
            set_async(ctypes.c_ulong(target), ctypes.py_object(_TimeUp))
            if done.wait(0.25):
                return

    try:
        with beside(watch, "ikd-edu-check-budget"):
            yield
    finally:
        set_async(ctypes.c_ulong(target), None)  # drop one that was set but not yet raised


def _time_budget(seconds: float):
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _alarm(seconds)  # Jupyter kernels and scripts run cells in the main thread
    return _watchdog(seconds)


# ----------------------------------------------------------------------------------------------
# integrity: a check that was replaced, or a library it compares with that was patched, is reported
# ----------------------------------------------------------------------------------------------
def _label(owner) -> str:
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    return f"{getattr(owner, '__module__', '?')}.{getattr(owner, '__qualname__', type(owner).__name__)}"


def _make_integrity():
    tampered: list[str] = []  # what was changed through ikd_edu.exercises' attributes
    watched: dict[tuple[int, str], tuple[object, object]] = {}  # (id(owner), attr) -> (owner, the object)

    def record(what: str) -> None:
        tampered.append(what)

    def lookup(owner, attribute: str):
        if isinstance(owner, types.ModuleType):  # the module's own dict: no __getattribute__ of ours in between
            return vars(owner).get(attribute)
        return getattr(owner, attribute, None)

    def watch(owner, attribute: str) -> None:
        value = lookup(owner, attribute)
        if value is not None:
            watched[(id(owner), attribute)] = (owner, value)

    def changes() -> list[str]:
        changed = [f"{_label(owner)}.{attribute}" for (_, attribute), (owner, obj) in watched.items()
                   if lookup(owner, attribute) is not obj]
        return list(dict.fromkeys(tampered + changed))

    return record, watch, changes


_record_tampering, _watch, _integrity_changes = _make_integrity()


def _freeze() -> None:
    """Remember every object a check relies on (called once, at import)."""
    module = sys.modules[__name__]
    for attribute in list(vars(module)):
        if not (attribute.startswith("__") and attribute.endswith("__")):
            _watch(module, attribute)
    guarded = registered().values()
    owners = set()
    for fn in guarded:  # where each reference lives (a function in a module, or a method of a class)
        owner = sys.modules.get(fn.__module__)
        *path, attribute = fn.__qualname__.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is not None:
            _watch(owner, attribute)
            if path:
                owners.add(id(owner))
    ids = {id(fn) for fn in guarded} | owners
    for modname, mod in list(sys.modules.items()):  # and every name the library re-exports it under
        if modname.split(".")[0] == "ikd_edu" and mod is not None and modname != __name__:
            for attribute, value in list(vars(mod).items()):
                if id(value) in ids:
                    _watch(mod, attribute)
    for owner, attributes in ((torch, ("allclose", "equal", "isfinite", "exp", "where", "trunc", "arange")),
                              (torch.Tensor, ("backward", "allclose", "abs", "pow", "mean", "sum", "norm",
                                              "double", "detach", "clone", "transpose", "__matmul__")),
                              (F, ("normalize", "adaptive_avg_pool2d", "adaptive_max_pool2d", "interpolate"))):
        for attribute in attributes:
            _watch(owner, attribute)


def _verify_integrity(name: str) -> None:
    changed = _integrity_changes()
    if changed:
        raise AssertionError(
            f"{name}: the check can't be trusted in this kernel: {', '.join(changed[:4])}"
            f"{' ...' if len(changed) > 4 else ''} was replaced (monkey-patching) while the notebook ran. The checks "
            "and the library functions they compare with must stay as the library defines them: remove the code "
            "that changes them, restart the kernel and run the notebook again") from None


# ----------------------------------------------------------------------------------------------
# one check run: integrity, learner code, time budget, result line
# ----------------------------------------------------------------------------------------------
def _run_check(name: str, body: Callable, fn, budget_s: float | None) -> None:
    """Run ``body(fn) -> (library, cases, notes)`` within the time budget; print the result line."""
    seconds = _budget_seconds(budget_s)
    _verify_integrity(name)
    if not callable(fn):
        _fail(name, f"pass your function itself, e.g. check_{name}({name}) - got a {type(fn).__name__}")
    try:
        with _time_budget(seconds):
            library, cases, notes = body(fn)
    except _TimeUp:
        raise AssertionError(
            f"{name}: stopped after {seconds:g} s: the solution is too slow (time budget {seconds:g} s). The check "
            "calls your function about a dozen times on small tensors and normally finishes in about a second: "
            "look for a loop that never ends, or a Python loop over every pixel or pair of positions, and use "
            "whole-tensor torch operations instead") from None
    _verify_integrity(name)  # nothing was replaced while the learner's code ran
    print(f"✓ {name} matches {library} on {cases} random cases")
    for note in notes:
        print(f"  note: {note}")


# ----------------------------------------------------------------------------------------------
# notebook 01: the target encoder
# ----------------------------------------------------------------------------------------------
def _encode_cases():
    gen = torch.Generator().manual_seed(1234)
    for (h, w), sigma in (((32, 24), 2.0), ((64, 48), 2.0), ((17, 13), 1.5), ((32, 24), 3.0), ((20, 28), 1.0)):
        n, k = 3, 17
        kp = torch.rand(n, k, 2, generator=gen, dtype=torch.float64) * torch.tensor([w + 16.0, h + 16.0]) - 8
        vis = torch.randint(0, 3, (n, k), generator=gen)
        vis[0, :3] = 1  # occluded but labelled joints count
        vis[1, :3] = 2
        kp[2, 0] = torch.tensor([w + 20.0, h / 2])  # far off the map on the right, labelled
        kp[2, 1] = torch.tensor([w / 2, -20.0])  # far above
        vis[2, :2] = 2
        yield kp.float(), vis, (h, w), sigma


_SWAPPED_XY = "x and y are swapped: keypoints are (x, y), x is the column (width) and y the row (height)"


def _diagnose_encode_swap(name, hm, weight, kp, vis, size, sigma, ref_hm, ref_w) -> None:
    """Fail when the learner's encoding is the reference's for (y, x) keypoints - whatever their weights say.

    A swap moves the peaks *and* changes which joints count as off the map, so it is looked
    for before the weights are judged: on the joints that the swapped encoding draws and
    where the swap makes a difference, the heatmaps match the swapped ones; or the weights
    are exactly the swapped encoding's (an off-map test that compares x with h and y with w).
    """
    swapped_hm, swapped_w = (t.double() for t in encode_heatmaps(kp.flip(-1), vis, size, sigma))
    drawn = (swapped_w == 1) & ((swapped_hm - ref_hm).abs().amax(dim=(2, 3)) > 1e-3)  # (N, K)
    if bool(drawn.any()) and _close(hm[drawn], swapped_hm[drawn]):
        _fail(name, _SWAPPED_XY)
    if torch.equal(weight, swapped_w) and not torch.equal(swapped_w, ref_w):
        _fail(name, "the off-map test for target_weight swaps x and y: compare x (the column) with the width w and "
                    "y (the row) with the height h")


def _check_encode_body(fn: Callable):
    """The encoder check's cases; see :func:`check_encode`."""
    name = "encode"
    count = 0
    for kp, vis, (h, w), sigma in _encode_cases():
        n, k = vis.shape
        out = _call(fn, name, (kp.clone(), vis.clone(), (h, w), sigma),
                    f"keypoints {_shape(kp)}, visible {_shape(vis)}, size=(h, w)=({h}, {w}), sigma={sigma}",
                    hints=(("size", "\n  hint: size is (h, w): rows first, then columns"),))
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            _fail(name, f"must return a tuple (heatmaps, target_weight); got {type(out).__name__}"
                        + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
        hm = _as_tensor(out[0], name, "heatmaps")
        weight = _as_tensor(out[1], name, "target_weight")
        if tuple(hm.shape) != (n, k, h, w):
            if tuple(hm.shape) == (n, k, w, h):
                _fail(name, f"heatmaps have shape {_shape(hm)}: h and w are swapped; size is (h, w) = ({h}, {w}) "
                            "and a heatmap is indexed [y, x] (rows = h)")
            _fail(name, f"heatmaps have shape {_shape(hm)} for N={n}, K={k}, size=(h, w)=({h}, {w}); "
                        "expected (N, K, h, w)")
        if tuple(weight.reshape(weight.shape[:2]).shape if weight.dim() == 3 and weight.shape[-1] == 1
                 else weight.shape) != (n, k):
            _fail(name, f"target_weight has shape {_shape(weight)}; expected (N, K) = ({n}, {k})")
        weight = weight.reshape(n, k).double()
        hm = hm.double()
        if not bool(torch.isfinite(hm).all()):
            _fail(name, "heatmaps contain NaN or inf values")
        ref_hm, ref_w = (t.double() for t in encode_heatmaps(kp, vis, (h, w), sigma))
        if not (torch.equal(weight, ref_w) and _close(hm, ref_hm)):
            _diagnose_encode_swap(name, hm, weight, kp, vis, (h, w), sigma, ref_hm, ref_w)
        labelled = vis > 0
        if not torch.equal(weight, ref_w):
            if bool((weight[~labelled] != 0).any()):
                _fail(name, "joints with visible == 0 (not labelled) must get target_weight 0")
            if bool((weight[(vis == 1) & (ref_w == 1)] == 0).any()):
                _fail(name, "joints with visible == 1 are labelled (only occluded): they count, target_weight 1")
            if bool((weight[ref_w == 0] != 0).any()):
                _fail(name, "a labelled joint whose Gaussian window lies completely off the map must get "
                            "target_weight 0 (ul_x >= w or ul_y >= h or br_x < 0 or br_y < 0)")
            _fail(name, f"target_weight is 0 for {int(((weight == 0) & (ref_w == 1)).sum())} labelled joints "
                        "whose window touches the map: only not-labelled or off-map joints get 0")
        if _close(hm, ref_hm):
            count += 1
            continue
        unbiased, _ = encode_heatmaps(kp, vis, (h, w), sigma, unbiased=True)
        if _close(hm, unbiased.double(), atol=1e-4):
            _fail(name, "the Gaussian is centred at the exact sub-pixel point; the reference rounds the centre "
                        "first: x0 = int(x + 0.5), y0 = int(y + 0.5)")
        if bool((hm[ref_w == 0] != 0).any()):
            _fail(name, "joints with target_weight 0 must have all-zero heatmaps")
        on = ref_hm.amax(dim=(2, 3)) > 0.99  # joints whose peak lies on the map
        if bool(on.any()):
            peaks = hm.amax(dim=(2, 3))[on]
            if bool(((peaks - 1).abs() > 1e-3).any()):
                sums = hm.sum(dim=(2, 3))[on]
                if bool(((sums - 1).abs() < 1e-3).all()):
                    _fail(name, "the Gaussians are normalised to sum 1; the reference target has peak value 1 "
                                "(no normalising constant)")
                _fail(name, "the peak of each Gaussian (at its centre) must be exactly 1")
        outside = (ref_hm == 0) & (ref_w[..., None, None] == 1)
        if bool((hm[outside].abs() > 1e-6).any()):
            _fail(name, "pixels outside the window ul <= (x, y) < br (tmp_size = 3 sigma around the rounded centre) "
                        "must be 0: the reference draws the Gaussian only inside that window")
        _fail(name, f"heatmaps differ on {int(((hm - ref_hm).abs() > _ATOL).sum())} pixels (size {h}x{w}, "
                    f"sigma {sigma}): check exp(-d^2 / (2 sigma^2)) with d measured from the rounded centre")
    return 'ikd_edu.codec.encode_heatmaps', count, []


# ----------------------------------------------------------------------------------------------
# notebook 03: logit distillation (FPD)
# ----------------------------------------------------------------------------------------------
_BROADCAST_HINT = ("size of tensor", "\n  hint: target_weight is (N, K) and heatmaps are (N, K, h, w): give the "
                   "weight two trailing axes (target_weight[:, :, None, None]) before multiplying")


def _logit_cases():
    gen = torch.Generator().manual_seed(303)
    shapes = ((2, 17, 8, 6), (3, 5, 16, 12), (1, 17, 32, 24), (4, 3, 6, 6), (2, 17, 8, 6), (3, 7, 4, 5))
    alphas = (0.2, 0.9, 0.5, 0.0, 1.0, 0.35)  # alpha = 0.5 first would hide an inverted or unused alpha
    for (n, k, h, w), alpha in zip(shapes, alphas):
        student = torch.rand(n, k, h, w, generator=gen, dtype=torch.float64)
        teacher = torch.rand(n, k, h, w, generator=gen, dtype=torch.float64)
        target = torch.rand(n, k, h, w, generator=gen, dtype=torch.float64)
        weight = (torch.rand(n, k, generator=gen) > 0.3).double()
        weight[0, 0], weight[-1, -1] = 0.0, 1.0  # at least one unlabelled and one labelled joint
        yield student, teacher, target, weight, alpha


def _logit_value(fn, name, s, t, g, w, alpha) -> torch.Tensor:
    described = (f"student_hm {_shape(s)}, teacher_hm {_shape(t)}, target {_shape(g)}, target_weight {_shape(w)}, "
                 f"alpha={alpha}")
    out = _call(fn, name, (s, t, g, w, alpha), described, hints=(_BROADCAST_HINT,))
    if isinstance(out, (float, int)):
        _fail(name, "returned a Python number: return the torch tensor itself (no .item()), so that the loss "
                    "can be backpropagated into the student")
    return _scalar(out, name)


def _diagnose_logit(fn, name, s, t, g, w, alpha, out) -> None:
    def value(s_=s, t_=t, g_=g, w_=w, a_=alpha):
        with torch.no_grad():
            return _logit_value(fn, name, s_, t_, g_, w_, a_)

    off = (w == 0).nonzero()[0]  # an unlabelled joint (n, k)
    n0, k0 = int(off[0]), int(off[1])
    g2 = g.clone()
    g2[n0, k0] = 1.0 - g2[n0, k0]
    if alpha < 1 and not _close(value(g_=g2), out):
        _fail(name, "the target weight is ignored: a joint with target_weight 0 (not labelled) must not "
                    "contribute to the ground-truth term; multiply the GT error by w")
    t2 = t.clone()
    t2[n0, k0] = 1.0 - t2[n0, k0]
    if 0 < alpha and _close(value(t_=t2), out):
        _fail(name, "the teacher term is weighted with the target weight: the teacher has an opinion about every "
                    "joint, labelled or not - the library weights only the ground-truth term")
    if alpha == 0.0 and not _close(value(t_=t2), out):
        _fail(name, "with alpha = 0 the loss still depends on the teacher: alpha is the teacher term's share, "
                    "L = (1 - alpha) L_gt + alpha L_kd")
    if alpha == 1.0 and not _close(value(g_=g2 + 0.5), out):
        _fail(name, "with alpha = 1 the loss still depends on the ground truth: alpha is the teacher term's share, "
                    "L = (1 - alpha) L_gt + alpha L_kd")
    gt = joints_mse(s, g, w).detach()
    kd = joints_mse(s, t).detach()
    ref = LogitDistillation(alpha, "mse")(s, t, g, w).detach()
    numel = s.numel()
    n, k, h, wd = s.shape
    variants = [
        ((alpha * gt + (1 - alpha) * kd), "alpha mixing is inverted: alpha is the share of the *teacher* term, "
                                          "L = (1 - alpha) L_gt + alpha L_kd"),
        (gt + kd, "alpha is not used: the two terms are mixed as (1 - alpha) L_gt + alpha L_kd"),
        (2 * ref, "missing the factor 0.5: both terms are 0.5 x mean squared error (the reference JointsMSELoss)"),
        (ref * numel, "the squared errors are summed; take the mean over instances, joints and pixels"),
        (ref * k * h * wd, "the squared errors are summed over joints and pixels; take the mean over every axis"),
        (ref * h * wd, "the squared errors are summed over pixels; take the mean over every axis (n, k, pixels)"),
        ((1 - alpha) * gt, "the teacher term alpha L_kd(S, T) is missing"),
        (alpha * kd, "the ground-truth term (1 - alpha) L_gt(S, G) is missing"),
        ((1 - alpha) * gt + alpha * heatmap_kl(s, t).detach(),
         "the teacher term is a KL divergence; this exercise asks for FPD's mean squared error to the teacher"),
    ]
    _name_the_variant(name, out, ref, variants)
    _fail(name, f"the value differs from the library's (N, K, h, w = {n}, {k}, {h}, {wd}, alpha={alpha}); "
                "compare your code with the formula term by term: the weight w, the 0.5, the means, the alpha mix")


def _name_the_variant(name: str, out, ref, variants) -> None:
    """Fail with the message of the first known wrong variant ``(value, message)`` that ``out`` equals."""
    for candidate, message in variants:
        if _close(out, candidate) and not _close(out, ref):
            _fail(name, message)


def _no_teacher_gradient(name: str, teacher, advice: str) -> None:
    if teacher.grad is not None and bool(teacher.grad.abs().sum() > 0):
        _fail(name, f"gradient reaches the teacher: {advice}")


def _same_gradient(name: str, got, want, wrt: str, how: str) -> None:
    if got is None or not _close(got, want, atol=1e-8):
        _fail(name, f"the value is right but the gradient with respect to {wrt} is not: compute the loss with {how}")


def _check_logit_kd_body(fn: Callable):
    """The logit_kd check's cases; see :func:`check_logit_kd`."""
    name = "logit_kd"
    count = 0
    for s0, t0, g, w, alpha in _logit_cases():
        s = s0.clone().requires_grad_(True)
        t = t0.clone().requires_grad_(True)  # a teacher output that still has a graph: must be detached
        out = _logit_value(fn, name, s, t, g.clone(), w.clone(), alpha)
        s_ref = s0.clone().requires_grad_(True)
        ref = LogitDistillation(alpha, "mse")(s_ref, t0, g, w)
        if not _close(out, ref):
            _diagnose_logit(fn, name, s0, t0, g, w, alpha, out.detach())
        if not out.requires_grad:
            _fail(name, "the loss does not depend on student_hm through torch operations (no gradient would reach "
                        "the student): don't detach student_hm or convert it to NumPy")
        _backward(name, out)
        _no_teacher_gradient(name, t, "the teacher's heatmaps are fixed targets, use teacher_hm.detach() in the "
                                      "teacher term")
        ref.backward()
        _same_gradient(name, s.grad, s_ref.grad, "student_hm", "differentiable torch operations on student_hm")
        count += 1
    return "ikd_edu.distill.LogitDistillation(alpha, mode='mse')", count, []


# ----------------------------------------------------------------------------------------------
# notebook 04: feature distillation through an adapter
# ----------------------------------------------------------------------------------------------
def _feature_cases():
    gen = torch.Generator().manual_seed(404)
    #   (N, C_s, H_s, W_s),  (C_t, H_t, W_t)
    shapes = (((2, 16, 4, 3), (32, 4, 3)),   # same grid, more teacher channels
              ((2, 8, 8, 6), (24, 4, 3)),    # student at stride 16, teacher at 32
              ((3, 12, 2, 2), (12, 4, 4)),   # same channel count, student smaller
              ((1, 16, 6, 5), (40, 3, 2)),   # a non-integer size ratio
              ((2, 6, 4, 3), (6, 4, 3)))     # same channels and size: the adapter still applies
    for (n, cs, hs, ws), (ct, ht, wt) in shapes:
        module = FeatureDistillation(cs, ct, use_bn=True).double()
        conv, bn = module.adapter[0], module.adapter[1]
        with torch.no_grad():  # a non-trivial adapter: random conv and BN statistics
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen, dtype=torch.float64) / cs**0.5)
            bn.weight.copy_(torch.rand(ct, generator=gen, dtype=torch.float64) + 0.5)
            bn.bias.copy_(torch.randn(ct, generator=gen, dtype=torch.float64) * 0.1)
            bn.running_mean.copy_(torch.randn(ct, generator=gen, dtype=torch.float64) * 0.1)
            bn.running_var.copy_(torch.rand(ct, generator=gen, dtype=torch.float64) + 0.5)
        module.eval()  # BN with running statistics (train mode would use the batch's)
        student = torch.randn(n, cs, hs, ws, generator=gen, dtype=torch.float64).relu()
        teacher = torch.randn(n, ct, ht, wt, generator=gen, dtype=torch.float64).relu()
        yield module, student, teacher


_FEATURE_HINTS = (
    ("expected input", "\n  hint: the adapter maps the student's C_s channels to the teacher's C_t: apply it to "
                       "student_feat (not to teacher_feat)"),
    ("channels", "\n  hint: the adapter maps the student's C_s channels to the teacher's C_t: apply it to "
                 "student_feat (not to teacher_feat)"),
    ("size of tensor", "\n  hint: student and teacher features differ in channels and/or spatial size: map the "
                       "student through the adapter, then resize it to the teacher's (H, W) when the sizes differ"),
)


def _feature_value(fn, name, module, s, t) -> torch.Tensor:
    described = (f"student_feat {_shape(s)}, teacher_feat {_shape(t)}, adapter = 1x1 conv {s.shape[1]} -> "
                 f"{t.shape[1]} channels + BatchNorm")
    out = _call(fn, name, (s, t, module.adapter), described, hints=_FEATURE_HINTS)
    if isinstance(out, (float, int)):
        _fail(name, "returned a Python number: return the torch tensor itself (no .item()), so that the loss "
                    "can be backpropagated into the student and the adapter")
    return _scalar(out, name)


def _diagnose_feature(fn, name, module, s, t, out) -> None:
    adapter = module.adapter
    size_t, size_s = tuple(t.shape[-2:]), tuple(s.shape[-2:])
    with torch.no_grad():
        ref = module(s, t)
        adapted = adapter(s)

        def resized(x, size, **kw):
            kw = kw or {"mode": "bilinear", "align_corners": False}
            return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, **kw)

        variants = []
        if size_s != size_t:
            variants += [
                ((adapted - resized(t, size_s)).pow(2).mean(),
                 "the teacher is resized to the student's size; the library resizes the (adapted) student map to "
                 "the teacher's (H, W) - the teacher's features are the target and stay as they are"),
                ((resized(adapted, size_t, mode="nearest") - t).pow(2).mean(),
                 "nearest-neighbour resizing; use bilinear interpolation (align_corners=False), as the library"),
                ((resized(adapted, size_t, mode="bilinear", align_corners=True) - t).pow(2).mean(),
                 "bilinear resizing with align_corners=True; the library uses align_corners=False"),
                ((resized(adapted, size_t, mode="bicubic", align_corners=False) - t).pow(2).mean(),
                 "bicubic resizing; use bilinear interpolation (align_corners=False), as the library"),
            ]
        if s.shape[1] == t.shape[1]:
            variants.append(((resized(s, size_t) - t).pow(2).mean(),
                             "the adapter is not used: phi(F_s) = adapter(student_feat) is compared with the teacher, "
                             "even when the channel counts happen to match"))
        variants += [
            (0.5 * ref, "a factor 0.5 too many: L_feat = mean (phi(F_s) - F_t)^2 (the 0.5 belongs to the heatmap "
                        "losses only)"),
            (ref * t.numel(), "the squared errors are summed; take the mean over every element (n, c, y, x)"),
            (ref * t.shape[1], "the squared errors are summed over channels; take the mean over every element "
                               "(n, c, y, x)"),
            (ref * t[0].numel(), "the squared errors are summed per instance; take the mean over every element "
                                 "(n, c, y, x)"),
            ((resized(adapted, size_t) - t).abs().mean(), "this is an absolute (L1) error; square the differences"),
            (ref.sqrt(), "this is a root mean square; L_feat is the mean of the squared differences (no root)"),
        ]
    _name_the_variant(name, out, ref, variants)
    _fail(name, f"the value differs from the library's (student {_shape(s)}, teacher {_shape(t)}); compare with "
                "L_feat = mean over (n, c, y, x) of (phi(F_s) - F_t)^2, phi(F_s) resized (bilinear) to the "
                "teacher's (H, W) when the sizes differ")


def _check_feature_kd_body(fn: Callable):
    """The feature_kd check's cases; see :func:`check_feature_kd`."""
    name = "feature_kd"
    count = 0
    for module, s0, t0 in _feature_cases():
        s = s0.clone().requires_grad_(True)
        t = t0.clone().requires_grad_(True)
        module.zero_grad()
        out = _feature_value(fn, name, module, s, t)
        with torch.no_grad():
            ref = module(s0, t0)
        if not _close(out, ref):
            _diagnose_feature(fn, name, module, s0, t0, out.detach())
        if not out.requires_grad:
            _fail(name, "no gradient would reach the student or the adapter: compute the loss from student_feat and "
                        "adapter(student_feat) with torch operations (don't detach them, don't call the adapter "
                        "under torch.no_grad())")
        _backward(name, out)
        _no_teacher_gradient(name, t, "its features are a fixed target, use teacher_feat.detach()")
        conv = module.adapter[0]
        if conv.weight.grad is None or not bool(conv.weight.grad.abs().sum() > 0):
            _fail(name, "the adapter gets no gradient: it is trained together with the student, so compute "
                        "adapter(student_feat) with gradients (no torch.no_grad(), no .detach())")
        if s.grad is None or not bool(s.grad.abs().sum() > 0):
            _fail(name, "no gradient reaches student_feat: don't detach the student's features")
        s_ref = s0.clone().requires_grad_(True)
        module(s_ref, t0).backward()
        _same_gradient(name, s.grad, s_ref.grad, "student_feat", "differentiable torch operations")
        count += 1
    return "ikd_edu.distill.FeatureDistillation(C_s, C_t, mode='l2')", count, []


# ----------------------------------------------------------------------------------------------
# notebook 05: structure - pairwise affinity between positions, relations between joints
# ----------------------------------------------------------------------------------------------
def _affinity_cases():
    gen = torch.Generator().manual_seed(505)
    for n, c, h, w in ((2, 8, 4, 3), (1, 16, 8, 6), (2, 6, 32, 24), (1, 5, 20, 10), (3, 4, 16, 12)):
        features = 4.0 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
        features[0, :, : h // 2] = features[0, :, : h // 2].relu()  # ReLU-like positive half
        if h <= 16 and w <= 12:
            features[-1, :, 1, 2] = 0.0  # a dead position: its channel vector is all zero
            # no vector is nearly dead: then any eps <= 1e-6 changes a cosine by < 1e-5 (the tolerance)
            features = features * (features.norm(dim=1, keepdim=True) >= 0.5)
        yield features


def _affinity_value(fn, name, features) -> torch.Tensor:
    out = _call(fn, name, (features,), f"features {_shape(features)}")
    return _as_tensor(out, name, "the affinity")


def _finite_and_scale_invariant(name: str, out, rescaled: Callable, zero: str, scale: str) -> None:
    """A cosine-similarity matrix has no NaN/inf (``zero``: what has a zero norm) and ignores the input's scale."""
    if not bool(torch.isfinite(out).all()):
        _fail(name, f"the result has NaN/inf entries: {zero} divides by a zero norm - guard the division with a "
                    "small eps (e.g. clamp the norm)")
    with torch.no_grad():
        again = rescaled()
    if not _close(again.double(), out):
        _fail(name, f"not scale-invariant: {scale} to unit length (cosine similarity)")


def _unit_diagonal(name: str, out, ref, advice: str) -> None:
    """Every vector with a non-zero norm has cosine similarity 1 with itself."""
    diag = out.diagonal(dim1=1, dim2=2)
    alive = ref.diagonal(dim1=1, dim2=2) > 0.5
    if not _close(diag[alive], torch.ones_like(diag[alive])):
        _fail(name, advice)


def _diagnose_affinity(fn, name, features, out) -> None:
    n, c, h, w = features.shape
    gh, gw = pooled_grid_size((h, w))
    p = gh * gw
    ref = pairwise_affinity(features)
    if tuple(out.shape) != (n, p, p):
        if tuple(out.shape) == (n, c, c) and c != p:
            _fail(name, f"returned {_shape(out)} = (N, C, C): that compares channels with channels; the affinity "
                        "compares *positions*: each position's vector holds its C channel values -> (N, P, P)")
        if tuple(out.shape) == (n, h * w, h * w) and h * w != p:
            _fail(name, f"returned {_shape(out)} for a {h}x{w} map: average-pool maps larger than "
                        f"{AUTO_GRID[0]} x {AUTO_GRID[1]} to at most that grid first (here {gh} x {gw}, P = {p}), "
                        "as pairwise_affinity(pool='auto') does")
        if out.dim() == 3 and out.shape[0] == n and out.shape[1] == out.shape[2] and out.shape[1] > p:
            _fail(name, f"returned {_shape(out)} for a {h}x{w} map: maps no larger than {AUTO_GRID[0]} x "
                        f"{AUTO_GRID[1]} are used as they are (P = H * W = {p}); only larger ones are pooled")
        if tuple(out.shape) == (p, p):
            _fail(name, f"returned {_shape(out)}: keep the batch axis, one P x P matrix per instance -> (N, P, P)")
        _fail(name, f"returned shape {_shape(out)} for features {_shape(features)}; expected (N, P, P) with "
                    f"P = H' * W' positions after pooling (here ({n}, {p}, {p}))")
    _finite_and_scale_invariant(
        name, out, lambda: _affinity_value(fn, name, 3.0 * features),
        "a position whose channel vector is all zero (a dead ReLU)",
        "multiplying the features by 3 changes the result; normalise each position's channel vector")
    if (gh, gw) == (h, w):
        flipped = pairwise_affinity(features.transpose(-1, -2), pool=None)
        if _close(out, flipped):
            _fail(name, "positions are in column-major order; use row-major order i = y * W' + x (what "
                        "flattening the last two axes of (N, C, H', W') gives)")
    else:
        maxed = pairwise_affinity(F.adaptive_max_pool2d(features, (gh, gw)), pool=None)
        if _close(out, maxed):
            _fail(name, "max-pooling; the library averages the positions inside each cell (adaptive average "
                        "pooling)")
        other = pairwise_affinity(F.interpolate(features, size=(gh, gw), mode="bilinear", align_corners=False),
                                  pool=None)
        if _close(out, other):
            _fail(name, "the map is resized with interpolation; pool it with adaptive average pooling instead")
    _unit_diagonal(name, out, ref, "A_ii must be 1 (the cosine similarity of a vector with itself): normalise "
                                   "each position's C-vector (over the channel axis), not each channel over "
                                   "positions or the map as a whole")
    if not _close(out, out.transpose(1, 2)):
        _fail(name, "the affinity must be symmetric (A_ij = A_ji)")
    _fail(name, f"the value differs from pairwise_affinity (features {_shape(features)}, grid {gh} x {gw}): check "
                "the pooling, the per-position normalisation and the order of the positions")


def _dead_positions(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions whose (pooled) channel vector is all zero: ``(N, P)`` bool, and the inputs feeding them ``(N, C, H, W)``."""
    n, c, h, w = features.shape
    grid = pooled_grid_size((h, w))
    if grid == (h, w):
        dead = features.flatten(2).norm(dim=1) == 0  # (N, P)
        return dead, dead.reshape(n, 1, h, w).expand_as(features)
    pooled = F.adaptive_avg_pool2d(features, grid)  # (N, C, H', W')
    dead = pooled.flatten(2).norm(dim=1) == 0  # (N, P)
    probe = torch.zeros_like(features, requires_grad=True)  # pooling is linear: its adjoint marks the inputs
    F.adaptive_avg_pool2d(probe, grid).backward(dead.reshape(n, 1, *grid).expand(n, c, *grid).to(features.dtype))
    return dead, probe.grad != 0


def _compare_cosine_gradient(name, what, x, out, reference_fn, inputs, dead, feeds_dead, seed) -> str | None:
    """Compare ``d sum(probe * out) / dx`` with the library's where the gradient is defined; return a note or None.

    ``dead`` ``(N, P)``: positions (or joints) whose vector is all zero. There the cosine is 0/0:
    its value is 0 by convention, but its gradient depends on the eps (about 1/eps for the
    library's 1e-12), so the probe is 0 in every dead row and column and the gradient is
    compared only at the input elements that feed no dead vector (``feeds_dead`` is False).
    Any eps <= 1e-6 and any of the usual idioms then give the same gradient as the library.
    """
    live = ~dead
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    probe = probe * (live[:, :, None] & live[:, None, :])  # (N, P, P): only pairs of live vectors
    _backward(name, out, probe.to(out.dtype))
    x_ref = inputs.clone().requires_grad_(True)
    reference_fn(x_ref).backward(probe)
    keep = ~feeds_dead
    scale = float(x_ref.grad[keep].abs().max()) if bool(keep.any()) else 0.0  # eps shifts it by ~eps/|f| of this
    if x.grad is None or not _close(x.grad[keep], x_ref.grad[keep], atol=1e-6 + 1e-5 * scale, rtol=1e-3):
        _fail(name, f"the values are right but the gradient with respect to the {what} is not: use differentiable "
                    "torch operations throughout (no .detach(), .item() or NumPy on the way, and normalise with "
                    "the norm itself rather than a detached copy of it)")
    if bool(feeds_dead.any()) and not bool(torch.isfinite(x.grad[feeds_dead]).all()):
        return (f"the gradient at an all-zero {'position' if what == 'features' else 'joint map'} is NaN or inf; "
                "accepted here, but in training one such vector would turn the student's gradients into NaN. "
                "torch.where(norm > 0, v / norm, 0) still differentiates v / norm; dividing by a norm clamped to "
                "a small eps avoids that")
    return None


def _check_affinity_body(fn: Callable):
    """The affinity check's cases; see :func:`check_affinity`."""
    return _check_cosine_matrix(
        fn, "affinity", _affinity_cases(), lambda x: _affinity_value(fn, "affinity", x), pairwise_affinity,
        _diagnose_affinity, "features", _dead_positions, "ikd_edu.distill.structure.pairwise_affinity")


def _check_cosine_matrix(fn, name: str, cases, value: Callable, reference: Callable, diagnose: Callable, what: str,
                         dead_masks: Callable, label: str):
    """Shared loop of the affinity and joint-relations checks: value, diagnosis, graph, gradient.

    ``dead_masks(inputs) -> (dead, feeds_dead)``: the zero-norm vectors and the input entries feeding them.
    """
    count = 0
    notes: list[str] = []
    for inputs in cases:
        x = inputs.clone().requires_grad_(True)
        out = value(x)
        with torch.no_grad():
            ref = reference(inputs)
        if not _close(out, ref):
            diagnose(fn, name, inputs, out.detach().double())
        if not out.requires_grad:
            _fail(name, f"the result does not depend on the {what} through torch operations: it is used in a loss "
                        "on the student, so keep it in torch (no NumPy, no .detach())")
        dead, feeds_dead = dead_masks(inputs)
        note = _compare_cosine_gradient(name, what, x, out, reference, inputs, dead, feeds_dead, seed=count)
        notes += [note] if note and note not in notes else []
        count += 1
    return label, count, notes


def _relation_cases():
    gen = torch.Generator().manual_seed(606)
    for n, k, h, w in ((2, 17, 16, 12), (1, 5, 8, 6), (3, 17, 32, 24), (2, 4, 7, 9)):
        kp = torch.rand(n, k, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
        heatmaps, _ = encode_heatmaps(kp, torch.ones(n, k), (h, w), 2.0)
        heatmaps = heatmaps.double() + 0.05 * torch.randn(n, k, h, w, generator=gen, dtype=torch.float64)
        heatmaps[0, 1] = 0.0  # a joint whose map is all zero
        yield heatmaps


def _diagnose_relations(fn, name, heatmaps, out) -> None:
    n, k, h, w = heatmaps.shape
    ref = joint_relations(heatmaps)
    if tuple(out.shape) != (n, k, k):
        if tuple(out.shape) == (n, h * w, h * w):
            _fail(name, f"returned {_shape(out)} = (N, h*w, h*w): that relates pixels (the pairwise affinity); "
                        "joint relations compare joints: one vector per joint, its h*w heatmap values -> (N, K, K)")
        if tuple(out.shape) == (k, k):
            _fail(name, f"returned {_shape(out)}: keep the batch axis, one K x K matrix per instance -> (N, K, K)")
        _fail(name, f"returned shape {_shape(out)} for heatmaps {_shape(heatmaps)}; expected (N, K, K) = "
                    f"({n}, {k}, {k})")
    _finite_and_scale_invariant(
        name, out, lambda: _as_tensor(_call(fn, name, (2.5 * heatmaps,), f"heatmaps {_shape(heatmaps)}"), name,
                                      "the result"),
        "a joint whose heatmap is all zero",
        "multiplying the heatmaps by 2.5 changes the result; normalise each joint's flattened heatmap")
    flat = heatmaps.flatten(2)
    centred = F.normalize(flat - flat.mean(-1, keepdim=True), dim=-1)
    if _close(out, centred @ centred.transpose(1, 2)):
        _fail(name, "this is a correlation (the mean is subtracted); R is the cosine similarity of the raw "
                    "flattened heatmaps")
    _unit_diagonal(name, out, ref, "R_kk must be 1 (a joint's map compared with itself): normalise each joint's "
                                   "flattened heatmap (over its h*w pixels), not each pixel over the joints")
    _fail(name, f"the value differs from joint_relations (heatmaps {_shape(heatmaps)}): flatten each joint's map, "
                "normalise it, and take all dot products between joints")


def _check_joint_relations_body(fn: Callable):
    """The joint_relations check's cases; see :func:`check_joint_relations`."""
    name = "joint_relations"

    def value(x):
        return _as_tensor(_call(fn, name, (x,), f"heatmaps {_shape(x)}"), name, "the result")

    def dead_masks(heatmaps):
        dead = heatmaps.flatten(2).norm(dim=-1) == 0  # (N, K): joints whose map is all zero
        return dead, dead[..., None, None].expand_as(heatmaps)

    return _check_cosine_matrix(fn, name, _relation_cases(), value, joint_relations, _diagnose_relations,
                                "heatmaps", dead_masks, "ikd_edu.distill.structure.joint_relations")


# ----------------------------------------------------------------------------------------------
# notebook 06: the integral loss, its weighted sum and its decay
# ----------------------------------------------------------------------------------------------
#: the keys of the ``parts`` dict the learner's ``integral`` receives (unweighted scalar losses)
INTEGRAL_PARTS = ("gt", "logit", "feature", "affinity", "relation")
_KD_WEIGHTS = {"logit": "alpha", "feature": "beta", "affinity": "gamma", "relation": "delta"}
_PART_NAMES = {"gt": "ground-truth", "logit": "logit", "feature": "feature", "affinity": "affinity",
               "relation": "joint-relation"}
_KEY_HINT = ("KeyError", "\n  hint: parts is a dict with the keys " + ", ".join(repr(k) for k in INTEGRAL_PARTS)
             + " (the unweighted losses)")


def _integral_cases():
    """(parts, alpha, beta, gamma, delta, progress, decay): distinct weights, every schedule, mid-training first."""
    gen = torch.Generator().manual_seed(606)
    settings = ((0.3, 0.2, 0.05, 0.7, 0.25, "linear"), (0.6, 0.1, 0.4, 0.02, 0.4, "cosine"),
                (0.3, 0.5, 0.2, 0.1, 0.6, "none"), (0.45, 0.3, 0.15, 0.25, 0.8, "cosine"),
                (0.2, 0.05, 0.6, 0.3, 1.0, "linear"), (0.5, 0.001, 0.01, 0.01, 0.0, "cosine"),
                (0.7, 0.25, 0.35, 0.45, 0.5, "linear"))
    for alpha, beta, gamma, delta, progress, decay in settings:
        values = 0.5 + 1.5 * torch.rand(len(INTEGRAL_PARTS), generator=gen, dtype=torch.float64)
        yield dict(zip(INTEGRAL_PARTS, values)), alpha, beta, gamma, delta, progress, decay


def _integral_reference(alpha, beta, gamma, delta, progress, decay) -> dict[str, float]:
    kd = IntegralKD(terms=("logit", "feature", "structure"), alpha=alpha, feature_weight=beta, affinity_weight=gamma,
                    relation_weight=delta, student_channels=1, teacher_channels=1, decay=decay)
    return kd.current_weights(progress)


def _near(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-7 + 1e-5 * abs(b)


def _diagnose_integral(name, coeff, weights, value_ok, alpha, beta, gamma, delta, progress, decay) -> None:
    """``coeff``: d(out)/d(part) of the learner's result (its effective weights); ``weights``: the formula's."""
    setting = f"alpha={alpha}, beta={beta}, gamma={gamma}, delta={delta}, progress={progress}, decay={decay!r}"
    for part in INTEGRAL_PARTS:
        if _near(coeff[part], 0.0) and not _near(weights[part], 0.0):
            _fail(name, f"the {_PART_NAMES[part]} term is missing (its loss does not change the result): L adds the "
                        "ground-truth term and all four weighted distillation terms")
    given = {"logit": alpha, "feature": beta, "affinity": gamma, "relation": delta}
    d = decay_factor(progress, decay)
    if _near(coeff["gt"], alpha * d) and _near(coeff["logit"], 1 - alpha * d) and not _near(alpha * d, 0.5):
        _fail(name, "the alpha mix is inverted: alpha d is the share of the teacher (logit) term, the ground-truth "
                    "term gets 1 - alpha d")
    if _near(coeff["affinity"], delta * d) and _near(coeff["relation"], gamma * d) and not _near(gamma, delta):
        _fail(name, "gamma and delta are swapped: gamma weights the affinity term, delta the joint-relation term")
    implied = {part: coeff[part] / given[part] for part in _KD_WEIGHTS if given[part] > 0}  # the decay each term got
    if len({round(v, 6) for v in implied.values()}) == 1:  # one decay for every distillation term
        got = next(iter(implied.values()))
        if not _near(got, d):
            p = progress
            if _near(got, 1.0):
                _fail(name, f"the decay is not applied: with decay={decay!r} every distillation weight (alpha, beta, "
                            "gamma, delta) is multiplied by d(progress)")
            if _near(got, d * d):
                _fail(name, "the decay is applied twice: each distillation weight is multiplied by d once")
            if decay == "none":
                _fail(name, "with decay='none' the factor d is 1: the weights are used as given")
            if decay == "linear" and _near(got, p):
                _fail(name, "the linear decay runs backwards: the weights start at full strength (d = 1 at "
                            "progress 0) and fall to 0 at the end, d = 1 - progress")
            if decay == "linear" and _near(got, 0.5 * (1 + math.cos(math.pi * p))):
                _fail(name, "decay='linear' got the cosine schedule: linear is d = 1 - progress")
            if decay == "cosine" and _near(got, 1 + math.cos(math.pi * p)):
                _fail(name, "the cosine decay lacks its 1/2: d = (1 + cos(pi progress)) / 2 goes from 1 to 0")
            if decay == "cosine" and _near(got, math.cos(math.pi * p)):
                _fail(name, "the cosine decay is cos(pi progress) alone, which turns negative after half of "
                            "training: d = (1 + cos(pi progress)) / 2 goes from 1 to 0")
            if decay == "cosine" and _near(got, 0.5 * (1 + math.cos(p))):
                _fail(name, "the cosine decay misses pi: progress runs from 0 to 1, and cos takes radians, so "
                            "d = (1 + cos(pi progress)) / 2")
            if decay == "cosine" and _near(got, 0.5 * (1 - math.cos(math.pi * p))):
                _fail(name, "the cosine decay runs backwards: d = (1 + cos(pi progress)) / 2 is 1 at the start")
            if decay == "cosine" and _near(got, 1 - p):
                _fail(name, "decay='cosine' got the linear schedule: cosine is d = (1 + cos(pi progress)) / 2")
            _fail(name, f"the decay factor is wrong ({setting}): d(progress) is 1 for 'none', 1 - progress for "
                        "'linear', (1 + cos(pi progress)) / 2 for 'cosine'")
    else:
        for part, weight_name in _KD_WEIGHTS.items():
            if given[part] > 0 and _near(coeff[part], given[part]) and not _near(weights[part], given[part]):
                _fail(name, f"the {_PART_NAMES[part]} weight {weight_name} is not decayed: every distillation weight "
                            "(alpha, beta, gamma, delta) is multiplied by the same d(progress)")
        for part, weight_name in _KD_WEIGHTS.items():
            if not _near(coeff[part], weights[part]):
                _fail(name, f"the {_PART_NAMES[part]} term is not weighted with {weight_name} d ({setting})")
    if not _near(coeff["gt"], weights["gt"]):
        if _near(coeff["gt"], 1.0):
            _fail(name, "the ground-truth weight is 1: it gives up what the logit term takes, 1 - alpha d")
        if _near(coeff["gt"], 1 - alpha):
            _fail(name, "the ground-truth weight is not decayed: it is 1 - alpha d, so that the labels take over as "
                        "the teacher's share decays")
        if _near(coeff["gt"], d * (1 - alpha)):
            _fail(name, "the decay is applied to the ground-truth term too: only the distillation weights decay, the "
                        "ground-truth term keeps 1 - alpha d")
        _fail(name, f"the ground-truth term's weight is wrong ({setting}): it is 1 - alpha d")
    if not value_ok:
        _fail(name, "the weights are right but the value is not the weighted sum of the parts (an added constant, or "
                    "parts transformed before weighting?): return the sum of weight x part, nothing else")
    _fail(name, f"the result differs from the formula ({setting}); compare it with L term by term")


def _check_integral_body(fn: Callable):
    """The integral check's cases; see :func:`check_integral`."""
    name = "integral"
    count = 0
    for parts0, alpha, beta, gamma, delta, progress, decay in _integral_cases():
        parts = {k: v.clone().requires_grad_(True) for k, v in parts0.items()}
        described = (f"parts (a dict of 0-d tensors: {', '.join(INTEGRAL_PARTS)}), alpha={alpha}, beta={beta}, "
                     f"gamma={gamma}, delta={delta}, progress={progress}, decay={decay!r}")
        out = _call(fn, name, (dict(parts), alpha, beta, gamma, delta, progress, decay), described,
                    hints=(_KEY_HINT,))
        if isinstance(out, (float, int)):
            _fail(name, "returned a Python number: return the torch tensor itself (no .item() or float()), so that "
                        "the loss can be backpropagated")
        out = _scalar(out, name)
        weights = _integral_reference(alpha, beta, gamma, delta, progress, decay)
        ref = sum(weights[k] * float(parts0[k]) for k in INTEGRAL_PARTS)
        if not out.requires_grad:
            _fail(name, "the result does not depend on the parts through torch operations (no gradient would reach "
                        "the student): don't detach the parts or convert them to numbers")
        _backward(name, out)
        coeff = {k: float(parts[k].grad) if parts[k].grad is not None else 0.0 for k in INTEGRAL_PARTS}
        value_ok = _near(float(out.detach()), ref)
        if not value_ok or not all(_near(coeff[k], weights[k]) for k in INTEGRAL_PARTS):
            _diagnose_integral(name, coeff, weights, value_ok, alpha, beta, gamma, delta, progress, decay)
        count += 1
    return "ikd_edu.distill.IntegralKD (its weights and decay)", count, []


# ----------------------------------------------------------------------------------------------
# the checks the notebooks call
# ----------------------------------------------------------------------------------------------
def check_encode(fn: Callable, *, budget_s: float | None = None) -> None:
    """Check ``fn(keypoints (N, K, 2), visible (N, K), size=(h, w), sigma) -> (heatmaps, target_weight)``.

    Reference: :func:`ikd_edu.codec.encode_heatmaps` (rounded centre ``int(x + 0.5)``, window
    ``ul <= (x, y) < br`` with ``tmp_size = 3 sigma``, peak 1, weight = visible and on the map).
    ``budget_s``: seconds before the check stops (default :data:`DEFAULT_BUDGET_S` or ``$IKD_CHECK_BUDGET_S``).
    """
    _run_check("encode", _check_encode_body, fn, budget_s)


def check_logit_kd(fn: Callable, *, budget_s: float | None = None) -> None:
    """Check ``fn(student_hm, teacher_hm, target, target_weight, alpha) -> scalar`` (FPD logit distillation).

    Reference: ``LogitDistillation(alpha, mode="mse")(S, T, G, w)``
    ``= (1 - alpha) * 0.5 * mean((w (S - G))^2) + alpha * 0.5 * mean((S - T)^2)``, teacher detached.
    ``budget_s``: seconds before the check stops (default :data:`DEFAULT_BUDGET_S` or ``$IKD_CHECK_BUDGET_S``).
    """
    _run_check("logit_kd", _check_logit_kd_body, fn, budget_s)


def check_feature_kd(fn: Callable, *, budget_s: float | None = None) -> None:
    """Check ``fn(student_feat (N, C_s, H_s, W_s), teacher_feat (N, C_t, H_t, W_t), adapter) -> scalar``.

    Reference: ``FeatureDistillation(C_s, C_t, mode="l2")`` with the same ``adapter``:
    ``mean((resize(adapter(F_s), (H_t, W_t)) - F_t)^2)`` (bilinear, ``align_corners=False``),
    teacher detached, gradients to the student and the adapter.
    ``budget_s``: seconds before the check stops (default :data:`DEFAULT_BUDGET_S` or ``$IKD_CHECK_BUDGET_S``).
    """
    _run_check("feature_kd", _check_feature_kd_body, fn, budget_s)


def check_affinity(fn: Callable, *, budget_s: float | None = None) -> None:
    """Check ``fn(features (N, C, H, W)) -> (N, P, P)``, the pairwise affinity between positions.

    Reference: :func:`ikd_edu.distill.structure.pairwise_affinity` with ``pool="auto"``: average-pool
    to at most 16 x 12 cells (smaller maps as they are), ``f_i`` = the C-vector at position ``i``
    (row-major), ``A_ij = f_i . f_j / (|f_i| |f_j|)``, a zero vector giving 0.
    ``budget_s``: seconds before the check stops (default :data:`DEFAULT_BUDGET_S` or ``$IKD_CHECK_BUDGET_S``).
    """
    _run_check("affinity", _check_affinity_body, fn, budget_s)


def check_joint_relations(fn: Callable, *, budget_s: float | None = None) -> None:
    """Check ``fn(heatmaps (N, K, h, w)) -> (N, K, K)``: ``R_kl`` = cosine similarity of joint maps k and l.

    Reference: :func:`ikd_edu.distill.structure.joint_relations`.
    ``budget_s``: seconds before the check stops (default :data:`DEFAULT_BUDGET_S` or ``$IKD_CHECK_BUDGET_S``).
    """
    _run_check("joint_relations", _check_joint_relations_body, fn, budget_s)


def check_integral(fn: Callable, *, budget_s: float | None = None) -> None:
    """Check ``fn(parts, alpha, beta, gamma, delta, progress, decay) -> scalar``, the IKD objective's weighted sum.

    ``parts``: a dict of unweighted 0-d loss tensors with the keys :data:`INTEGRAL_PARTS`
    (``gt``, ``logit``, ``feature``, ``affinity``, ``relation``); ``progress`` in [0, 1];
    ``decay`` one of ``"none"``, ``"linear"``, ``"cosine"``. Reference: the weights of
    :meth:`ikd_edu.distill.IntegralKD.current_weights`,
    ``L = (1 - alpha d) L_gt + alpha d L_kd + beta d L_feat + gamma d L_aff + delta d L_rel`` with
    ``d`` = :func:`ikd_edu.distill.integral.decay_factor`. The check reads the learner's effective
    weights from the gradient with respect to each part, so it names the weight that is wrong.
    ``budget_s``: seconds before the check stops (default :data:`DEFAULT_BUDGET_S` or ``$IKD_CHECK_BUDGET_S``).
    """
    _run_check("integral", _check_integral_body, fn, budget_s)


# ----------------------------------------------------------------------------------------------
# this module's own attributes can't be replaced from a notebook
# ----------------------------------------------------------------------------------------------
def _tampered_check(attribute: str) -> Callable:
    def check(*_args, **_kwargs):
        raise AssertionError(f"{attribute.removeprefix('check_')}: ikd_edu.exercises.{attribute} is not the library's check - it was replaced "
                             "(monkey-patching) while the notebook ran, so it can't grade anything. Remove the code "
                             "that replaces it, restart the kernel and run the notebook again")
    check.__name__ = check.__qualname__ = attribute
    return check


def _protected_module_class(originals: dict[str, Callable]) -> type:
    """The class of ``ikd_edu.exercises``: assignments refused and recorded, replaced checks never handed out.

    ``ex.check_encode = ...`` (or ``mock.patch``) raises AttributeError and is recorded: every
    check then fails with a message that says so until the kernel is restarted. A replacement
    that bypasses ``setattr`` (a write to the module's ``__dict__``) is caught when the check is
    looked up (``from ikd_edu.exercises import check_encode`` gets one that fails and says why)
    and, for the helpers the checks use, by :func:`_verify_integrity` when a check runs.
    """

    class ProtectedModule(types.ModuleType):
        def __getattribute__(self, attribute):
            value = super().__getattribute__(attribute)
            original = originals.get(attribute)
            if original is not None and value is not original:
                _record_tampering(f"ikd_edu.exercises.{attribute}")
                return _tampered_check(attribute)
            return value

        def __setattr__(self, attribute, value):
            if attribute.startswith("__") and attribute.endswith("__"):  # the import system's own bookkeeping
                return super().__setattr__(attribute, value)
            _record_tampering(f"ikd_edu.exercises.{attribute}")
            raise AttributeError(f"ikd_edu.exercises.{attribute} can't be replaced: the checks grade the exercises, so "
                                 "they (and everything they use) stay as the library defines them. The attempt is "
                                 "recorded: every check in this kernel now fails until you remove this code and "
                                 "restart the kernel")

        def __delattr__(self, attribute):
            _record_tampering(f"ikd_edu.exercises.{attribute}")
            raise AttributeError(f"ikd_edu.exercises.{attribute} can't be deleted: the checks stay as the library "
                                 "defines them (the attempt is recorded; restart the kernel after removing this code)")

    return ProtectedModule


_freeze()
sys.modules[__name__].__class__ = _protected_module_class({name: globals()[name] for name in __all__
                                                           if name.startswith("check_")})
