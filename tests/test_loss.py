"""The loss against a literal Algorithm 1, its gradients, and its behaviour on bad input."""

import io
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import requires_cuda
from resmooth import ResidualSmoothingLoss, SquaredErrorLoss, annealing_scale, heat_diffuse, squared_error_loss
from resmooth.functional import diffusivity
from resmooth.diffusivity import IGNORED, DiffusivityMap


def algorithm_1(z, labels, t, scheme, distribution, mu, b, alpha, s=1.0):
    """Algorithm 1 of the paper, one sample at a time, with the dense matrix of Eq. 22."""
    n, m = z.shape
    loss = z.new_zeros(())
    for i in range(n):
        y = torch.zeros(m, dtype=z.dtype)
        y[labels[i]] = 1.0
        d = (torch.softmax(z[i], 0) - y).abs()  # Eq. 9
        dd = d.detach()
        dn = (dd - dd.mean()) / (dd.std(correction=0) + 1e-8)  # Eq. 18
        if distribution == "laplace":
            s_t = math.exp(-abs(t - mu) / b)  # Eq. 14, peak 1
        else:
            s_t = 1 / math.cosh((t - mu) / (2 * b)) ** 2  # Eq. 13, peak 1
        if scheme == "global":
            kappa = [s_t / (1 + math.exp(-0.0)) for _ in range(m)]  # Eq. 15, alpha = 0
        elif scheme == "local":
            kappa = [s / (1 + math.exp(-alpha * float(x))) for x in dn]  # Eq. 17
        else:
            kappa = [s_t / (1 + math.exp(-alpha * float(x))) for x in dn]  # Eq. 19
        w = torch.empty(m, m, dtype=z.dtype)
        for j in range(m):
            for k in range(m):
                w[j, k] = 1 - kappa[j] if j == k else kappa[j] / (m - 1)  # Eq. 22
        r = w @ d
        loss = loss + (r**2).sum()  # Eq. 7
    return loss / n


@pytest.mark.parametrize("scheme", ["global", "local", "full"])
@pytest.mark.parametrize("distribution", ["laplace", "logistic"])
def test_vectorized_loss_equals_algorithm_1(scheme, distribution):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 7, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 7, (6,), generator=g)
    t, mu, b, alpha = 0.6, 0.75, 0.3, 2.0
    z1 = z.clone().requires_grad_()
    z2 = z.clone().requires_grad_()
    expected = algorithm_1(z1, labels, t, scheme, distribution, mu, b, alpha)
    # Only what the scheme reads: the criterion refuses the others (IGNORED).
    read = {k: v for k, v in dict(distribution=distribution, mu=mu, b=b, alpha=alpha).items() if k not in IGNORED[scheme]}
    loss = ResidualSmoothingLoss(scheme, **read)(z2, labels, progress=t)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
    expected.backward()
    loss.backward()
    torch.testing.assert_close(z2.grad, z1.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5, 4), (2, 2, 3, 3, 3)])
@pytest.mark.parametrize("scheme", ["global", "local", "full"])
def test_gradcheck(shape, scheme, monkeypatch):
    # kappa is held constant in back-propagation (paper Sec. 5), so finite differences must see
    # it constant too: freeze the diffusivity at its value for the point being checked.
    z = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    target = torch.rand(*shape, dtype=torch.float64)
    loss = ResidualSmoothingLoss(scheme=scheme, activation="sigmoid", **({"s": 0.8} if scheme == "local" else {}))
    if scheme != "global":  # the global scheme's kappa is a constant already
        d = (torch.sigmoid(z) - target).abs().detach()
        frozen = loss.diffusivity.kappa(d, loss.scale(0.5))
        monkeypatch.setattr(DiffusivityMap, "kappa", lambda *args: frozen)
    assert torch.autograd.gradcheck(lambda x: loss(x, target, progress=0.5), (z,))


def test_kappa_zero_is_the_squared_error_baseline():
    z = torch.randn(8, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (8,))
    baseline = F.mse_loss(torch.softmax(z, 1), F.one_hot(y, 10).double(), reduction="sum") / 8
    torch.testing.assert_close(squared_error_loss(z, y), baseline)
    torch.testing.assert_close(ResidualSmoothingLoss(scheme="local", s=0.0)(z, y), baseline)
    dense = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    target = torch.rand(3, 2, 6, 6, dtype=torch.float64)
    zero = ResidualSmoothingLoss(scheme="local", s=0.0, activation="identity")
    torch.testing.assert_close(zero(dense, target), SquaredErrorLoss("identity")(dense, target))


def test_grid_operator_diffuses_each_channel_over_space():
    z = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    target = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    loss = ResidualSmoothingLoss(scheme="local", alpha=0.0, s=0.5, activation="identity", tau=2.0, reduction="none")
    # alpha = 0: kappa = s / 2 everywhere, a constant-coefficient heat flow to time tau. The loss
    # takes its step count from the bound kappa <= s (no read-back from the device), the fewest
    # that keep dt * s <= 1 / (2 ndim).
    steps = math.ceil(2.0 * 0.5 * 2 * 2)
    r = heat_diffuse((z - target).abs(), 0.25, 2.0, ndim=2, steps=steps)
    torch.testing.assert_close(loss(z, target), r.square().sum(1))  # per pixel, as torch's "none"


def test_segmentation_targets_of_class_indices():
    z = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 5, 5))
    one_hot = F.one_hot(labels, 4).permute(0, 3, 1, 2).double()
    loss = ResidualSmoothingLoss(scheme="full")
    torch.testing.assert_close(loss(z, labels, 0.3), loss(z, one_hot, 0.3))


def test_global_operator_on_a_dense_output_flattens_it():
    z = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    target = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    per_pixel = ResidualSmoothingLoss(operator="global", activation="sigmoid", reduction="none")(z, target, 0.5)
    flat = ResidualSmoothingLoss(activation="sigmoid", reduction="none")(z.flatten(1), target.flatten(1), 0.5)
    assert per_pixel.shape == (2, 4, 4)  # torch's "none": a loss per element of the non-class dims
    torch.testing.assert_close(per_pixel.flatten(1).sum(1), flat)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 2**16), scheme=st.sampled_from(["global", "local", "full"]))
def test_per_sample_losses_do_not_depend_on_the_batch(n, seed, scheme):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (n,), generator=g)
    loss = ResidualSmoothingLoss(scheme=scheme, reduction="none")
    whole = loss(z, y, 0.3)
    perm = torch.randperm(n, generator=g)
    torch.testing.assert_close(loss(z[perm], y[perm], 0.3), whole[perm], rtol=1e-14, atol=0)
    k = n // 2
    parts = torch.cat([loss(z[:k], y[:k], 0.3), loss(z[k:], y[k:], 0.3)])
    torch.testing.assert_close(parts, whole, rtol=1e-14, atol=0)
    mean = ResidualSmoothingLoss(scheme=scheme)(z, y, 0.3)
    torch.testing.assert_close(mean, whole.mean())


def test_the_schedule_steps_progress_like_a_learning_rate_scheduler():
    z, y = torch.randn(4, 10, dtype=torch.float64), torch.randint(0, 10, (4,))
    loss = ResidualSmoothingLoss(total_steps=8)
    assert loss.mean_kappa is None
    for k in range(8):
        torch.testing.assert_close(loss(z, y), loss(z, y, progress=k / 8), rtol=0, atol=0)
        assert float(loss.last_scale) == annealing_scale(k / 8)  # the trainers' float64 progress
        loss.step()
    assert 0 < loss.mean_kappa < 1
    # An explicit progress takes precedence over the schedule.
    assert not torch.equal(loss(z, y, progress=0.0), loss(z, y))


