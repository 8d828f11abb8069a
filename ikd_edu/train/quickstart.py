"""Compatibility alias: the quickstart moved to :mod:`ikd_edu.apps.quickstart` (application layer).

``from ikd_edu.train import quickstart`` still returns that module, for code written before the
move (``ikd_edu/course.py`` and ``notebooks/06_integral_kd.ipynb`` import it so today). New code
imports ``ikd_edu.apps.quickstart``; tests/test_layers.py lists this file as the one allowed
upward import and fails once nothing needs it.
"""
import sys

from ikd_edu.apps import quickstart as _quickstart

sys.modules[__name__] = _quickstart
