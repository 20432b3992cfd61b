"""State-dict hooks of the frozen-by-default modules (every backbone, LPIPS, DISTS): what a parent's
``state_dict`` holds is decided at construction (docs/design.md, "Backbones").

A module built frozen (``learnable`` false) adds no entries to a parent's state dict, and a parent
checkpoint without its entries loads strictly and keeps the module's weights. A module built frozen
and unfrozen later is trainable but still not saved; the first parent ``state_dict()`` that drops
it warns. Private to featx.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from featx.errors import FeatxWarning

__all__ = ["register_frozen_hooks"]


def _drop_when_nested(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    if not prefix or getattr(module, "learnable", False):
        return
    unfrozen = any(param.requires_grad for param in module.parameters())
    if unfrozen and not getattr(module, "warned_not_saved", False):
        setattr(module, "warned_not_saved", True)  # noqa: B010 (nn.Module.__setattr__ is typed for tensors and modules)
        warnings.warn(
            f"the {type(module).__name__} at {prefix.rstrip('.')!r} was built frozen and later unfrozen: its "
            "parameters require grad but are not saved in the parent's state_dict (what is saved is decided at "
            "construction). Build it with requires_grad=True to train and save it.",
            FeatxWarning,
            stacklevel=4,
        )
    for key in [key for key in state_dict if key.startswith(prefix)]:
        del state_dict[key]


def _keep_when_absent(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any, strict: bool, *args: Any
) -> None:
    if getattr(module, "learnable", False):
        return
    own = module.state_dict()  # unprefixed: entries are only dropped when nested
    if not any(prefix + key in state_dict for key in own):
        for key, value in own.items():
            state_dict[prefix + key] = value


def register_frozen_hooks(module: nn.Module) -> None:
    """Make a module built frozen invisible in its parents' state dicts (save and load)."""
    module.register_state_dict_post_hook(_drop_when_nested)  # type: ignore[no-untyped-call]
    module.register_load_state_dict_pre_hook(_keep_when_absent)  # type: ignore[no-untyped-call]
