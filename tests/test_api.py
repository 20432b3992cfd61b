"""The API grammar of docs/api.md, checked on the real objects:

- the lazy ``featx`` exports, ``__all__`` and the ``TYPE_CHECKING`` imports agree;
- options are keyword-only; ``return_terms`` is keyword-only and has ``@overload``s;
- ``...Loss`` modules take images, ``...OnFeatures`` modules take features;
- ``reduction`` has one meaning: ``"sum"`` is the batch sum and ``"mean"`` the batch mean of
  the ``"none"`` values, for every loss function and module (the reference is the ``"none"``
  output itself, computed in float64);
- every featx exception derives from ``FeatxError`` and every warning from ``FeatxWarning``.
"""

from __future__ import annotations

import ast
import inspect
import sys
import typing
import warnings
from pathlib import Path

import pytest
import torch

import featx
import featx.errors

ROOT = Path(__file__).resolve().parents[1]

# the data a function or module works on, passed positionally; everything else is an option
DATA = {
    "self", "a", "b", "feat", "feats", "pred_feats", "target_feats", "layer_weights", "sr_levels",
    "texture_levels", "soft_attention", "pred", "target", "x", "pool5", "image", "taps", "out", "arch",
    "perceptual", "style", "texture", "path", "tensors", "metadata", "height", "width", "input", "inputs",
    "output", "weights", "name", "deepest_tap", "ctx", "extractor",
    "net",  # LPIPS(net): the backbone variant, the counterpart of VGGFeatures' arch
    "options",  # extract_features(inputs, output, options): one ExtractOptions object holding every option
    "per_sample",  # PerSampleMetric(per_sample): the function whose values the metric object accumulates
}  # fmt: skip


def public_callables():
    for name in featx.__all__:
        value = getattr(featx, name)
        if inspect.isclass(value) and issubclass(value, torch.nn.Module):
            yield f"{name}.__init__", value.__init__
            yield f"{name}.forward", value.forward
        elif inspect.isfunction(value):
            yield name, value


def test_exports_all_and_type_checking_imports_agree():
    exported = set(featx._EXPORTS)
    assert set(featx.__all__) == exported | {"__version__"}
    tree = ast.parse((ROOT / "featx" / "__init__.py").read_text(encoding="utf-8"))
    guarded = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for item in node.body:
                guarded.update({alias.name: item.module for alias in item.names})
    assert guarded == featx._EXPORTS
    for name in featx.__all__:
        assert getattr(featx, name) is not None


@pytest.mark.parametrize("qualname, function", list(public_callables()), ids=lambda v: v if isinstance(v, str) else "")
def test_options_are_keyword_only(qualname, function):
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            assert parameter.name in DATA, f"{qualname}: option {parameter.name!r} can be passed positionally"
    if "return_terms" in inspect.signature(function).parameters:
        assert inspect.signature(function).parameters["return_terms"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads is new in Python 3.11")
def test_return_terms_has_overloads():
    checked = 0
    for qualname, function in public_callables():
        if "return_terms" in inspect.signature(function).parameters and not qualname.endswith("__init__"):
            overloads = typing.get_overloads(function)
            returns = {inspect.signature(o).parameters["return_terms"].annotation for o in overloads}
            assert returns == {"Literal[False]", "Literal[True]"}, qualname
            checked += 1
    assert checked >= 10  # the 6 loss functions and the modules' forward methods


def test_loss_names_tell_images_from_features():
    for name in featx.__all__:
        value = getattr(featx, name)
        if not (inspect.isclass(value) and issubclass(value, torch.nn.Module)):
            continue
        first = list(inspect.signature(value.forward).parameters)[1]
        if name.endswith("Loss"):
            assert first == "pred", f"{name} is named like an image loss but its forward takes {first!r}"
        elif name.endswith("OnFeatures"):
            assert first in ("pred_feats", "sr_levels"), f"{name} takes {first!r}"


def feats(batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "relu1_1": torch.rand(batch, 3, 6, 5, generator=gen, dtype=torch.float64),
        "relu2_1": torch.rand(batch, 4, 3, 3, generator=gen, dtype=torch.float64),
    }


LAYERS = {"relu1_1": 1.0, "relu2_1": 0.5}


def loss_calls():
    """Every loss function and feature module, as ``reduction -> value`` callables."""
    pred, target = feats(seed=1), feats(seed=2)
    levels = [torch.rand(3, 2, 8, 8, dtype=torch.float64), torch.rand(3, 2, 4, 4, dtype=torch.float64),
              torch.rand(3, 2, 2, 2, dtype=torch.float64)]  # fmt: skip
    textures = [level.flip(0) for level in levels]
    yield "feature_distance/" , lambda r: featx.feature_distance(pred["relu1_1"], target["relu1_1"], reduction=r)
    for criterion in featx.CRITERIA:
        yield f"perceptual/{criterion}", lambda r, c=criterion: featx.perceptual_loss(
            pred, target, LAYERS, criterion=c, reduction=r
        )
    yield "style", lambda r: featx.style_loss(pred, target, LAYERS, reduction=r)
    yield "sliced_wasserstein", lambda r: featx.sliced_wasserstein_loss(pred, target, LAYERS, seed=0, reduction=r)
    yield "moments", lambda r: featx.moment_loss(pred, target, LAYERS, reduction=r)
    yield "contextual", lambda r: featx.contextual_loss(pred, target, LAYERS, seed=0, reduction=r)
    yield "transferal", lambda r: featx.transferal_perceptual_loss(levels, textures, reduction=r)
    yield "SlicedWassersteinOnFeatures", lambda r: featx.SlicedWassersteinOnFeatures(LAYERS, seed=0, reduction=r)(
        pred, target
    )
    yield "MomentsOnFeatures", lambda r: featx.MomentsOnFeatures(LAYERS, reduction=r)(pred, target)
    yield "TransferalPerceptualOnFeatures", lambda r: featx.TransferalPerceptualOnFeatures(reduction=r)(
        levels, textures
    )


@pytest.mark.parametrize("name, call", list(loss_calls()), ids=lambda v: v if isinstance(v, str) else "")
def test_reduction_has_one_meaning(name, call):
    per_sample = call("none")
    assert per_sample.shape == (3,) and per_sample.dtype == torch.float64
    torch.testing.assert_close(call("sum"), per_sample.sum(), rtol=1e-12, atol=0)
    torch.testing.assert_close(call("mean"), per_sample.mean(), rtol=1e-12, atol=0)


def test_image_loss_modules_reduce_the_same_way():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", featx.RandomWeightsWarning)
        modules = {
            r: featx.FeatureLoss(perceptual={"relu2_1": 1.0}, style={"relu1_1": 1.0}, style_weight=2.0,
                                 arch="vgg11", weights=None, reduction=r).double()
            for r in ("none", "sum", "mean")
        }  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 3, 16, 16, generator=gen, dtype=torch.float64)
    target = torch.rand(3, 3, 16, 16, generator=gen, dtype=torch.float64)
    for module in modules.values():  # the same random backbone for all three
        module.load_state_dict(modules["none"].state_dict())
        module.extractor.load_state_dict(modules["none"].extractor.state_dict())
    per_sample = modules["none"](pred, target)
    torch.testing.assert_close(modules["sum"](pred, target), per_sample.sum(), rtol=1e-12, atol=0)
    torch.testing.assert_close(modules["mean"](pred, target), per_sample.mean(), rtol=1e-12, atol=0)


