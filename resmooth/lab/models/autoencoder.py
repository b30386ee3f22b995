"""A small convolutional autoencoder for dense outputs (denoising, segmentation): chapter 10.

Two stride-2 convolutions down to a quarter of the resolution and two transposed convolutions
back, without skip connections (the paper's "autoencoder architectures", Sec. 1), so everything
the output knows of the input passes through the 7x7 bottleneck of a 28x28 image.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..._checks import check_int


def _block(layer: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(layer, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class ConvAutoencoder(nn.Module):
    """``(N, in_channels, H, W) -> (N, out_channels, H, W)`` logits; H and W divisible by 4.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output (1 for an intensity, C for C-class segmentation).
        width: channels of the first layer; the bottleneck has four times as many.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width)):
            check_int(name, value, 1)
        w = width
        self.encoder = nn.Sequential(
            _block(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), w),
            _block(nn.Conv2d(w, 2 * w, 3, 2, 1, bias=False), 2 * w),
            _block(nn.Conv2d(2 * w, 4 * w, 3, 2, 1, bias=False), 4 * w),
        )
        self.decoder = nn.Sequential(
            _block(nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False), 2 * w),
            _block(nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), w),
            nn.Conv2d(w, out_channels, 3, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"x must be (N, C, H, W) with H and W divisible by 4; got shape {tuple(x.shape)}")
        return self.decoder(self.encoder(x))
