"""The global operator (Eq. 22), the diffusivity (Eq. 10-21) and the annealing (Eq. 13, 14)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from resmooth import (
    annealing_scale,
    normalize_residual,
    scaled_sigmoid,
    smooth_residual,
    smoothing_matrix,
)
from resmooth.functional import diffusivity

residuals = st.integers(2, 40).flatmap(
    lambda m: hnp.arrays(np.float64, (3, m), elements=st.floats(0, 1, allow_subnormal=False))
)


@settings(max_examples=60, deadline=None)
@given(d=residuals, seed=st.integers(0, 2**16))
def test_rows_of_w_sum_to_one_and_dense_equals_o_m(d, seed):
    d = torch.from_numpy(d)
    kappa = torch.from_numpy(np.random.default_rng(seed).uniform(0, 1.5, d.shape))
    w = smoothing_matrix(kappa)
    torch.testing.assert_close(w.sum(-1), torch.ones_like(kappa), rtol=0, atol=1e-12)
    dense = (w @ d.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(smooth_residual(d, kappa), dense, rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(d=residuals, frac=st.floats(0, 1))
def test_small_kappa_gives_a_convex_combination(d, frac):
    d = torch.from_numpy(d)
    m = d.shape[-1]
    kappa = torch.full_like(d, frac * (m - 1) / m)
    r = smooth_residual(d, kappa)
    lo, hi = d.min(-1, keepdim=True).values, d.max(-1, keepdim=True).values
    assert bool((r >= lo - 1e-12).all() and (r <= hi + 1e-12).all())


def test_zero_kappa_is_the_identity_and_full_kappa_averages():
    d = torch.rand(4, 7, dtype=torch.float64)
    assert torch.equal(smooth_residual(d, torch.zeros_like(d)), d)
    assert torch.equal(smoothing_matrix(torch.zeros(7)), torch.eye(7))
    # kappa = (M - 1) / M replaces every element by the sample's mean.
    r = smooth_residual(d, 6 / 7)
    torch.testing.assert_close(r, d.mean(-1, keepdim=True).expand_as(d))


def test_scaled_sigmoid_eq10():
    assert scaled_sigmoid(0.0, 2.0, 5.0) == pytest.approx(1.0)
    assert scaled_sigmoid(1.0, 1.0, 1.0) == pytest.approx(1 / (1 + math.e**-1))
    x = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(scaled_sigmoid(x, 3.0, 0.0), torch.full_like(x, 1.5))
    torch.testing.assert_close(scaled_sigmoid(x, 0.5, 2.0), 0.5 / (1 + torch.exp(-2 * x)))


@pytest.mark.parametrize("distribution", ["laplace", "logistic"])
def test_annealing_peaks_at_mu_and_matches_the_density(distribution):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    mu, b = 0.75, 0.3
    s = annealing_scale(t, mu, b, distribution)
    if distribution == "laplace":
        pdf = torch.exp(-(t - mu).abs() / b) / (2 * b)  # Eq. 14
    else:
        pdf = 1 / torch.cosh((t - mu) / (2 * b)) ** 2 / (4 * b)  # Eq. 13
    torch.testing.assert_close(s, pdf / pdf.max())
    assert float(s[75]) == pytest.approx(1.0)
    assert annealing_scale(0.2, mu, b, distribution) == pytest.approx(float(s[20]))
    # Far tails are 0, not NaN or overflow.
    assert annealing_scale(0.0, 1.0, 1e-4, distribution) == 0.0


def test_normalize_residual_is_per_sample_and_constant_safe():
    d = torch.rand(5, 3, 4, dtype=torch.float64)
    dn = normalize_residual(d)
    torch.testing.assert_close(dn.mean((1, 2)), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(dn.std((1, 2), correction=0), torch.ones(5, dtype=torch.float64))
    const = torch.full((2, 10), 0.1)
    out = normalize_residual(const)
    assert torch.isfinite(out).all() and out.abs().max() < 1e-6


def test_diffusivity_schemes():
    d = torch.rand(6, 10, dtype=torch.float64)
    t = 0.4
    s_t = annealing_scale(t)
    torch.testing.assert_close(diffusivity(d, t, "global"), torch.full_like(d, s_t / 2))
    dn = normalize_residual(d)
    torch.testing.assert_close(diffusivity(d, scheme="local", s=2.0, alpha=3.0), 2.0 * torch.sigmoid(3.0 * dn))
    torch.testing.assert_close(diffusivity(d, t, "full", alpha=3.0), s_t * torch.sigmoid(3.0 * dn))
    assert diffusivity(d.requires_grad_(), t).requires_grad is False


@settings(max_examples=30, deadline=None)
@given(d=residuals, t=st.floats(0, 1))
def test_diffusivity_is_bounded_by_the_scale(d, t):
    d = torch.from_numpy(d)
    kappa = diffusivity(d, t, "full", distribution="logistic")
    assert bool((kappa >= 0).all()) and bool((kappa <= annealing_scale(t, distribution="logistic")).all())
