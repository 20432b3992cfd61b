"""Lazy (PEP 562) exports for packages: a name is imported from its module on first use, so
importing the package stays cheap (``featx --help`` never loads torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: MutableMapping[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package with lazy exports.

    Args:
        namespace: the package's ``globals()`` (its ``__name__`` names it in errors; imported
            names are cached there).
        exports: public name -> the module that defines it.

    Returns:
        ``(__getattr__, __dir__)``. The first import of a name caches it in the package, so later
        look-ups are plain attribute reads.

    Example:
        >>> namespace = {"__name__": "pkg"}
        >>> getattr_, dir_ = lazy_exports(namespace, {"sqrt": "math"})
        >>> getattr_("sqrt")(9.0), dir_(), "sqrt" in namespace
        (3.0, ['sqrt'], True)
    """
    names = sorted(exports)
    package = namespace["__name__"]

    def module_getattr(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def module_dir() -> list[str]:
        return list(names)

    return module_getattr, module_dir