def test_the_schedule_survives_a_checkpoint_round_trip():
    z, y = torch.randn(4, 10), torch.randint(0, 10, (4,))
    loss = ResidualSmoothingLoss(total_steps=10)
    for _ in range(7):
        loss.step()
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    buffer.seek(0)
    restored = ResidualSmoothingLoss(total_steps=10)
    assert int(restored.steps_done) == 0
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert int(restored.steps_done) == 7
    torch.testing.assert_close(restored(z, y), loss(z, y, progress=0.7), rtol=0, atol=0)


def test_stepping_past_the_end_clamps_to_one_and_warns_once():
    z, y = torch.randn(4, 10), torch.randint(0, 10, (4,))
    loss = ResidualSmoothingLoss(total_steps=2)
    loss.step()
    loss.step()  # the end: progress 1, no warning
    with pytest.warns(UserWarning, match="more than total_steps=2 times") as record:
        loss.step()
        loss.step()
    assert len(record) == 1
    assert int(loss.steps_done) == 4
    torch.testing.assert_close(loss(z, y), loss(z, y, progress=1.0), rtol=0, atol=0)


def test_the_schedule_needs_its_length():
    with pytest.raises(ValueError, match=r"no progress schedule \(total_steps=None\): construct it with total_steps=N"):
        ResidualSmoothingLoss().progress()
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        ResidualSmoothingLoss(total_steps=0)
    with pytest.raises(TypeError, match="total_steps must be an integer"):
        ResidualSmoothingLoss(total_steps=10.0)


def _count_compilations():
    calls = []

    def backend(gm, example_inputs):
        calls.append(gm)
        return gm.forward

    return backend, calls


@pytest.mark.parametrize("shape", [(16, 10), (4, 3, 8, 8)], ids=["classes", "grid"])
@pytest.mark.parametrize("scheme", ["global", "full"])
def test_compiled_with_fullgraph_compiles_once_over_a_run(shape, scheme):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g)
    eager = ResidualSmoothingLoss(scheme, total_steps=20, validate_args=False)
    criterion = ResidualSmoothingLoss(scheme, total_steps=20, validate_args=False)
    backend, calls = _count_compilations()
    compiled = torch.compile(criterion, fullgraph=True, backend=backend)
    for _ in range(20):
        z = torch.randn(shape, generator=g, requires_grad=True)
        value = compiled(z, target)
        value.backward()
        torch.testing.assert_close(value, eager(z, target))
        # The compiled code's own node (resmooth.diffusion) gives the eager gradient.
        torch.testing.assert_close(z.grad, torch.autograd.grad(eager(z, target), z)[0])
        criterion.step()
        eager.step()
    assert len(calls) == 1
    # A tensor progress does not recompile either.
    for t in (0.1, 0.6):
        compiled(torch.randn(shape, generator=g), target, torch.tensor(t, dtype=torch.float64))
    assert len(calls) == 2  # one graph for the schedule, one for a given progress


def test_double_backward_is_right():
    from resmooth.diffusion import GlobalSmoothedNorm

    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    kappa = torch.rand(5, 6, dtype=torch.float64)
    for k in (kappa, 0.4):
        assert torch.autograd.gradgradcheck(lambda x: GlobalSmoothedNorm.apply(x, x.detach().abs(), k), (x,))
    # Through the loss (the global scheme's kappa is a constant): the Hessian-vector product.
    z = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (3,))
    loss = ResidualSmoothingLoss("global")
    assert torch.autograd.gradgradcheck(lambda z: loss(z, y, progress=0.5), (z,))


def test_half_precision_logits_give_a_float32_loss():
    z, y = torch.randn(4, 10).bfloat16(), torch.randint(0, 10, (4,))
    out = ResidualSmoothingLoss()(z, y, 0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ResidualSmoothingLoss()(z.float(), y, 0.5))


def test_a_constant_residual_gives_a_finite_loss():
    z = torch.zeros(3, 4, requires_grad=True)
    target = torch.full((3, 4), 0.25)  # softmax of zeros: the residual is 0 everywhere
    out = ResidualSmoothingLoss()(z, target, 0.5)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    dense = ResidualSmoothingLoss(activation="identity")(torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), 0.5)
    assert torch.isfinite(dense)


BAD_CONSTRUCTION = [
    (dict(b=0.0), ValueError, "b must be > 0"),
    (dict(b=-1.0), ValueError, "b must be > 0"),
    (dict(alpha=-0.1), ValueError, "alpha must be >= 0"),
    (dict(s=-1.0), ValueError, "s must be >= 0"),
    (dict(tau=-1.0), ValueError, "tau must be >= 0"),
    (dict(scheme="bogus"), ValueError, "scheme must be one of 'global', 'local', 'full'"),
    (dict(distribution="gauss"), ValueError, "distribution must be one of 'laplace', 'logistic'"),
    (dict(activation="relu"), ValueError, "activation must be one of"),
    (dict(operator="fft"), ValueError, "operator must be one of 'auto', 'global', 'grid'"),
    (dict(reduction="avg"), ValueError, "reduction must be one of 'mean', 'sum', 'none'"),
    (dict(b="0.5"), TypeError, "b must be a real number"),
    (dict(mu=float("nan")), ValueError, "mu must be finite"),
]


IGNORED_BY_THE_SCHEME = [
    (dict(scheme="global", alpha=2.0), r"alpha=2.0 would be ignored: scheme='global' fixes alpha = 0"),
    (dict(scheme="global", s=0.5), r"s=0.5 would be ignored: scheme='global' takes its scale from the annealing"),
    (dict(scheme="full", s=0.5), r"s=0.5 would be ignored: scheme='full' takes its scale from the annealing"),
    (dict(scheme="local", distribution="logistic"), r"distribution='logistic' would be ignored: scheme='local' has the constant scale"),
    (dict(scheme="local", mu=0.5), r"mu=0.5 would be ignored: scheme='local'"),
    (dict(scheme="local", b=0.3), r"b=0.3 would be ignored: scheme='local'"),
    (dict(operator="global", tau=2.0), r"tau=2.0 would be ignored: operator='global' is the single smoothing layer"),
]


@pytest.mark.parametrize("kwargs,message", IGNORED_BY_THE_SCHEME)
def test_a_parameter_the_scheme_ignores_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message + ".*leave .* at its default"):
        ResidualSmoothingLoss(**kwargs)
    if "tau" not in kwargs:
        with pytest.raises(ValueError, match=message):
            diffusivity(torch.rand(2, 3), 0.5, **kwargs)


def test_defaults_and_the_global_schemes_own_alpha_are_accepted():
    z, y = torch.randn(4, 10, dtype=torch.float64), torch.randint(0, 10, (4,))
    # Every default, whatever the scheme reads; alpha = 0 is what the global scheme fixes (Eq. 15).
    for scheme in ("global", "local", "full"):
        ResidualSmoothingLoss(scheme, distribution="laplace", mu=0.75, b=0.5, alpha=1.0, s=1.0, tau=1.0)
    said = ResidualSmoothingLoss("global", alpha=0.0)
    torch.testing.assert_close(said(z, y, 0.3), ResidualSmoothingLoss("global")(z, y, 0.3), rtol=0, atol=0)
    assert said.diffusivity.alpha == 0.0 and isinstance(ResidualSmoothingLoss(alpha=2).diffusivity.alpha, float)


def test_tau_is_refused_when_auto_takes_the_global_operator():
    loss = ResidualSmoothingLoss(activation="sigmoid", tau=2.0)
    dense = loss(torch.randn(2, 1, 6, 6), torch.rand(2, 1, 6, 6), 0.5)  # the grid operator reads tau
    assert torch.isfinite(dense)
    with pytest.raises(ValueError, match=r"tau=2.0 would be ignored: operator='auto' on input of shape \(2, 5\)"):
        loss(torch.randn(2, 5), torch.rand(2, 5), 0.5)


