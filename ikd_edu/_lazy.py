"""Lazy exports for package ``__init__`` files: ``from pkg import Name`` works, ``import pkg`` stays cheap.

Every ``__init__`` that re-exports names does it the same way::

    _EXPORTS = {"Name": "ikd_edu.module", "module": "ikd_edu.module"}
    __getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())

A value is the module that defines the name; when the module's last dotted part *is* the
name (``"browse": "ikd_edu.browse"``), the module itself is exported. The first access
imports the module and caches the value in the package's namespace.
"""
from __future__ import annotations

import importlib


def resolve(name: str, module: str):
    """The object ``_EXPORTS[name] = module`` stands for."""
    mod = importlib.import_module(module)
    if module.rsplit(".", 1)[-1] == name and not hasattr(mod, name):
        return mod
    return getattr(mod, name)


def lazy_exports(package: str, exports: dict[str, str], namespace: dict):
    """``(__getattr__, __dir__, __all__)`` for ``package`` exporting ``exports`` lazily."""

    def __getattr__(name: str):
        if name in exports:
            value = resolve(name, exports[name])
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__, sorted(exports)
