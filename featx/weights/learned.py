"""The learned layers of the calibrated metrics (LPIPS's ``lin_weights``, DISTS's ``dists_weights``): resolved like ``weights``,
read whole (they are a few kB), checked strictly and recorded with their provenance."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

from torch import Tensor

from featx._checks import closest
from featx.errors import FeatxTypeError, FeatxValueError, MissingWeights, WeightsLoadError, WeightsNotFoundError
from featx.weights.checkpoint import read_checkpoint, sha256_file
from featx.weights.loading import LoadedWeights, provenance_id
from featx.weights.locations import find, missing_checkpoint_error, search_dirs
from featx.weights.matching import check_values
from featx.weights.registry import MetricWeights
from featx.weights.verification import check_known_hash, verify_mode

__all__ = ["LearnedSpec", "load_learned"]

LearnedSpec = Union[str, MetricWeights, "os.PathLike[str]", Mapping[str, Tensor]]
"""What ``lin_weights=`` accepts: ``"DEFAULT"``, a :class:`MetricWeights` member or its name, a path
to a ``.pth``/``.pt``/``.safetensors`` file, or an in-memory state dict."""


def _resolve(spec: object, default: MetricWeights, argument: str) -> Union[MetricWeights, Path]:
    """The known checkpoint or the file ``spec`` names; raises for wrong names, types and kinds."""
    member: Optional[MetricWeights] = None
    if isinstance(spec, MetricWeights):
        member = spec
    elif isinstance(spec, enum.Enum):
        raise FeatxTypeError(f"{argument}={spec!r} is an enum member but not a MetricWeights member")
    elif isinstance(spec, str):
        if spec == "DEFAULT":
            return default
        if spec in MetricWeights.__members__:
            member = MetricWeights[spec]
        elif "/" in spec or os.sep in spec or spec.startswith("~") or Path(spec).suffix:
            return Path(spec).expanduser()
        else:
            choices = ["DEFAULT", *(m.name for m in MetricWeights if m.kind == default.kind)]
            raise FeatxValueError(
                f"unknown {argument} {spec!r}: not a checkpoint name and no such file.{closest(spec, choices)} "
                f"Valid names: {', '.join(choices)}; or pass a path to a .pth/.pt/.safetensors file"
            )
    elif isinstance(spec, os.PathLike):
        return Path(os.fspath(spec)).expanduser()
    else:
        raise FeatxTypeError(
            f"{argument} must be 'DEFAULT', a MetricWeights member or name, a path or a state dict, "
            f"got {type(spec).__name__}"
        )
    if member.kind != default.kind or member.arch != default.arch:
        raise FeatxValueError(
            f"{argument}={member.name} holds {member.kind} weights for {member.arch}, but {default.kind} weights "
            f"for {default.arch} are needed; use {argument}='DEFAULT' ({default.name})"
        )
    return member


def _missing(member: MetricWeights, argument: str) -> WeightsNotFoundError:
    """The not-found error of a known checkpoint, naming this argument's path fix (``dists_weights=PATH``,
    ``lin_weights=PATH``) rather than the backbone's ``weights=PATH``."""
    return missing_checkpoint_error(member, search_dirs(), argument=argument)


def _select(
    state: Mapping[str, Tensor], expected: Mapping[str, Sequence[int]], where: str, reference: MetricWeights
) -> dict[str, Tensor]:
    """Exactly the ``expected`` keys with their shapes (strict), finite floating-point values."""
    path = where if where != "the in-memory state dict" else None
    missing = sorted(key for key in expected if key not in state)
    unexpected = sorted(key for key in state if key not in expected)
    mismatched = sorted(
        f"{key}: expected {tuple(shape)}, got {tuple(state[key].shape)}"
        for key, shape in expected.items()
        if key in state and tuple(state[key].shape) != tuple(shape)
    )
    if missing or unexpected or mismatched:
        parts = [f"{where} does not fit (loading is strict):"]
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if keys:
                parts.append(f"  {label} ({len(keys)}): {keys[:20]}")
        parts.append(f"expected keys: {list(expected)[:3]} ... (as in {reference.name}: {reference.value.source})")
        raise WeightsLoadError(
            "\n".join(parts), path=path, missing=missing, unexpected=unexpected, mismatched=mismatched
        )
    selected = {key: state[key] for key in expected}
    check_values(selected, where)
    return selected