@pytest.mark.parametrize("scheme", ["global", "local", "full"])
def test_the_loss_and_diffusivity_share_one_dispatch(scheme):
    d = torch.rand(3, 6, dtype=torch.float64)
    loss = ResidualSmoothingLoss(scheme, total_steps=4)
    loss.step()
    # The scale at the schedule's progress 1/4, and at an explicit one, is the map's own.
    assert float(loss.scale()) == float(loss.diffusivity.scale(0.25))
    expected = annealing_scale(0.6) if scheme != "local" else 1.0
    assert loss.scale(0.6) == expected == loss.diffusivity.scale(0.6)
    kappa = loss.diffusivity.kappa(d, loss.scale(0.6))
    torch.testing.assert_close(torch.as_tensor(kappa, dtype=d.dtype).expand_as(d), diffusivity(d, 0.6, scheme))


@pytest.mark.parametrize("kwargs,error,message", BAD_CONSTRUCTION)
def test_bad_arguments_are_refused_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        ResidualSmoothingLoss(**kwargs)


def test_bad_calls_name_the_argument():
    loss = ResidualSmoothingLoss()
    z, y = torch.randn(4, 10), torch.randint(0, 10, (4,))
    with pytest.raises(ValueError, match=r"progress \(training progress in \[0, 1\]\) is required by scheme='full'"):
        loss(z, y)
    for t in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"progress must lie in \[0, 1\]"):
            loss(z, y, t)
        with pytest.raises(ValueError, match=r"progress must lie in \[0, 1\]"):
            loss(z, y, torch.tensor(t))
    # One logit: the advice given (two logits and softmax) must work.
    for activation in ("sigmoid", "softmax"):
        with pytest.raises(ValueError, match=r"output two logits, \(N, 2\), with activation='softmax'"):
            ResidualSmoothingLoss(activation=activation)(torch.randn(4, 1), torch.rand(4, 1), 0.5)
    assert torch.isfinite(ResidualSmoothingLoss(activation="softmax")(torch.randn(4, 2), torch.randint(0, 2, (4,)), 0.5))
    with pytest.raises(ValueError, match=r"target of class indices must have shape \(4,\)"):
        loss(z, y[:3], 0.5)
    with pytest.raises(ValueError, match=r"target must have the input's shape \(4, 10\)"):
        loss(z, torch.rand(4, 9), 0.5)
    with pytest.raises(ValueError, match=r"class indices outside \[0, 9\]"):
        loss(z, torch.tensor([0, 1, 2, 10]), 0.5)
    with pytest.raises(ValueError, match=r"class indices outside \[0, 9\]"):
        loss(z, torch.tensor([0, -1, 2, 3]), 0.5)
    # Skipping the checks that read back from the device is a choice made at construction.
    unchecked = ResidualSmoothingLoss(validate_args=False)
    assert torch.isfinite(unchecked(z, torch.tensor([0, 1, 2, 3]), torch.tensor(0.5)))
    with pytest.raises(TypeError, match="validate_args must be True or False"):
        ResidualSmoothingLoss(validate_args=1)
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        loss(torch.ones(4, 10, dtype=torch.long), y, 0.5)
    with pytest.raises(ValueError, match="operator='grid' needs input of shape"):
        ResidualSmoothingLoss(operator="grid")(z, y, 0.5)
    with pytest.raises(ValueError, match="4 spatial dims|1 to 3 spatial dims"):
        loss(torch.randn(1, 2, 2, 2, 2, 2), torch.rand(1, 2, 2, 2, 2, 2), 0.5)
    with pytest.raises(ValueError, match="activation='softmax' over a single channel"):
        loss(torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4), 0.5)
    # The local scheme needs no progress.
    assert torch.isfinite(ResidualSmoothingLoss(scheme="local")(z, y))