def test_every_exception_and_warning_has_the_featx_base():
    classes = [getattr(featx.errors, name) for name in featx.errors.__all__]
    assert len(classes) >= 10
    for cls in classes:
        if issubclass(cls, Warning):
            assert issubclass(cls, featx.errors.FeatxWarning), cls
        elif cls is featx.errors.ExtractionInterrupted:  # Ctrl-C: a KeyboardInterrupt, never caught as an error
            assert issubclass(cls, KeyboardInterrupt) and not issubclass(cls, Exception)
        else:
            assert issubclass(cls, featx.errors.FeatxError), cls
    # the builtin bases code catches today are kept
    assert issubclass(featx.WeightsNotFoundError, FileNotFoundError)
    assert issubclass(featx.WeightsLoadError, ValueError) and issubclass(featx.ImageDecodeError, ValueError)
    assert issubclass(featx.OutputNotWritableError, OSError)


def test_library_raises_only_featx_exceptions():
    """No ``raise ValueError(...)``/``TypeError``/... in featx/: argument and data errors use the
    featx classes (``FeatxValueError`` and ``FeatxTypeError`` keep the builtin bases), so
    ``except featx.FeatxError`` catches every error featx raises on purpose."""
    builtin = {"ValueError", "TypeError", "FileNotFoundError", "OSError", "RuntimeError", "KeyError"}
    offences = []
    for path in sorted((ROOT / "featx").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                name = getattr(node.exc.func, "id", None)
                if name in builtin:
                    offences.append(f"{path.relative_to(ROOT)}:{node.lineno} raises {name}")
    assert not offences, "\n".join(offences)


def test_a_bad_argument_is_a_featx_error_and_a_value_error():
    message = r"unknown criterion 'charbonier'\. Did you mean 'charbonnier'\? Valid choices: 'l1'"
    with pytest.raises(featx.FeatxError, match=message):
        featx.feature_distance(torch.zeros(1, 2), torch.zeros(1, 2), criterion="charbonier")
    with pytest.raises(ValueError):
        featx.feature_distance(torch.zeros(1, 2), torch.zeros(1, 2), criterion="l3")
    with pytest.raises(TypeError) as info:
        featx.gram_matrix("not a tensor")
    assert isinstance(info.value, featx.FeatxError)


def test_every_warning_has_a_featx_category():
    """Each ``warnings.warn`` in featx/ names a category from featx.errors (a ``FeatxWarning``), so
    ``warnings.filterwarnings("ignore", category=featx.FeatxWarning)`` silences featx alone."""
    categories = set(featx.errors.__all__)
    offences = []
    for path in sorted((ROOT / "featx").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "warn":
                category = node.args[1] if len(node.args) > 1 else None
                category = next((k.value for k in node.keywords if k.arg == "category"), category)
                name = getattr(category, "id", None)
                if name not in categories or not issubclass(getattr(featx.errors, name), featx.FeatxWarning):
                    shown = ast.unparse(category) if category else "UserWarning"
                    offences.append(f"{path.relative_to(ROOT)}:{node.lineno} warns {shown}")
    assert not offences, "\n".join(offences)
