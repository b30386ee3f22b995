"""The grid operator (Eq. 8) against scipy, and the heat equation's invariants."""

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resmooth import heat_diffuse, laplacian
from resmooth.diffusion import stable_steps


def smooth_field(shape, width=3.0, seed=0):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.standard_normal(shape), width, mode="reflect")


@pytest.mark.parametrize("shape,ndim", [((17,), 1), ((3, 17), 1), ((13, 9), 2), ((2, 3, 13, 9), 2), ((7, 6, 5), 3), ((2, 7, 6, 5), 3)])
def test_laplacian_equals_scipy_nearest(shape, ndim):
    u = np.random.default_rng(1).standard_normal(shape)
    ours = laplacian(torch.from_numpy(u), ndim).numpy()
    lead = shape[: len(shape) - ndim]
    for idx in np.ndindex(*lead):
        ref = ndi.laplace(u[idx], mode="nearest")
        np.testing.assert_allclose(ours[idx], ref, rtol=0, atol=1e-12)


def test_laplacian_float32_and_single_cell():
    u = torch.rand(4, 1, 1)
    assert torch.equal(laplacian(u, 2), torch.zeros_like(u))
    x = torch.rand(5, 8, 8)
    ref = np.stack([ndi.laplace(a, mode="nearest") for a in x.double().numpy()])
    np.testing.assert_allclose(laplacian(x, 2).numpy(), ref, atol=1e-5)


def test_heat_diffuse_matches_gaussian_blur():
    # Constant kappa: the continuous solution is a Gaussian blur of sigma = sqrt(2 kappa tau).
    # The replicated edge cell is the discrete zero-flux boundary; its continuous counterpart is
    # the half-sample reflection, scipy's mode="reflect". mode="nearest" (the edge value
    # extended to infinity) agrees only away from the boundary, which is checked separately.
    # What is left is the lattice's own dispersion: the discrete heat kernel has the Gaussian's
    # variance 2 kappa tau but not its higher moments, an error of order u'''' * tau that is
    # below 1% of max|u| for a field smooth over 3 cells (measured: 0.2-0.5%). The time
    # discretization error, measured against the semi-discrete solution (many small steps),
    # shrinks as the steps grow (at coarse steps it partly cancels the lattice's error, so
    # against the Gaussian itself the error is not monotone in the steps).
    u = smooth_field((64, 64))
    kappa, tau = 1.0, 2.0
    sigma = np.sqrt(2 * kappa * tau)
    scale = np.abs(u).max()
    reflect = ndi.gaussian_filter(u, sigma, mode="reflect")
    nearest = ndi.gaussian_filter(u, sigma, mode="nearest")
    inner = slice(int(4 * sigma) + 1, -int(4 * sigma) - 1)
    semi_discrete = heat_diffuse(torch.from_numpy(u), kappa, tau, ndim=2, steps=4096).numpy()
    time_errors = []
    for steps in (8, 32, 256):
        out = heat_diffuse(torch.from_numpy(u), kappa, tau, ndim=2, steps=steps).numpy()
        assert np.abs(out - reflect).max() / scale < 0.01
        assert np.abs(out - nearest)[inner, inner].max() / scale < 0.01
        time_errors.append(np.abs(out - semi_discrete).max() / scale)
    assert time_errors[0] > time_errors[1] > time_errors[2]
    assert time_errors[2] < 1e-3


@pytest.mark.parametrize("tau,kappa,ndim", [(1.0, 1.0, 2), (1.0, 0.25, 2), (0.0, 1.0, 3), (0.7, 0.9, 3), (2.5, 0.3, 1)])
def test_the_step_count_is_the_fewest_that_the_stability_rule_allows(tau, kappa, ndim):
    # The rule: dt * kappa <= 1 / (2 ndim), dt = tau / steps; one step fewer breaks it.
    steps = stable_steps(tau, kappa, ndim)
    assert (tau / steps) * kappa <= 1 / (2 * ndim)
    assert steps == 1 or (tau / (steps - 1)) * kappa > 1 / (2 * ndim)


def test_heat_diffuse_default_steps_are_the_fewest_stable():
    # By hand: tau = 1, kappa = 1 in 2-D needs dt <= 1/4, four steps.
    u = torch.rand(16, 16, dtype=torch.float64)
    assert torch.allclose(heat_diffuse(u, 1.0, 1.0, 2), heat_diffuse(u, 1.0, 1.0, 2, steps=4))
    with pytest.raises(ValueError, match="steps=3 is unstable"):
        heat_diffuse(u, 1.0, 1.0, 2, steps=3)


def test_at_the_stability_limit_a_point_source_becomes_a_checkerboard():
    u = torch.zeros(9, 9, dtype=torch.float64)
    u[4, 4] = 1.0
    out = heat_diffuse(u, 0.25, 1.0, ndim=2)  # one step, dt * kappa = 1/4: centre weight 0
    assert out[4, 4] == 0 and out[3, 4] == 0.25 and out[3, 3] == 0


def test_unstable_steps_blow_up_while_stable_ones_decay():
    from resmooth.diffusion import explicit_euler

    u = torch.from_numpy(np.random.default_rng(0).standard_normal((32, 32)))
    stable = explicit_euler(u, 1.0, 0.25, 40, 2)
    unstable = explicit_euler(u, 1.0, 0.4, 40, 2)
    assert stable.abs().max() <= u.abs().max()
    assert unstable.abs().max() > 1e3 * u.abs().max()


@settings(max_examples=40, deadline=None)
@given(
    ndim=st.integers(1, 3),
    kappa=st.floats(0.0, 2.0),
    tau=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_grid_diffusion_conserves_the_sum(ndim, kappa, tau, seed):
    shape = (2,) + (5,) * ndim
    u = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))
    out = heat_diffuse(u, kappa, tau, ndim)
    dims = tuple(range(1, 1 + ndim))
    torch.testing.assert_close(out.sum(dims), u.sum(dims), rtol=0, atol=1e-10)
    # A stable explicit step is a convex combination of neighbours: a maximum principle.
    assert out.max() <= u.max() + 1e-12 and out.min() >= u.min() - 1e-12


@settings(max_examples=25, deadline=None)
@given(ndim=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_zero_diffusivity_is_the_identity(ndim, seed):
    u = torch.from_numpy(np.random.default_rng(seed).standard_normal((3,) + (4,) * ndim))
    assert torch.equal(heat_diffuse(u, 0.0, 5.0, ndim), u)
    assert torch.equal(heat_diffuse(u, torch.zeros_like(u), 5.0, ndim), u)


def test_spatially_varying_kappa_holds_where_kappa_is_zero():
    u = torch.rand(1, 12, 12, dtype=torch.float64)
    kappa = torch.ones_like(u)
    kappa[..., :6] = 0.0
    out = heat_diffuse(u, kappa, 1.0, ndim=2)
    assert torch.equal(out[..., :6], u[..., :6])
    assert not torch.allclose(out[..., 7:], u[..., 7:])


def test_heat_diffuse_gradcheck():
    u = torch.rand(2, 5, 5, dtype=torch.float64, requires_grad=True)
    kappa = torch.rand(2, 5, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: heat_diffuse(x, kappa, 0.7, ndim=2), (u,))
