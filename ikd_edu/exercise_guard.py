"""The library's reference implementations, switched off while a learner's exercise code runs.

Each course exercise asks the learner to write a function that the library already has
(``encode_heatmaps``, ``LogitDistillation``, ``FeatureDistillation``, ``pairwise_affinity``,
``joint_relations``). The checks in :mod:`ikd_edu.exercises` compare the learner's function
with the library's. Without a guard, ``def affinity(x): return pairwise_affinity(x)`` would
pass - so every reference implementation is marked with :func:`reference`, and while a check
is *inside the learner's function* (:func:`learner_code`) a marked function raises
:class:`ReferenceCalled` instead of answering. The call is also recorded, so catching the
error does not help: :func:`reference_calls` tells the check that it happened.

Everything else in the library (skeleton metadata, ``pooled_grid_size``, the adapter module,
torch itself) keeps working inside the learner's code, and outside a check nothing changes:
the marked functions cost one extra Python call.

The guard's state lives in closures rather than module globals, so assigning to this module's
attributes from a notebook does not switch it off. It is a speed bump for the one-line
shortcut, not a sandbox: Python code in the same process can always reach further.
"""
from __future__ import annotations

import functools
import threading
from typing import Callable, Iterator

__all__ = ["ReferenceCalled", "reference", "learner_code", "reference_calls", "reference_message", "registered",
           "running_learner_code"]


class ReferenceCalled(AssertionError):
    """A reference implementation was called from the learner's code while a check ran."""


def reference_message(name: str) -> str:
    """What the learner reads when their code called the reference implementation ``name``."""
    return (f"your code called {name}, the library's reference implementation of this exercise: a reference "
            "function was called, and the reference functions are switched off while a check runs. Write the "
            "computation yourself with torch operations (torch, torch.nn.functional and the arguments you are "
            "given are all fine to use)")


def _make_guard():
    lock = threading.Lock()
    depth = [0]  # > 0 while a check runs the learner's code (a process-wide flag: threads can't dodge it)
    calls: list[str] = []  # every reference call made meanwhile, even if the learner caught the error
    registry: dict[str, Callable] = {}  # "module.qualname" -> the guarded function

    def reference(fn: Callable) -> Callable:
        """Decorator: mark ``fn`` as a reference implementation (blocked inside :func:`learner_code`)."""
        name = f"{fn.__module__}.{fn.__qualname__}"

        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            if depth[0]:
                with lock:
                    calls.append(name)
                raise ReferenceCalled(reference_message(name))
            return fn(*args, **kwargs)

        del guarded.__wrapped__  # no one-attribute way around the guard
        registry[name] = guarded
        return guarded

    class learner_code:  # noqa: N801 - used like a function: ``with learner_code(): fn(...)``
        """Context manager: the code inside is the learner's, reference functions raise. Re-entrant."""

        def __enter__(self):
            with lock:
                depth[0] += 1
            return self

        def __exit__(self, *exc):
            with lock:
                depth[0] -= 1
            return False

    def reference_calls() -> tuple[str, ...]:
        """The reference functions called inside :func:`learner_code` so far (in this process)."""
        with lock:
            return tuple(calls)

    def registered() -> dict[str, Callable]:
        """``{"module.qualname": guarded function}`` for every marked reference implementation."""
        return dict(registry)

    def running_learner_code() -> bool:
        return depth[0] > 0

    return reference, learner_code, reference_calls, registered, running_learner_code


reference, learner_code, reference_calls, registered, running_learner_code = _make_guard()


def guarded_names() -> Iterator[str]:  # pragma: no cover - a convenience for instructors
    """The qualified names of the guarded reference functions, sorted."""
    yield from sorted(registered())
