"""Importing this module registers featx in BasicSR: ``import featx.integrations.basicsr``.

The loss classes of :mod:`featx.integrations.basicsr_losses` go into BasicSR's ``LOSS_REGISTRY``
and the metric functions of :mod:`featx.integrations.basicsr_metrics` into its
``METRIC_REGISTRY``, under names no BasicSR object uses (:data:`LOSSES`, :data:`METRICS`), so an
options file names them by ``type:``. Importing again or reloading registers nothing twice.

BasicSR 1.4.2 imports ``torchvision.transforms.functional_tensor``, which torchvision 0.17 removed.
While this module imports BasicSR, and only then, a finder at the end of ``sys.meta_path`` answers
for that one module name if no other finder does: it creates a module of that name whose
attributes are those of ``torchvision.transforms.functional`` (whose ``rgb_to_grayscale``, the one
name BasicSR takes from it, is the public successor). If torchvision still has the module, or
BasicSR is already imported, or a newer BasicSR does not ask for it, the finder is never used
and nothing changes. The finder is removed after the import; a module it made stays in
``sys.modules`` like any imported module.

If BasicSR cannot be imported, :class:`~featx.errors.IntegrationImportError` (an ``ImportError``)
says why and how to fix it, and nothing is registered anywhere.

Example:
    >>> import featx.integrations.basicsr
    >>> from basicsr.utils.registry import LOSS_REGISTRY, METRIC_REGISTRY
    >>> "FeatxPerceptualLoss" in LOSS_REGISTRY, "calculate_featx_lpips" in METRIC_REGISTRY
    (True, True)
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, Optional

from featx.errors import FeatxValueError, IntegrationImportError
from featx.integrations.basicsr_losses import FeatxDISTSLoss, FeatxLPIPSLoss, FeatxPerceptualLoss, FeatxTextureLoss
from featx.integrations.basicsr_metrics import calculate_featx_dists, calculate_featx_lpips

__all__ = [
    "FUNCTIONAL_TENSOR",
    "LOSSES",
    "METRICS",
    "FeatxDISTSLoss",
    "FeatxLPIPSLoss",
    "FeatxPerceptualLoss",
    "FeatxTextureLoss",
    "calculate_featx_dists",
    "calculate_featx_lpips",
    "import_basicsr",
    "register",
]

FUNCTIONAL_TENSOR = "torchvision.transforms.functional_tensor"
"""The module BasicSR 1.4.2 imports and torchvision >= 0.17 no longer has."""

LOSSES: tuple[type, ...] = (FeatxPerceptualLoss, FeatxLPIPSLoss, FeatxDISTSLoss, FeatxTextureLoss)
"""The classes registered in ``LOSS_REGISTRY``, each under its class name."""

METRICS: tuple[Callable[..., float], ...] = (calculate_featx_lpips, calculate_featx_dists)
"""The functions registered in ``METRIC_REGISTRY``, each under its function name."""

INSTALL_HINT = 'pip install basicsr==1.4.2 (or pip install "featx[basicsr]")'


class _FunctionalTensorFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers for :data:`FUNCTIONAL_TENSOR` only, with a module that reads the names of
    ``torchvision.transforms.functional``; placed last on ``sys.meta_path``, so it is asked only
    when torchvision itself has no such module."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[types.ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != FUNCTIONAL_TENSOR:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        functional = importlib.import_module("torchvision.transforms.functional")
        module.__doc__ = (
            f"Made by featx.integrations.basicsr for BasicSR on torchvision without this module: "
            f"its names are those of {functional.__name__}."
        )
        module.__getattr__ = functools.partial(getattr, functional)  # type: ignore[method-assign]


def import_basicsr() -> tuple[Any, Any]:
    """Import BasicSR (supplying :data:`FUNCTIONAL_TENSOR` only if nothing else does) and return
    its ``LOSS_REGISTRY`` and ``METRIC_REGISTRY``.

    Raises:
        featx.errors.IntegrationImportError: BasicSR is not installed, or fails on import; the
            message gives the reason and the fix.
    """
    finder = _FunctionalTensorFinder()
    sys.meta_path.append(finder)
    try:
        from basicsr.utils.registry import LOSS_REGISTRY, METRIC_REGISTRY
    except ImportError as error:
        if error.name == "basicsr":
            reason = f"BasicSR is not installed ({error})"
            fix = f"Install it with {INSTALL_HINT}"
        else:
            reason = f"BasicSR is installed but its import fails: {error!r}"
            fix = (
                f"Install what is missing ({error.name or 'see the message'}), or a BasicSR release that imports with "
                f"this torch/torchvision ({INSTALL_HINT} is the tested one)"
            )
        raise IntegrationImportError(
            f"featx.integrations.basicsr cannot register featx's losses and metrics: {reason}. {fix}, then import "
            "featx.integrations.basicsr before BasicSR builds its losses (the first import of train.py). "
            "Nothing was registered.",
            name=error.name,
        ) from error
    finally:
        sys.meta_path.remove(finder)
    return LOSS_REGISTRY, METRIC_REGISTRY


def _same_object(registered: object, candidate: object) -> bool:
    """The same class or function, also when this module was reloaded (a new object of the same name)."""
    if registered is candidate:
        return True
    where = ("__module__", "__qualname__")
    return all(getattr(registered, attr, None) == getattr(candidate, attr) for attr in where)


def register(loss_registry: Any, metric_registry: Any) -> None:
    """Register :data:`LOSSES` and :data:`METRICS` in BasicSR registries, once.

    An object already registered by this module (an import after a reload) is kept; a different
    object under one of these names is refused.

    Args:
        loss_registry: BasicSR's ``LOSS_REGISTRY`` (or another ``basicsr.utils.registry.Registry``).
        metric_registry: BasicSR's ``METRIC_REGISTRY``.

    Raises:
        ValueError: a registry holds another object under one of featx's names.

    Example:
        >>> from basicsr.utils.registry import Registry
        >>> losses, metrics = Registry("loss"), Registry("metric")
        >>> register(losses, metrics)
        >>> register(losses, metrics)  # again: nothing changes, nothing raises
        >>> sorted(losses.keys())
        ['FeatxDISTSLoss', 'FeatxLPIPSLoss', 'FeatxPerceptualLoss', 'FeatxTextureLoss']
    """
    for registry, label, objects in (
        (loss_registry, "LOSS_REGISTRY", LOSSES),
        (metric_registry, "METRIC_REGISTRY", METRICS),
    ):
        for obj in objects:
            name = obj.__name__
            if name not in registry:
                registry.register(obj)
                continue
            registered = registry.get(name)
            if not _same_object(registered, obj):
                origin = f"{getattr(registered, '__module__', '?')}.{getattr(registered, '__qualname__', '?')}"
                raise FeatxValueError(
                    f"BasicSR's {label} already holds {name!r} from {origin}, not featx's; remove that definition "
                    "(a class copied from older featx docs?) and keep `import featx.integrations.basicsr`"
                )


register(*import_basicsr())