def test_bad_arguments_to_the_functions():
    from resmooth import annealing_scale, heat_diffuse, laplacian, smoothing_matrix
    from resmooth.functional import diffusivity

    with pytest.raises(ValueError, match="b must be > 0"):
        annealing_scale(0.5, b=0.0)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        annealing_scale(1.2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        annealing_scale(torch.tensor([0.5, 1.2]))
    with pytest.raises(ValueError, match="t \\(training progress in \\[0, 1\\]\\) is required"):
        diffusivity(torch.rand(2, 3), scheme="global")
    with pytest.raises(ValueError, match="M = 2"):
        smoothing_matrix(torch.rand(3, 1))
    with pytest.raises(ValueError, match="ndim must be 1, 2 or 3"):
        laplacian(torch.rand(3, 3), 4)
    with pytest.raises(ValueError, match="steps=1 is unstable"):
        heat_diffuse(torch.rand(8, 8), 1.0, 1.0, 2, steps=1)
    with pytest.raises(ValueError, match="kappa must be >= 0"):
        heat_diffuse(torch.rand(8, 8), -torch.ones(8, 8), 1.0, 2)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        heat_diffuse(torch.rand(8, 8), 1.0, 1.0, 2, steps=0)


@requires_cuda
@pytest.mark.cuda
def test_cuda_matches_cpu():
    z = torch.randn(64, 100, dtype=torch.float64)
    y = torch.randint(0, 100, (64,))
    img, target = torch.randn(4, 3, 16, 16, dtype=torch.float64), torch.rand(4, 3, 16, 16, dtype=torch.float64)
    for loss, a, b in [(ResidualSmoothingLoss(), z, y), (ResidualSmoothingLoss(activation="sigmoid"), img, target)]:
        cpu = loss(a, b, 0.4)
        gpu = loss(a.cuda(), b.cuda(), 0.4)
        torch.testing.assert_close(gpu.cpu(), cpu)


@requires_cuda
@pytest.mark.cuda
def test_cuda_bf16_autocast_backward():
    model = torch.nn.Linear(32, 10).cuda()
    x, y = torch.randn(16, 32, device="cuda"), torch.randint(0, 10, (16,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = ResidualSmoothingLoss()(model(x), y, 0.5)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(model.weight.grad).all()


# Issue 22, item 1, and issue 32, item 7: the submodules are reachable as plain modules, and their
# functions of the same names are called by their own names from resmooth.functional.


def test_the_submodules_are_plain_modules_and_their_functions_are_in_functional():
    import types

    import resmooth
    import resmooth.diffusivity as diffusivity_module
    import resmooth.residual as residual_module
    from resmooth.loss import squared_error_loss as old_path

    assert diffusivity_module.DiffusivityMap is DiffusivityMap
    assert residual_module.normalize_residual is resmooth.normalize_residual
    assert type(residual_module) is types.ModuleType and type(diffusivity_module) is types.ModuleType
    assert not callable(resmooth.residual) and not callable(resmooth.diffusivity)
    assert resmooth.functional.residual is residual_module.residual
    assert resmooth.functional.diffusivity is diffusivity_module.diffusivity
    z, y = torch.randn(4, 5, dtype=torch.float64), torch.randint(0, 5, (4,))
    torch.testing.assert_close(resmooth.functional.residual(z, y), (z.softmax(1) - torch.eye(5)[y]).abs())
    assert old_path is resmooth.functional.squared_error_loss is resmooth.squared_error_loss
    for name in resmooth.__all__:
        if name not in ("residual", "diffusivity"):  # the modules
            assert callable(getattr(resmooth, name)), name


# Item 2: torch.compile with the default arguments.


def test_compiled_with_the_default_arguments_runs_and_a_number_progress_is_a_tensor():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 10, (8,), generator=g)
    eager, criterion = ResidualSmoothingLoss(total_steps=4), ResidualSmoothingLoss(total_steps=4)
    backend, calls = _count_compilations()
    # validate_args=True (the default): its read-backs would break the graph; compiling skips them.
    compiled = torch.compile(criterion, fullgraph=True, backend=backend)
    for _ in range(3):
        z = torch.randn(8, 10, generator=g)
        torch.testing.assert_close(compiled(z, target), eager(z, target))
        criterion.step()
        eager.step()
    assert len(calls) == 1
    # A number progress works at every value (it becomes a tensor: one more graph at the second value).
    for t in (0.2, 0.4, 0.9):
        z = torch.randn(8, 10, generator=g)
        torch.testing.assert_close(compiled(z, target, progress=t), eager(z, target, progress=t))
    assert len(calls) <= 3
    # The functional squared error compiles whole too, and its eager check can be switched off.
    compiled_se = torch.compile(squared_error_loss, fullgraph=True, backend=backend)
    torch.testing.assert_close(compiled_se(z, target), squared_error_loss(z, target))
    bad = torch.tensor([0, 1, 2, 3, 4, 5, 6, 10])
    with pytest.raises(ValueError, match=r"outside \[0, 9\]"):
        squared_error_loss(z, bad)
    assert torch.isfinite(squared_error_loss(z, bad.clamp(max=9), validate_args=False))


# Item 3: the schedule's length is in its state.


def _saved(criterion):
    buffer = io.BytesIO()
    torch.save(criterion.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_the_state_holds_total_steps_and_a_mismatch_is_refused():
    run = ResidualSmoothingLoss(total_steps=120)
    for _ in range(60):
        run.step()
    state = _saved(run)
    assert int(state["total_steps"]) == 120 and int(state["steps_done"]) == 60
    longer = ResidualSmoothingLoss(total_steps=240)
    with pytest.raises(RuntimeError, match="schedule of total_steps=120 at step 60, but this criterion has total_steps=240"):
        longer.load_state_dict(state)
    assert int(longer.steps_done) == 0  # nothing loaded
    with pytest.raises(RuntimeError, match="scheme='local' reads no progress.*construct it with total_steps=120"):
        ResidualSmoothingLoss(scheme="local").load_state_dict(state)
    same = ResidualSmoothingLoss(total_steps=120)
    same.load_state_dict(state)
    assert float(same.progress()) == 0.5
    # Without a schedule the state holds no length, and loads into another criterion without one.
    ResidualSmoothingLoss(scheme="local").load_state_dict(_saved(ResidualSmoothingLoss(scheme="local")))


def test_a_state_saved_before_total_steps_still_loads():
    older = {"steps_done": torch.tensor(7)}
    criterion = ResidualSmoothingLoss(total_steps=10)
    criterion.load_state_dict(older)
    assert int(criterion.steps_done) == 7
    with pytest.raises(RuntimeError, match="steps_done=7 of a schedule, but this criterion has none"):
        ResidualSmoothingLoss().load_state_dict(older)


def test_the_trainers_checkpoints_of_before_still_load():
    from resmooth.lab.train import Config, Objective

    objective = Objective(Config(method="resmooth"), total_steps=10)
    for _ in range(3):
        objective.step()
    state = objective.state_dict()
    assert int(state["smoothing.total_steps"]) == 10
    # A checkpoint written before the length and the hyperparameters were saved.
    state = {k: v for k, v in state.items() if k == "smoothing.steps_done"}
    resumed = Objective(Config(method="resmooth"), total_steps=10)
    resumed.load_state_dict(state)
    assert int(resumed.smoothing.steps_done) == 3


# Item 4: torch's reductions, ignore_index, the functional form, step() on both criteria.


@pytest.mark.parametrize("criterion", [ResidualSmoothingLoss(scheme="local"), SquaredErrorLoss()], ids=["resmooth", "se"])
@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 6), (2, 3, 5, 4)])
def test_reductions_follow_torch(criterion, shape):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g)
    criterion.reduction = "none"
    none = criterion(z, y)
    assert none.shape == y.shape == F.cross_entropy(z, y, reduction="none").shape
    criterion.reduction = "mean"
    torch.testing.assert_close(criterion(z, y), none.mean())
    criterion.reduction = "sum"
    torch.testing.assert_close(criterion(z, y), none.sum())
    if isinstance(criterion, SquaredErrorLoss):
        one_hot = F.one_hot(y, shape[1]).movedim(-1, 1).double()
        torch.testing.assert_close(none, (torch.softmax(z, 1) - one_hot).square().sum(1))


def test_ignore_index_leaves_the_elements_out():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (6,), generator=g)
    ignored = y.clone()
    ignored[[1, 4]] = -100  # torch's default ignore_index
    keep = ignored != -100
    for criterion in (ResidualSmoothingLoss(), SquaredErrorLoss()):
        args = (0.4,) if isinstance(criterion, ResidualSmoothingLoss) else ()
        # Per sample, the global operator: an ignored sample is as if it were not in the batch.
        torch.testing.assert_close(criterion(z, ignored, *args), criterion(z[keep], y[keep], *args))
        criterion.reduction = "none"
        assert (criterion(z, ignored, *args)[~keep] == 0).all()
    # Segmentation's void label 255: the mean runs over the labelled pixels only.
    z = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 6, 6), generator=g)
    labels[:, :2] = 255
    for criterion in (ResidualSmoothingLoss(total_steps=4, ignore_index=255), SquaredErrorLoss(ignore_index=255)):
        criterion.reduction = "none"
        per_pixel = criterion(z, labels)
        assert (per_pixel[:, :2] == 0).all() and (per_pixel[:, 2:] > 0).all()
        criterion.reduction = "mean"
        torch.testing.assert_close(criterion(z, labels), per_pixel[:, 2:].mean())
    # The documented diffusion around a void: its residual is 0, and the heat flows through it.
    smoothing = ResidualSmoothingLoss("local", alpha=0.0, s=0.5, reduction="none", ignore_index=255)
    one_hot = F.one_hot(labels.masked_fill(labels == 255, 0), 3).movedim(-1, 1).double()
    d = torch.where((labels != 255).unsqueeze(1), (torch.softmax(z, 1) - one_hot).abs(), 0.0)
    r = heat_diffuse(d, 0.25, 1.0, ndim=2, steps=math.ceil(0.5 * 2 * 2))
    torch.testing.assert_close(smoothing(z, labels), torch.where(labels != 255, r.square().sum(1), 0.0))
    # The squared error of a void pixel has no gradient; the smoothing's does, through its neighbours.
    (grad,) = torch.autograd.grad(SquaredErrorLoss(ignore_index=255)(z, labels), z)
    assert (grad[:, :, :2] == 0).all()
    with pytest.raises(ValueError, match="outside \\[0, 2\\].*not ignore_index=255"):
        SquaredErrorLoss(ignore_index=255)(z, labels.masked_fill(labels == 255, 254))
    with pytest.raises(TypeError, match="input must be a torch.Tensor; got list"):
        SquaredErrorLoss()([[0.0, 1.0]], torch.tensor([1]))
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        SquaredErrorLoss(ignore_index=None)


@pytest.mark.parametrize("kwargs", [dict(scheme="full"), dict(scheme="global", operator="global"),
                                    dict(scheme="local", s=0.7, alpha=2.0), dict(scheme="full", tau=2.0)])
