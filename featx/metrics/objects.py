"""Metric objects for validation loops: torchmetrics metrics that keep one value per sample over a
validation set and give the same mean on any number of DDP ranks as in one process.

:class:`PerSampleMetric` wraps any function ``(pred, target) -> (B,)`` (a featx metric module built
with ``reduction="none"``, a PSNR function, ...); :class:`LPIPSMetric` and :class:`DISTSMetric` are
it on :class:`~featx.LPIPS` and :class:`~featx.DISTS`. Needs the ``metrics`` extra
(``pip install 'featx[metrics]'``, torchmetrics).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from featx._checks import check_choice
from featx.errors import FeatxTypeError, FeatxValueError
from featx.losses._features import REDUCTIONS

try:
    from torchmetrics import Metric
    from torchmetrics.utilities import dim_zero_cat
except ImportError as error:
    raise ImportError(
        f"featx's metric objects are torchmetrics metrics, and torchmetrics cannot be imported ({error}); "
        "install featx with its metrics extra: pip install 'featx[metrics]' (or pip install 'torchmetrics>=1.0,<2')"
    ) from error

from featx.metrics.dists import DISTS
from featx.metrics.fidelity import psnr, ssim
from featx.metrics.lpips import LPIPS

if TYPE_CHECKING:
    from featx._checks import InputRange
    from featx.weights import WeightsSpec
    from featx.weights.learned import LearnedSpec

__all__ = ["DISTSMetric", "LPIPSMetric", "PSNRMetric", "PerSampleFunction", "PerSampleMetric", "SSIMMetric"]

PerSampleFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(pred, target) -> (B,)``: one value per sample of the batch."""

SampleIds = Union[torch.Tensor, Sequence[int]]


