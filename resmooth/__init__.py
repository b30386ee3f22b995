"""resmooth: adaptive regularization via residual smoothing (Cho, Kwon, Hong, 2019).

The public names of the library, re-exported from the module named after each idea. The
conventions they follow are fixed in the book's appendix, Conventions and notation.
"""

from importlib.metadata import version

from .annealing import annealing_scale
from .diffusion import heat_diffuse, laplacian, smooth_residual, smoothing_matrix
from .diffusivity import DiffusivityMap, diffusivity, scaled_sigmoid
from .loss import ResidualSmoothingLoss, SquaredErrorLoss, squared_error_loss
from .residual import normalize_residual, residual

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
    "scaled_sigmoid",
    "smooth_residual",
    "smoothing_matrix",
    "squared_error_loss",
]