def load_learned(
    spec: LearnedSpec,
    *,
    default: MetricWeights,
    expected: Mapping[str, Sequence[int]],
    verify: Optional[str] = None,
    argument: str = "lin_weights",
) -> LoadedWeights:
    """Resolve a learned-layers argument (``lin_weights=``) and strictly load its tensors.

    Never opens a network connection: a name is looked up in :func:`~featx.weights.search_dirs`
    (``featx weights download NAME`` puts it there), then in the installed package that ships the
    file (``lpips``, ``dists-pytorch``; used only if its sha256 matches, never copied). A file loaded
    by name, or whose file name is a known checkpoint's, is checked against that checkpoint's size and
    sha256 at every load (a file under another name is recognised by its sha256), as
    :func:`~featx.weights.load_weights` does (``verify`` / ``FEATX_REQUIRE_VERIFIED``). Files are
    read on CPU with ``weights_only=True`` (the lpips files were saved from CUDA tensors).

    Args:
        spec: ``"DEFAULT"`` (``default``), a :class:`MetricWeights` member or its name (of the same
            kind and arch as ``default``), a path, or an in-memory state dict.
        default: the checkpoint ``"DEFAULT"`` means.
        expected: every key -> shape; the source must hold exactly these keys.
        verify: ``"warn"``, ``"error"`` or ``None`` (the environment decides), as in ``load_weights``.
        argument: the argument's name, for messages.

    Returns:
        :class:`~featx.weights.LoadedWeights` with ``weights_id`` the checkpoint name (sha256
        matched), ``"unverified:<name>"``, ``"file:<path>"`` or ``"state_dict"``.

    Raises:
        TypeError: an unsupported type, or a state dict with non-tensor values.
        ValueError: an unknown name, or a checkpoint of another kind or arch.
        WeightsNotFoundError: the file is not on disk (the message says how to get it).
        WeightsLoadError: missing, unexpected or mis-shaped keys, non-finite values, unreadable file.
        HashMismatchError: with ``verify="error"``, a file whose sha256 does not match its name.

    Example:
        >>> import torch
        >>> expected = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate((64, 192))}
        >>> state = {key: torch.rand(shape) for key, shape in expected.items()}
        >>> loaded = load_learned(state, default=MetricWeights.LPIPS_ALEX_V0_1, expected=expected)
        >>> loaded.weights_id, sorted(loaded.state_dict)
        ('state_dict', ['lin0.model.1.weight', 'lin1.model.1.weight'])
    """
    mode = verify_mode(verify)
    if spec is None:
        raise FeatxTypeError(
            f"{argument}=None: the learned layers are what makes the metric calibrated; pass 'DEFAULT' "
            f"({default.name}), a path or a state dict"
        )
    if isinstance(spec, Mapping):
        bad = [key for key, value in spec.items() if not (isinstance(key, str) and isinstance(value, Tensor))]
        if bad:
            raise FeatxTypeError(f"a state dict must map str keys to tensors; entries {sorted(map(str, bad))[:10]} do not")
        return LoadedWeights(_select(spec, expected, "the in-memory state dict", default), "state_dict", None, None)
    target = _resolve(spec, default, argument)
    member = target if isinstance(target, MetricWeights) else None
    if isinstance(target, MetricWeights):
        found = find(target)
        if found is None:
            raise _missing(target, argument)
        path = found
    else:
        path = target
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{argument} file not found: {path.absolute()}. Pass an existing .pth/.pt/.safetensors file, or "
                f"'DEFAULT' ({default.name}; get it with `featx weights download {default.name}`)",
                path=str(path),
                missing=[MissingWeights(argument, str(path.absolute()))],
            )
        path = path.resolve()
    sha256 = sha256_file(path)
    check = check_known_hash(path, sha256, member, mode)
    weights_id = f"file:{path}" if member is None else provenance_id(member.name, check.verification)
    state = _select(read_checkpoint(path), expected, str(path), default)
    name = None if check.checkpoint is None else check.checkpoint.name
    return LoadedWeights(state, weights_id, sha256, str(path), check.verification, name)