class PerSampleMetric(Metric):
    """The mean (or sum, or every value) of a per-sample metric over a validation set, exact under DDP.

    ``update(pred, target)`` computes ``per_sample(pred, target)`` (under ``torch.no_grad()``) and
    keeps the ``(B,)`` values; ``compute()`` gathers every rank's values (torchmetrics'
    ``dist_reduce_fx="cat"``, uneven shards included) and reduces them in float64. The mean of 5
    images split 3 + 2 over two ranks is the mean of the 5 values, as in one process.

    Duplicated samples: ``torch.utils.data.DistributedSampler`` pads the dataset so that every rank
    gets the same count (5 images on 2 ranks: 3 + 3, one image twice), which would count an image
    twice. Either shard without padding (``Subset(dataset, range(rank, len(dataset), world_size))``,
    or Lightning's ``use_distributed_sampler=False`` with such a sampler), or pass each sample's
    dataset index as ``update(..., sample_ids=indices)``: values sharing an id are then counted once
    (their mean), whatever the sharding.

    Args:
        per_sample: ``(pred, target) -> (B,)``; an ``nn.Module`` (for example
            ``featx.LPIPS(reduction="none")``) becomes a child, so ``.to(device)`` moves it.
        reduction: what :meth:`compute` returns: ``"mean"`` (default), ``"sum"``, or ``"none"``:
            every value, ordered by sample id when ids were given (else in gather order).
        **kwargs: torchmetrics' ``Metric`` options (``sync_on_compute``, ``process_group``,
            ``compute_on_cpu``, ...).

    Raises:
        TypeError: ``per_sample`` is not callable.
        ValueError: unknown ``reduction``.

    Example:
        >>> mse = PerSampleMetric(lambda p, t: (p - t).square().flatten(1).mean(1))
        >>> mse.update(torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2))
        >>> mse.update(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0))
        >>> mse.compute()  # (1 + 1 + 4) / 3
        tensor(2., dtype=torch.float64)
    """

    is_differentiable = False
    full_state_update = False
    higher_is_better: Optional[bool] = None  # torchmetrics' constant: a subclass sets it (True for PSNR)
    values: Union[list[torch.Tensor], torch.Tensor]
    sample_ids: Union[list[torch.Tensor], torch.Tensor]

    def __init__(
        self,
        per_sample: PerSampleFunction,
        *,
        reduction: str = "mean",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(per_sample):
            raise FeatxTypeError(f"per_sample must be a function (pred, target) -> (B,), got {type(per_sample).__name__}")
        self.per_sample = per_sample
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        # Stored in the metric's dtype: torchmetrics gives a rank without samples an empty tensor of
        # that dtype, and every rank must gather tensors of one dtype.
        self.add_state("values", default=[], dist_reduce_fx="cat")
        self.add_state("sample_ids", default=[], dist_reduce_fx="cat")

    def update(self, pred: torch.Tensor, target: torch.Tensor, *, sample_ids: Optional[SampleIds] = None) -> None:
        """Score a batch and keep its per-sample values.

        Args:
            pred: the predictions, as ``per_sample`` takes them.
            target: the references.
            sample_ids: each sample's index in the validation set, ``(B,)`` integers ``>= 0``;
                values that share an id are counted once (see the class docstring).

        Raises:
            ValueError: ``per_sample`` did not return ``(B,)`` values, or bad ``sample_ids``.
        """
        with torch.no_grad():
            values = self.per_sample(pred, target)
        batch = pred.shape[0] if isinstance(pred, torch.Tensor) and pred.ndim > 0 else None
        if not isinstance(values, torch.Tensor) or values.ndim != 1 or (batch is not None and values.shape[0] != batch):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise FeatxValueError(
                f"per_sample must return one value per sample, shape ({batch if batch is not None else 'B'},), got "
                f"{got}; build featx metrics with reduction='none'"
            )
        ids = None if sample_ids is None else self._check_ids(sample_ids, values.shape[0], values.device)
        self._values_list().append(values.detach().to(self.dtype))
        if ids is not None:
            self._ids_list().append(ids)

    def _values_list(self) -> list[torch.Tensor]:
        if isinstance(self.values, torch.Tensor):  # after a sync without unsync: back to a list
            self.values = [self.values]
        return self.values

    def _ids_list(self) -> list[torch.Tensor]:
        if isinstance(self.sample_ids, torch.Tensor):
            self.sample_ids = [self.sample_ids]
        return self.sample_ids

    def _check_ids(self, sample_ids: SampleIds, batch: int, device: torch.device) -> torch.Tensor:
        ids = torch.as_tensor(sample_ids, device=device)
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise FeatxTypeError(f"sample_ids must be integers (dataset indices), got dtype {ids.dtype}")
        if ids.shape != (batch,):
            raise FeatxValueError(f"sample_ids must have shape ({batch},), one id per sample, got {tuple(ids.shape)}")
        exact = round(2 / torch.finfo(self.dtype).eps)  # ids are kept in the metric's dtype: 2**24 for float32
        if batch and (int(ids.min()) < 0 or int(ids.max()) >= exact):
            raise FeatxValueError(
                f"sample_ids must lie in [0, {exact}) for a metric of dtype {self.dtype}, got values in "
                f"[{int(ids.min())}, {int(ids.max())}]; call metric.set_dtype(torch.float64) for larger ids"
            )
        return ids.to(self.dtype)

    def compute(self) -> torch.Tensor:
        """The reduced values of every sample seen (on every rank), in float64.

        Raises:
            ValueError: no sample was seen, or ``sample_ids`` were given for some samples only.
        """
        values = _cat(self.values)
        if values.numel() == 0:
            raise FeatxValueError(f"{type(self).__name__} has no samples: call update(pred, target) before compute()")
        ids = _cat(self.sample_ids)
        if ids.numel():
            if ids.numel() != values.numel():
                raise FeatxValueError(
                    f"sample_ids were given for {ids.numel()} of {values.numel()} samples: pass them to every "
                    "update() on every rank, or to none"
                )
            unique, inverse = torch.unique(ids.double(), return_inverse=True)
            sums = torch.zeros(unique.numel(), dtype=torch.float64, device=values.device).index_add_(0, inverse, values)
            counts = torch.zeros_like(sums).index_add_(0, inverse, torch.ones_like(values))
            values = sums / counts
        if self.reduction == "none":
            return values
        return values.mean() if self.reduction == "mean" else values.sum()


def _cat(state: Union[list[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """A list state (or its synced tensor) as one float64 tensor; empty if nothing was kept."""
    if isinstance(state, list) and not state:
        return torch.zeros(0, dtype=torch.float64)
    result: torch.Tensor = dim_zero_cat(state)
    return result.double()


class LPIPSMetric(PerSampleMetric):
    """:class:`PerSampleMetric` of :class:`~featx.LPIPS`: the mean LPIPS over a validation set.

    Takes LPIPS's options (see :class:`~featx.LPIPS`; the module is built with
    ``reduction="none"`` and is :attr:`per_sample`), ``reduction`` for :meth:`compute`, and
    torchmetrics' ``Metric`` options. Its provenance attributes are on :attr:`per_sample`.

    Example:
        >>> import warnings
        >>> lin = {f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # a random backbone: for the example only
        ...     metric = LPIPSMetric(weights=None, lin_weights=lin)
        >>> x = torch.rand(2, 3, 64, 64)
        >>> metric.update(x, x, sample_ids=[0, 1])
        >>> float(metric.compute()), metric.higher_is_better, metric.per_sample.lin_weights_id
        (0.0, False, 'state_dict')
    """

    per_sample: LPIPS
    higher_is_better = False

    def __init__(
        self,
        net: str = "alex",
        *,
        weights: WeightsSpec = "DEFAULT",
        lin_weights: LearnedSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        gray: str = "error",
        verify_weights: Optional[str] = None,
        reduction: str = "mean",
        **kwargs: Any,
    ) -> None:
        module = LPIPS(
            net,
            weights=weights,
            lin_weights=lin_weights,
            input_range=input_range,
            gray=gray,
            verify_weights=verify_weights,
            reduction="none",
        )
        super().__init__(module, reduction=reduction, **kwargs)


class DISTSMetric(PerSampleMetric):
    """:class:`PerSampleMetric` of :class:`~featx.DISTS`: the mean DISTS over a validation set.

    Takes DISTS's options (see :class:`~featx.DISTS`; the module is built with
    ``reduction="none"`` and is :attr:`per_sample`), ``reduction`` for :meth:`compute`, and
    torchmetrics' ``Metric`` options.
    """

    per_sample: DISTS
    higher_is_better = False

    def __init__(
        self,
        *,
        weights: WeightsSpec = "DEFAULT",
        dists_weights: LearnedSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        gray: str = "error",
        verify_weights: Optional[str] = None,
        reduction: str = "mean",
        **kwargs: Any,
    ) -> None:
        module = DISTS(
            weights=weights,
            dists_weights=dists_weights,
            input_range=input_range,
            gray=gray,
            verify_weights=verify_weights,
            reduction="none",
        )
        super().__init__(module, reduction=reduction, **kwargs)


class PSNRMetric(PerSampleMetric):
    """:class:`PerSampleMetric` of :func:`~featx.psnr`: the mean of per-image PSNR in dB, as BasicSR averages it.

    Takes :func:`~featx.psnr`'s options (``data_range``, ``crop_border``, ``y_channel``, ``eps``),
    ``reduction`` for :meth:`compute`, and torchmetrics' ``Metric`` options.

    Example:
        >>> metric = PSNRMetric(crop_border=2)
        >>> hr = torch.full((2, 3, 16, 16), 0.5)
        >>> metric.update(hr + 0.1, hr)
        >>> round(float(metric.compute()), 4), metric.higher_is_better  # kept as float32 values
        (20.0, True)
    """

    higher_is_better = True

    def __init__(
        self,
        *,
        data_range: float = 1.0,
        crop_border: int = 0,
        y_channel: bool = False,
        eps: float = 0.0,
        reduction: str = "mean",
        **kwargs: Any,
    ) -> None:
        per_image = functools.partial(
            psnr, data_range=data_range, crop_border=crop_border, y_channel=y_channel, eps=eps, reduction="none"
        )
        super().__init__(per_image, reduction=reduction, **kwargs)


class SSIMMetric(PerSampleMetric):
    """:class:`PerSampleMetric` of :func:`~featx.ssim`: the mean of per-image SSIM.

    Takes :func:`~featx.ssim`'s options (``data_range``, ``crop_border``, ``y_channel``),
    ``reduction`` for :meth:`compute`, and torchmetrics' ``Metric`` options.

    Example:
        >>> metric = SSIMMetric()
        >>> x = torch.rand(2, 3, 16, 16)
        >>> metric.update(x, x)
        >>> round(float(metric.compute()), 12)
        1.0
    """

    higher_is_better = True

    def __init__(
        self,
        *,
        data_range: float = 1.0,
        crop_border: int = 0,
        y_channel: bool = False,
        reduction: str = "mean",
        **kwargs: Any,
    ) -> None:
        per_image = functools.partial(
            ssim, data_range=data_range, crop_border=crop_border, y_channel=y_channel, reduction="none"
        )
        super().__init__(per_image, reduction=reduction, **kwargs)
