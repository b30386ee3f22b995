"""Image tasks for dense outputs: corruptions, silhouette masks, quality metrics, total variation.

Intensities are in [0, 1]. The metrics are the usual ones: PSNR, SSIM (Wang, Bovik, Sheikh,
Simoncelli 2004, with the Gaussian window of their paper and scikit-image's defaults for it) and
the foreground intersection over union.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_real

NOISES = ("gaussian", "salt-pepper")


def corrupt(clean: Tensor, noise: str, level: float, generator: torch.Generator | None = None) -> Tensor:
    """``clean`` with noise: ``"gaussian"`` adds N(0, level^2) per pixel (unclipped);
    ``"salt-pepper"`` sets a fraction ``level`` of the pixels to 0 or 1, half each."""
    check_choice("noise", noise, NOISES)
    level = check_real("level", level, minimum=0.0)
    if noise == "gaussian":
        return clean + level * torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    if level > 1:
        raise ValueError(f"level must lie in [0, 1] for salt-pepper (a fraction of pixels); got {level:g}")
    u = torch.rand(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    out = torch.where(u < level / 2, torch.zeros_like(clean), clean)
    return torch.where((u >= level / 2) & (u < level), torch.ones_like(clean), out)


def silhouette(clean: Tensor, threshold: float = 0.1) -> Tensor:
    """The garment's mask, as class indices (N, H, W): 1 where any channel exceeds ``threshold``."""
    return (clean > threshold).any(dim=1).long()


def psnr(prediction: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per image (N,), for intensities in [0, 1]."""
    mse = (prediction - target).pow(2).flatten(1).mean(dim=1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def _gaussian_window(sigma: float, truncate: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(prediction: Tensor, target: Tensor, *, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (N,), channels averaged, for intensities in [0, 1].

    Local statistics under an 11-tap Gaussian window (sigma 1.5, Wang et al. 2004), population
    (co)variances, K1 = 0.01, K2 = 0.03; the mean is taken where the window fits inside the
    image, which is what scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False, data_range=1)`` averages.
    """
    if prediction.shape != target.shape or prediction.ndim != 4:
        raise ValueError(f"prediction and target must be (N, C, H, W) of one shape; got {tuple(prediction.shape)} and {tuple(target.shape)}")
    window = _gaussian_window(sigma, 3.5, prediction.device, prediction.dtype)
    if len(window) > min(prediction.shape[-2:]):
        raise ValueError(f"images of {tuple(prediction.shape[-2:])} are smaller than the {len(window)}-pixel window")
    n, c = prediction.shape[:2]

    def blur(u: Tensor) -> Tensor:
        u = u.reshape(n * c, 1, *u.shape[-2:])
        u = F.conv2d(u, window.view(1, 1, -1, 1))  # valid: no padding, so no boundary rule
        return F.conv2d(u, window.view(1, 1, 1, -1))

    mx, my = blur(prediction), blur(target)
    vx = blur(prediction * prediction) - mx * mx
    vy = blur(target * target) - my * my
    cxy = blur(prediction * target) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(n, c, -1).mean(dim=(1, 2))


def intersection_union(prediction: Tensor, target: Tensor) -> tuple[int, int]:
    """The foreground (class 1) pixels of two index masks in both, and in either: summed over a
    test set before dividing, they give the dataset's foreground IoU."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target must have one shape; got {tuple(prediction.shape)} and {tuple(target.shape)}")
    p, t = prediction == 1, target == 1
    return int((p & t).sum()), int((p | t).sum())


def total_variation(u: Tensor) -> Tensor:
    """Anisotropic total variation per sample (N,): the sum of the absolute forward differences over the
    last two dims and all channels (Rudin, Osher, Fatemi 1992, discretized)."""
    if u.ndim != 4:
        raise ValueError(f"u must be (N, C, H, W); got shape {tuple(u.shape)}")
    dy = (u[..., 1:, :] - u[..., :-1, :]).abs().flatten(1).sum(dim=1)
    dx = (u[..., :, 1:] - u[..., :, :-1]).abs().flatten(1).sum(dim=1)
    return dy + dx


__all__ = ["NOISES", "corrupt", "intersection_union", "psnr", "silhouette", "ssim", "total_variation"]