def test_the_functional_form_is_the_criterion(kwargs):
    from resmooth.functional import residual_smoothing_loss

    g = torch.Generator().manual_seed(4)
    for shape in ((5, 6), (2, 3, 6, 6)):
        if shape == (5, 6) and kwargs.get("tau"):
            continue
        z = torch.randn(shape, generator=g, dtype=torch.float64)
        y = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g)
        for reduction in ("mean", "none"):
            expected = ResidualSmoothingLoss(**kwargs, reduction=reduction)(z, y, progress=0.3)
            got = residual_smoothing_loss(z, y, None if kwargs["scheme"] == "local" else 0.3, **kwargs, reduction=reduction)
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="progress \\(training progress in \\[0, 1\\]\\) is required by scheme='full'"):
        residual_smoothing_loss(z, y, None)


def test_either_criterion_steps_in_the_same_loop():
    z, y = torch.randn(4, 10), torch.randint(0, 10, (4,))
    for criterion in (SquaredErrorLoss(), ResidualSmoothingLoss(total_steps=3)):
        for _ in range(3):
            criterion(z, y)
            assert criterion.step() is None
    assert int(criterion.steps_done) == 3


# Item 5: what the docstrings promise.


def test_a_float_target_of_the_class_indices_shape_is_told_to_be_integers():
    z, y = torch.randn(4, 10), torch.randint(0, 10, (4,))
    for criterion in (ResidualSmoothingLoss(total_steps=2), SquaredErrorLoss()):
        with pytest.raises(TypeError, match=r"class indices must have an integer dtype \(target.long\(\)\), and float "
                                            r"targets \(soft labels\) must have the input's shape \(4, 10\)"):
            criterion(z, y.float())
        assert torch.isfinite(criterion(z, y.float().long()))


def test_the_docstrings_cite_the_paper_and_document_forward():
    import resmooth.functional

    for obj in (ResidualSmoothingLoss, resmooth.functional):
        assert "arXiv:1907.09750" in obj.__doc__
    for criterion in (ResidualSmoothingLoss, SquaredErrorLoss):
        assert "class indices" in criterion.forward.__doc__ and "class indices" in criterion.__doc__
    assert "progress" in ResidualSmoothingLoss.forward.__doc__


def test_gradcheck_of_the_full_scheme_fails_by_design_and_the_documented_check_passes():
    from resmooth import smoothing_matrix
    from resmooth.functional import residual

    g = torch.Generator().manual_seed(5)
    z = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (3,), generator=g)
    criterion = ResidualSmoothingLoss("full")
    # kappa is detached: finite differences move it, the analytic gradient does not.
    assert not torch.autograd.gradcheck(lambda x: criterion(x, y, 0.6), (z,), raise_exception=False)
    # The docstring's check: autograd through the dense layer of Eq. 22 at the same kappa.
    (grad,) = torch.autograd.grad(criterion(z, y, 0.6), z)
    kappa = criterion.last_kappa
    d = residual(z, y)
    dense = (smoothing_matrix(kappa) @ d.unsqueeze(-1)).square().sum() / len(z)
    (expected,) = torch.autograd.grad(dense, z)
    torch.testing.assert_close(grad, expected)
    # The global scheme's kappa does not depend on the input: gradcheck passes there.
    assert torch.autograd.gradcheck(lambda x: ResidualSmoothingLoss("global")(x, y, 0.6), (z,))


# Item 9: repr, mu outside [0, 1], one type for the scale and kappa.


def test_repr_shows_only_what_the_scheme_reads():
    assert "alpha=" not in repr(ResidualSmoothingLoss("global")) and " s=" not in repr(ResidualSmoothingLoss("global"))
    local = repr(ResidualSmoothingLoss("local", s=0.5))
    assert "s=0.5" in local and all(f"{name}=" not in local for name in ("mu", "distribution", " b"))
    assert "tau=" not in repr(ResidualSmoothingLoss(operator="global"))
    assert "tau=2.0" in repr(ResidualSmoothingLoss(tau=2.0))
    # Issue 32, item 6: class outputs read no tau, and "auto" with its default says none; the
    # grid operator reads it.
    assert "tau=" not in repr(ResidualSmoothingLoss())
    assert "tau=1.0" in repr(ResidualSmoothingLoss(operator="grid"))


def test_a_peak_outside_training_makes_the_scale_monotonic():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    late = ResidualSmoothingLoss(mu=2.0)  # the peak after the end: the scale only rises
    early = ResidualSmoothingLoss(mu=-5.0)  # before the start: it only falls
    rising = torch.stack([late.scale(float(x)) for x in t])
    falling = torch.stack([early.scale(float(x)) for x in t])
    assert (rising.diff() > 0).all() and rising.max() < 1
    assert (falling.diff() < 0).all() and falling.max() < 1
    torch.testing.assert_close(rising, torch.exp(-(2.0 - t) / 0.5))


@pytest.mark.parametrize("scheme", ["global", "local", "full"])
def test_scale_and_kappa_are_tensors_whatever_the_progress(scheme):
    z, y = torch.randn(4, 6), torch.randint(0, 6, (4,))
    criterion = ResidualSmoothingLoss(scheme, total_steps=4)
    for progress in (None, 0.5, torch.tensor(0.5)):
        criterion(z, y, progress)
        assert isinstance(criterion.scale(progress), torch.Tensor) and criterion.scale(progress).ndim == 0
        assert isinstance(criterion.last_scale, torch.Tensor) and criterion.last_scale.ndim == 0
        assert isinstance(criterion.last_kappa, torch.Tensor) and criterion.last_kappa.shape == z.shape
        assert isinstance(criterion.mean_kappa, float)


# Issue 32, item 2: an empty batch gives what torch's losses give.


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_an_empty_batch_gives_torchs_results(reduction):
    from resmooth.functional import residual_smoothing_loss

    cases = [  # input, class indices, soft target
        (torch.randn(0, 5), torch.zeros(0, dtype=torch.long), torch.rand(0, 5)),
        (torch.randn(0, 3, 4, 4), torch.zeros(0, 4, 4, dtype=torch.long), torch.rand(0, 3, 4, 4)),
    ]
    for z, labels, soft in cases:
        # torch's own losses on the same empty batch: cross-entropy for class indices, mse for floats.
        expected = {"labels": F.cross_entropy(z, labels, reduction=reduction),
                    "soft": F.mse_loss(torch.softmax(z, 1), soft, reduction=reduction)}
        for name, target in (("labels", labels), ("soft", soft)):
            want = expected[name]
            if reduction == "none":  # one loss per element of the non-class dims, as F.cross_entropy's
                want = expected["labels"]
            z = z.detach().requires_grad_()
            got = [ResidualSmoothingLoss(reduction=reduction)(z, target, 0.5),
                   ResidualSmoothingLoss("local", reduction=reduction, ignore_index=2)(z, target),
                   ResidualSmoothingLoss(operator="global", reduction=reduction)(z, target, torch.tensor(0.5)),
                   residual_smoothing_loss(z, target, 0.5, reduction=reduction),
                   SquaredErrorLoss(reduction=reduction)(z, target),
                   squared_error_loss(z, target, reduction=reduction)]
            for value in got:
                assert value.shape == want.shape and value.dtype == want.dtype
                torch.testing.assert_close(value, want, equal_nan=True)
                if reduction != "none":
                    (grad,) = torch.autograd.grad(value, z)  # a graph to differentiate, as torch's
                    assert grad.shape == z.shape


# Issue 32, item 3: torch.func.


FUNC_SETTINGS = [dict(scheme="global"), dict(scheme="global", distribution="logistic", b=0.25),
                 dict(scheme="local", alpha=2.0, s=0.7), dict(scheme="full"),
                 dict(scheme="full", distribution="logistic", b=0.25)]


