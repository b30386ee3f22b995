"""resmooth: adaptive regularization via residual smoothing (Cho, Kwon, Hong, 2019).

The public names of the library, re-exported from the module named after each idea. The
conventions they follow are fixed in the book's appendix, Conventions and notation.

``resmooth.residual`` and ``resmooth.diffusivity`` are the modules of those ideas; their functions
of the same name are called as ``resmooth.functional.residual(z, y)`` and
``resmooth.functional.diffusivity(d, t)``.

This package is the loss and needs torch alone. The trainer, data, models and studies that the
book runs are :mod:`resmooth.lab`, which needs the ``train`` extra (``pip install 'resmooth[train]'``).
"""

from importlib.metadata import version

from . import diffusivity, functional, residual
from .annealing import annealing_scale
from .diffusion import heat_diffuse, laplacian, smooth_residual, smoothing_matrix
from .diffusivity import DiffusivityMap, scaled_sigmoid
from .functional import residual_smoothing_loss, squared_error_loss
from .loss import ResidualSmoothingLoss, SquaredErrorLoss
from .residual import normalize_residual

# One version, pyproject.toml's, read from the installed package's metadata.
__version__ = version("resmooth")

__all__ = [
    "DiffusivityMap",
    "ResidualSmoothingLoss",
    "SquaredErrorLoss",
    "annealing_scale",
    "diffusivity",
    "heat_diffuse",
    "laplacian",
    "normalize_residual",
    "residual",
    "residual_smoothing_loss",
    "scaled_sigmoid",
    "smooth_residual",
    "smoothing_matrix",
    "squared_error_loss",
]
