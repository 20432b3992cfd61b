"""The valid region of a separable float64 filter on numpy maps, shared by :mod:`featx.metrics.fidelity`
(SSIM on CPU tensors) and :mod:`featx.metrics.pixel_fidelity` (``featx score``'s SSIM on decoded pixels).

OpenCV's ``sepFilter2D`` when OpenCV is installed (the fastest float64 separable filter on CPU),
else SciPy's ``correlate1d``; the two agree to float64 rounding.
"""

from __future__ import annotations

import numpy as np

__all__ = ["separable_valid", "separable_valid_2d"]


def separable_valid(maps: np.ndarray, window: np.ndarray) -> np.ndarray:
    """The valid region of the separable filter ``window`` (odd length) on each float64 ``(H, W)`` map of ``(N, H, W)``.

    Example:
        >>> separable_valid(np.ones((1, 5, 6)), np.full(3, 1 / 3)).round(12).tolist()
        [[[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]]
    """
    pad = (len(window) - 1) // 2
    out = np.empty((maps.shape[0], maps.shape[1] - 2 * pad, maps.shape[2] - 2 * pad))
    try:
        import cv2  # type: ignore[import-not-found,unused-ignore]  # optional: the fastest separable filter
    except ImportError:
        from scipy import ndimage

        for index, image in enumerate(maps):
            rows = ndimage.correlate1d(image, window, axis=1, mode="constant")[:, pad:-pad]
            out[index] = ndimage.correlate1d(rows, window, axis=0, mode="constant")[pad:-pad]
        return out
    for index, image in enumerate(maps):
        out[index] = cv2.sepFilter2D(image, cv2.CV_64F, window, window, borderType=cv2.BORDER_CONSTANT)[pad:-pad, pad:-pad]
    return out


def separable_valid_2d(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """:func:`separable_valid` of one float64 ``(H, W)`` map (with OpenCV, a view of its full filtered map: no copy).

    Example:
        >>> separable_valid_2d(np.ones((5, 6)), np.full(3, 1 / 3)).shape
        (3, 4)
    """
    try:
        import cv2  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        only: np.ndarray = separable_valid(image[None], window)[0]
        return only
    pad = (len(window) - 1) // 2
    filtered: np.ndarray = cv2.sepFilter2D(image, cv2.CV_64F, window, window, borderType=cv2.BORDER_CONSTANT)
    return filtered[pad:-pad, pad:-pad]