def _dense_reference(kwargs, t):
    """The loss through the dense layer of Eq. 22 (the reference smoothing_matrix), with kappa the
    criterion's at the point where it is evaluated: a function whose derivatives torch.func takes
    without any custom rule."""
    from resmooth import smoothing_matrix
    from resmooth.functional import residual

    def loss(z, y, kappa):
        d = residual(z, y)
        return (smoothing_matrix(kappa) @ d.unsqueeze(-1)).squeeze(-1).square().sum(-1).mean()

    def kappa_at(z, y):
        return diffusivity(residual(z, y).detach(), t if kwargs["scheme"] != "local" else None, **kwargs)

    return loss, kappa_at


@pytest.mark.parametrize("kwargs", FUNC_SETTINGS, ids=lambda k: "-".join(map(str, k.values())))
def test_torch_func_grad_jacfwd_hessian_and_per_sample_gradients(kwargs):
    from torch.func import grad, hessian, jacfwd, jacrev, vmap

    g = torch.Generator().manual_seed(6)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (5,), generator=g)
    t = 0.3
    criterion = ResidualSmoothingLoss(**kwargs)  # validate_args=True: its read-backs are skipped under vmap
    reference, kappa_at = _dense_reference(kwargs, t)
    kappa = kappa_at(z, y)
    f = lambda z: criterion(z, y, t)  # noqa: E731
    f_ref = lambda z: reference(z, y, kappa)  # noqa: E731
    torch.testing.assert_close(grad(f)(z), grad(f_ref)(z))
    torch.testing.assert_close(jacfwd(f)(z), jacrev(f_ref)(z))
    torch.testing.assert_close(hessian(f)(z), hessian(f_ref)(z))
    torch.testing.assert_close(jacrev(jacrev(f))(z), hessian(f_ref)(z))
    # Per-sample gradients: vmap over the gradient of one sample's loss equals a loop over samples.
    one = lambda zi, yi: criterion(zi.unsqueeze(0), yi.unsqueeze(0), t)  # noqa: E731
    per_sample = vmap(grad(one))(z, y)
    for i in range(len(z)):
        zi = z[i].clone().requires_grad_()
        (expected,) = torch.autograd.grad(criterion(zi.unsqueeze(0), y[i : i + 1], t), zi)
        torch.testing.assert_close(per_sample[i], expected)
    # The reduction "none" through vmap: the per-sample losses, and their Jacobian by jacfwd.
    none = ResidualSmoothingLoss(**kwargs, reduction="none")
    torch.testing.assert_close(vmap(lambda zi, yi: none(zi[None], yi[None], t)[0])(z, y), none(z, y, t))
    torch.testing.assert_close(jacfwd(lambda z: none(z, y, t))(z), torch.autograd.functional.jacobian(
        lambda z: none(z, y, t), z))


def test_torch_func_leaves_nothing_behind_and_skips_the_read_backs():
    from torch.func import grad, vmap

    z, y = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 6, (4,))
    criterion = ResidualSmoothingLoss(total_steps=10)
    vmap(grad(lambda zi, yi: criterion(zi[None], yi[None])))(z, y)
    # A transform's tensors cannot leave it: nothing is recorded under one.
    assert criterion.last_kappa is None and criterion.last_scale is None
    # The value checks read back, which vmap cannot: skipped there as under torch.compile, and a
    # progress outside [0, 1] is clamped, not used.
    out = vmap(lambda zi, yi: criterion(zi[None], yi[None], torch.tensor(1.5, dtype=torch.float64)))(z, y)
    torch.testing.assert_close(out, vmap(lambda zi, yi: criterion(zi[None], yi[None], 1.0))(z, y))


def test_the_fused_node_has_the_setup_context_form_and_every_derivative():
    from torch.func import vmap

    from resmooth.diffusion import GlobalSmoothedNorm, _GlobalSmoothedNormEager

    assert "setup_context" in vars(GlobalSmoothedNorm) and GlobalSmoothedNorm.generate_vmap_rule
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    # The node, and its ctx-form twin that eager code calls outside torch.func.
    for cls in (GlobalSmoothedNorm, _GlobalSmoothedNormEager):
        for k in (torch.rand(5, 6, dtype=torch.float64), 0.4):
            node = lambda x: cls.apply(x, x.detach().abs(), k)  # noqa: E731
            # Both outputs, g and r: the backward, the forward-mode jvp, and the backward's own derivative.
            assert torch.autograd.gradcheck(node, (x,), check_forward_ad=True)
            assert torch.autograd.gradgradcheck(node, (x,))
    # vmap by the generated rule: the node on each row is the node on the batch.
    x, k = x.detach(), torch.rand(5, 6, dtype=torch.float64)
    rows = vmap(lambda xi, ki: GlobalSmoothedNorm.apply(xi, xi.abs(), ki))(x, k)
    for row, whole in zip(rows, GlobalSmoothedNorm.apply(x, x.abs(), k)):
        torch.testing.assert_close(row, whole)


# Issue 32, item 4: step() without a schedule, and progress= for the squared error.


@pytest.mark.parametrize("scheme", ["local", "full"])
def test_step_without_a_schedule_does_nothing(scheme):
    z, y = torch.randn(4, 10), torch.randint(0, 10, (4,))
    criterion = ResidualSmoothingLoss(scheme)
    for _ in range(3):
        criterion(z, y, None if scheme == "local" else 0.5)
        assert criterion.step() is None
    assert int(criterion.steps_done) == 0
    # Its state, with no schedule, loads into another criterion without one.
    ResidualSmoothingLoss(scheme).load_state_dict(criterion.state_dict())


def test_the_squared_error_accepts_and_ignores_progress():
    z, y = torch.randn(4, 10), torch.randint(0, 10, (4,))
    criterion = SquaredErrorLoss()
    plain = criterion(z, y)
    for progress in (0.3, torch.tensor(0.7), None):
        assert torch.equal(criterion(z, y, progress=progress), plain)
    assert torch.equal(criterion(z, y, 0.3), plain)


# Issue 32, item 5: one pipeline.


def test_each_criterion_is_one_call_into_its_function(monkeypatch):
    import resmooth.functional
    import resmooth.loss

    calls = []

    def spy(module, name):
        function = getattr(module, name)

        def call(*args, **kwargs):
            calls.append((module.__name__, name))
            return function(*args, **kwargs)

        monkeypatch.setattr(module, name, call)

    # The smoothing's criterion and function share one pipeline (the criterion has checked its
    # hyperparameters at construction); the squared error's criterion calls its function.
    spy(resmooth.loss, "_residual_smoothing")
    spy(resmooth.functional, "_residual_smoothing")
    spy(resmooth.loss, "squared_error_loss")
    z, y = torch.randn(4, 5), torch.randint(0, 5, (4,))
    criterion = ResidualSmoothingLoss()(z, y, 0.5)
    function = resmooth.functional.residual_smoothing_loss(z, y, 0.5)
    SquaredErrorLoss()(z, y)
    assert calls == [("resmooth.loss", "_residual_smoothing"), ("resmooth.functional", "_residual_smoothing"),
                     ("resmooth.loss", "squared_error_loss")]
    assert torch.equal(criterion, function)


def test_eq_22_is_written_once(monkeypatch):
    import resmooth.diffusion
    import resmooth.functional

    calls = []
    smooth = resmooth.diffusion._smooth

    def spy(d, kappa, reuse=False):
        calls.append(tuple(d.shape))
        return smooth(d, kappa, reuse)

    monkeypatch.setattr(resmooth.diffusion, "_smooth", spy)
    monkeypatch.setattr(resmooth.functional, "_smooth", spy)
    d, kappa = torch.rand(3, 5, dtype=torch.float64), torch.rand(3, 5, dtype=torch.float64)
    resmooth.smooth_residual(d, kappa)  # the O(M) product
    ResidualSmoothingLoss()(torch.randn(3, 5), torch.randint(0, 5, (3,)), 0.5)  # the fused node
    ResidualSmoothingLoss(operator="global", activation="sigmoid")(torch.randn(2, 2, 3), torch.rand(2, 2, 3), 0.5)
    assert calls == [(3, 5), (3, 5), (2, 6)]


@pytest.mark.parametrize("scheme", ["full", "global"])
def test_the_eager_node_in_place_gives_the_gradient_of_the_node_out_of_place(scheme):
    # Eager code outside torch.func calls the ctx-form node, whose forward and first-order
    # backward build their results in an intermediate's buffer; a backward with create_graph
    # runs the out-of-place products. Both give one gradient, to rounding.
    gen = torch.Generator().manual_seed(3)
    z, y = torch.randn(16, 7, generator=gen, dtype=torch.float64), torch.randint(0, 7, (16,), generator=gen)
    criterion = ResidualSmoothingLoss(scheme, reduction="sum")
    z1 = z.clone().requires_grad_()
    loss = criterion(z1, y, progress=0.4)
    names = {type(node).__name__ for node in _graph(loss.grad_fn)}
    assert "_GlobalSmoothedNormEagerBackward" in names and "GlobalSmoothedNormBackward" not in names
    (in_place,) = torch.autograd.grad(loss, z1)
    z2 = z.clone().requires_grad_()
    (out_of_place,) = torch.autograd.grad(criterion(z2, y, progress=0.4), z2, create_graph=True)
    torch.testing.assert_close(in_place, out_of_place.detach(), rtol=1e-12, atol=1e-14)
    # And both are the gradient of the dense layer of Eq. 22 at the same kappa.
    from resmooth import smoothing_matrix
    from resmooth.functional import residual

    z3 = z.clone().requires_grad_()
    w = smoothing_matrix(criterion.last_kappa)
    (dense,) = torch.autograd.grad((w @ residual(z3, y).unsqueeze(-1)).square().sum(), z3)
    torch.testing.assert_close(in_place, dense, rtol=1e-10, atol=1e-12)


def _graph(node, seen=None):
    seen = set() if seen is None else seen
    if node is not None and node not in seen:
        seen.add(node)
        for child, _ in node.next_functions:
            _graph(child, seen)
    return seen


def test_each_check_has_one_message():
    from resmooth import smoothing_matrix, smooth_residual
    from resmooth.functional import residual_smoothing_loss

    def message(call):
        with pytest.raises(ValueError) as error:
            call()
        return str(error.value)

    z, y = torch.randn(4, 5), torch.randint(0, 5, (4,))
    # "progress is required": the function, the criterion and the diffusivity say the same.
    required = {message(lambda: residual_smoothing_loss(z, y)), message(lambda: ResidualSmoothingLoss()(z, y)),
                message(lambda: diffusivity(torch.rand(2, 3))).replace("pass t=t", "pass progress=t").replace(
                    "t (training", "progress (training")}
    assert len(required) == 1
    # M >= 2: the dense reference, the O(M) product and the loss.
    classes = [message(lambda: smoothing_matrix(torch.rand(3, 1))), message(lambda: smooth_residual(torch.rand(3, 1), 0.5)),
               message(lambda: ResidualSmoothingLoss(activation="sigmoid")(torch.randn(3, 1), torch.rand(3, 1), 0.5))]
    assert all("must have at least M = 2 elements to smooth between for the global operator" in m for m in classes)
    # The class indices' range, with and without an ignore_index.
    bad = torch.tensor([0, 1, 2, 5])
    ranges = {message(lambda: SquaredErrorLoss()(z, bad)), message(lambda: ResidualSmoothingLoss()(z, bad, 0.5)),
              message(lambda: resmooth_residual(z, bad))}
    assert ranges == {"target holds class indices outside [0, 4] (input has 5 classes along dim 1) that are not "
                      "ignore_index=-100", "target holds class indices outside [0, 4] (input has 5 classes along dim 1)"}


def resmooth_residual(z, y):
    from resmooth.functional import residual

    return residual(z, y)


def test_functional_names_its_public_functions_and_hides_its_helpers():
    import resmooth.functional as functional

    assert set(functional.__all__) == {"residual_smoothing_loss", "squared_error_loss", "residual", "diffusivity",
                                       "ResidualSmoothingOutput"}
    namespace: dict = {}
    exec("from resmooth.functional import *", namespace)
    assert {name for name in namespace if not name.startswith("__")} == set(functional.__all__)
    # Every function defined there is in __all__ or private.
    defined = {name for name, value in vars(functional).items()
               if callable(value) and getattr(value, "__module__", None) == "resmooth.functional"}
    assert {name for name in defined if not name.startswith("_")} <= set(functional.__all__)
    for helper in ("reduce", "masked_difference", "resolve_operator", "as_progress", "scale", "as_tensor", "smoothed_squares"):
        assert not hasattr(functional, helper) and hasattr(functional, "_" + helper)


def test_the_loss_imports_nothing_of_the_command_line():
    import dataclasses
    import subprocess
    import sys

    assert all(not f.metadata for f in dataclasses.fields(DiffusivityMap))  # no command-line help in the loss
    code = ("import sys, resmooth, resmooth.functional, resmooth.loss; "
            "print(sorted(m for m in sys.modules if m.startswith('resmooth')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "_fields" not in loaded and "resmooth.lab" not in loaded and "_extras" not in loaded, loaded


# Issue 32, item 6: the docstrings.


def test_the_docstrings_have_torchs_layout():
    import inspect

    from resmooth.functional import residual_smoothing_loss

    doc = inspect.getdoc(ResidualSmoothingLoss)
    for part in ("g     = ||W |phi(z) - y| ||^2", "kappa = s(t) sigmoid(alpha d~)", "s(t)  = exp(-|t - mu| / b)",
                 "sech^2((t - mu) / (2 b))", "Shape:", "Examples::"):
        assert part in doc, part
    # The paper's settings (Table 3), and the scale of the mean against MSELoss, in the prose.
    prose = " ".join(doc.split())
    for part in ("**M times** ``nn.MSELoss()``", "0.2 and 0.5 for Laplace, 0.25 and 0.5 for Logistic",
                 "Default: 1, the paper's Table 3", "Default: 0.75, the paper's"):
        assert part in prose, part
    # One Args entry per argument of the constructor, in its order, each with its default.
    for criterion in (ResidualSmoothingLoss, SquaredErrorLoss):
        args = inspect.getdoc(criterion).split("\nArgs:\n")[1].split("\n\n")[0]
        entries = re.split(r"^    (?=\w+ \()", args, flags=re.MULTILINE)[1:]
        names = [entry.split(" ", 1)[0] for entry in entries]
        assert names == list(inspect.signature(criterion).parameters), criterion
        for entry in entries:
            assert "Default:" in entry, entry
    for obj in (SquaredErrorLoss, residual_smoothing_loss, squared_error_loss):
        text = inspect.getdoc(obj)
        assert "Examples::" in text and ">>>" in text, obj
    assert "M times" in inspect.getdoc(SquaredErrorLoss) and "Shape:" in inspect.getdoc(SquaredErrorLoss)


# Issue 32, item 8: the traps.


def test_the_state_carries_the_loss_and_refuses_another():
    run = ResidualSmoothingLoss(distribution="logistic", b=0.5, total_steps=8)
    run.step()
    state = _saved(run)  # through torch.save and torch.load(weights_only=True)
    assert bytes(state["scheme"].tolist()).decode() == "full" and float(state["b"]) == 0.5
    assert "s" not in state and "tau" in state  # the full scheme reads no s; "auto" reads tau on dense input
    same = ResidualSmoothingLoss(distribution="logistic", b=0.5, total_steps=8)
    same.load_state_dict(state)
    assert int(same.steps_done) == 1
    with pytest.raises(RuntimeError, match=r"another loss: b 0.5 in the state, 0.9 here; construct the criterion"):
        ResidualSmoothingLoss(distribution="logistic", b=0.9, total_steps=8).load_state_dict(state)
    with pytest.raises(RuntimeError, match=r"scheme 'full' in the state, 'local' here; distribution 'logistic' in the "
                                           r"state, not read here; mu 0.75 in the state, not read here; b 0.5 .*; "
                                           r"s not read in the state, 1.0 here"):
        ResidualSmoothingLoss("local", total_steps=8).load_state_dict(state)
    with pytest.raises(RuntimeError, match=r"activation 'softmax' in the state, 'sigmoid' here"):
        ResidualSmoothingLoss(distribution="logistic", activation="sigmoid", total_steps=8).load_state_dict(state)
    with pytest.raises(RuntimeError, match=r"operator 'auto' in the state, 'global' here; tau 1.0 in the state, not read"):
        ResidualSmoothingLoss(distribution="logistic", operator="global", total_steps=8).load_state_dict(state)
    refused = ResidualSmoothingLoss(b=0.9, total_steps=8)
    with pytest.raises(RuntimeError):
        refused.load_state_dict(state)
    assert int(refused.steps_done) == 0  # nothing loaded
    # A state of before (the step count and the length only) loads into any criterion with the schedule.
    older = {"steps_done": torch.tensor(3), "total_steps": torch.tensor(8)}
    for criterion in (ResidualSmoothingLoss(b=0.9, total_steps=8), ResidualSmoothingLoss("local", total_steps=8)):
        criterion.load_state_dict(older)
        assert int(criterion.steps_done) == 3


def test_hyperparameters_after_the_first_are_keyword_only():
    from resmooth.functional import residual_smoothing_loss

    with pytest.raises(ValueError, match=r"scheme='mean' is not a scheme .*'mean' is a value of reduction, which is "
                                         r"keyword-only, as is every argument after scheme: pass reduction='mean'"):
        ResidualSmoothingLoss("mean")
    with pytest.raises(ValueError, match=r"'sigmoid' is a value of activation.*pass activation='sigmoid'"):
        ResidualSmoothingLoss("sigmoid")
    with pytest.raises(ValueError, match=r"activation='sum' is not a activation .*pass reduction='sum'"):
        SquaredErrorLoss("sum")
    with pytest.raises(TypeError, match="positional argument"):
        ResidualSmoothingLoss("full", "logistic")
    with pytest.raises(TypeError, match="positional argument"):
        SquaredErrorLoss("softmax", "sum")
    z, y = torch.randn(2, 3), torch.randint(0, 3, (2,))
    with pytest.raises(TypeError, match="positional argument"):
        residual_smoothing_loss(z, y, 0.5, "full", "logistic")
    with pytest.raises(TypeError, match="positional argument"):
        squared_error_loss(z, y, "softmax", "sum")
    with pytest.raises(TypeError, match="positional argument"):
        diffusivity(z, 0.5, "full", "logistic")
    with pytest.raises(TypeError, match="positional argument"):
        DiffusivityMap("full", "logistic")


def test_numpy_numbers_and_0d_tensors_are_numbers():
    np = pytest.importorskip("numpy")
    z, y = torch.randn(4, 5, dtype=torch.float64), torch.randint(0, 5, (4,))
    plain = ResidualSmoothingLoss(mu=0.5, b=0.25, alpha=2.0, total_steps=10, ignore_index=-1)
    odd = ResidualSmoothingLoss(mu=np.float32(0.5), b=torch.tensor(0.25), alpha=np.int64(2),
                                total_steps=torch.tensor(10), ignore_index=np.int16(-1))
    assert odd.diffusivity == plain.diffusivity and type(odd.diffusivity.b) is float
    assert odd.total_steps == 10 and type(odd.total_steps) is int and odd.ignore_index == -1
    torch.testing.assert_close(odd(z, y, np.float64(0.4)), plain(z, y, 0.4), rtol=0, atol=0)
    grid = ResidualSmoothingLoss(activation="sigmoid", tau=torch.tensor(2))
    assert grid.tau == 2.0
    assert annealing_scale(np.float64(0.3), mu=np.float32(0.5), b=torch.tensor(0.25)) == annealing_scale(0.3, 0.5, 0.25)
    for bad, error in ((torch.tensor([0.3, 0.4]), "b must be a real number; got Tensor"),
                       (torch.tensor(True), "b must be a real number; got Tensor"), (np.bool_(True), "got bool")):
        with pytest.raises(TypeError, match=error):
            ResidualSmoothingLoss(b=bad)
    with pytest.raises(TypeError, match="total_steps must be an integer; got Tensor"):
        ResidualSmoothingLoss(total_steps=torch.tensor(10.0))


@pytest.mark.parametrize("progress", [1.5, -0.25], ids=["past-the-end", "before-the-start"])
def test_a_progress_outside_0_1_is_never_used_as_it_is(progress):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(8)
    z, y = torch.randn(8, 10, generator=g), torch.randint(0, 10, (8,), generator=g)
    eager = ResidualSmoothingLoss()
    inside = min(max(progress, 0.0), 1.0)
    # Eagerly, checked: an error that names the argument.
    for t in (progress, torch.tensor(progress)):
        with pytest.raises(ValueError, match=r"progress must lie in \[0, 1\]"):
            eager(z, y, t)
    # Where it is not checked (compiled, validate_args=False), clamped to [0, 1]: s(1) or s(0).
    backend, _ = _count_compilations()
    compiled = torch.compile(ResidualSmoothingLoss(), fullgraph=True, backend=backend)
    for t in (progress, torch.tensor(progress, dtype=torch.float64)):
        torch.testing.assert_close(compiled(z, y, t), eager(z, y, inside), rtol=0, atol=0)
    unchecked = ResidualSmoothingLoss(validate_args=False)
    t = torch.tensor(progress, dtype=torch.float64)
    torch.testing.assert_close(unchecked(z, y, t), eager(z, y, inside), rtol=0, atol=0)
    assert float(unchecked.last_scale) == annealing_scale(inside)


def test_step_works_inside_a_compiled_region():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(9)
    model = torch.nn.Linear(6, 4)
    y = torch.randint(0, 4, (8,), generator=g)
    compiled_criterion, eager = ResidualSmoothingLoss(total_steps=3), ResidualSmoothingLoss(total_steps=3)

    def loss_and_step(x):
        loss = compiled_criterion(model(x), y)
        compiled_criterion.step()
        return loss

    backend, calls = _count_compilations()
    compiled = torch.compile(loss_and_step, fullgraph=True, backend=backend)
    for _ in range(5):  # two steps past the end: the progress stays at 1
        x = torch.randn(8, 6, generator=g)
        torch.testing.assert_close(compiled(x), eager(model(x), y))
        eager.step()
    assert int(compiled_criterion.steps_done) == 5 and float(compiled_criterion.progress()) == 1.0
    assert len(calls) == 1


def test_last_scale_is_detached():
    import copy

    z, y = torch.randn(4, 5), torch.randint(0, 5, (4,))
    criterion = ResidualSmoothingLoss()
    progress = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    criterion(z, y, progress)
    assert not criterion.last_scale.requires_grad and criterion.last_scale.grad_fn is None
    assert not criterion.last_kappa.requires_grad
    copy.deepcopy(criterion)  # a non-leaf tensor attribute would be refused
