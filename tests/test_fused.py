"""The fused node of class outputs (resmooth.fused.GlobalSmoothedLoss) against autograd."""

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from resmooth import ResidualSmoothingLoss
from resmooth.diffusion import GlobalSmoothedNorm
from resmooth.functional import masked_difference, reduce, smoothed_squares

SCHEMES = {"global": {}, "local": {"s": 0.8, "alpha": 2.0}, "full": {"alpha": 2.0}}


def _targets(kind, shape, generator):
    n, m = shape
    if kind == "float":
        return torch.rand(shape, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, m, (n,), generator=generator)
    if kind == "ignored":
        labels[: n // 2] = -100
    return labels


def _autograd(criterion, z, target, progress, node):
    """The loss through autograd's activation backward: into GlobalSmoothedNorm (``node``), or
    through Eq. 22 written out in torch operations, at the criterion's kappa."""
    diff, keep = masked_difference(z, target, criterion.activation, criterion.ignore_index, True)
    scale = criterion.scale(progress)
    if node:
        d = diff.detach().abs()
        g = GlobalSmoothedNorm.apply(diff, d, criterion.diffusivity.kappa(d, scale))
    else:
        g, _ = smoothed_squares(diff, criterion.diffusivity, scale, "global", 1.0)
    return reduce(g, keep, criterion.reduction)


@pytest.mark.parametrize("shape", [(6, 2), (7, 5), (16, 33)])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "identity"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("target", ["index", "ignored", "float"])
def test_the_fused_node_equals_autograd(shape, activation, scheme, target):
    g = torch.Generator().manual_seed(0)
    z = (3 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    y = _targets(target, shape, g)
    progress = None if scheme == "local" else 0.6
    for reduction in ("mean", "sum", "none"):
        criterion = ResidualSmoothingLoss(scheme, **SCHEMES[scheme], activation=activation, reduction=reduction)
        out = criterion(z, y, progress)
        # The upstream gradient of "none" weighs the samples differently, as a caller's reduction would.
        weights = torch.rand(out.shape, generator=g, dtype=torch.float64)
        (grad,) = torch.autograd.grad(out, z, weights)
        for node in (True, False):
            expected = _autograd(criterion, z, y, progress, node)
            (expected_grad,) = torch.autograd.grad(expected, z, weights)
            torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-14)
        if target == "ignored":
            assert (grad[: shape[0] // 2] == 0).all() and (grad[shape[0] // 2 :] != 0).any()
    # The loss went through the node (a float target ignores nothing: "none" is the node's output).
    if target == "float":
        assert type(criterion(z, y, progress).grad_fn).__name__ == "GlobalSmoothedLossBackward"


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "identity"])
def test_the_fused_node_passes_gradcheck_and_gradgradcheck(activation):
    # The global scheme's kappa does not depend on the input, so finite differences see the
    # gradient that the node takes; gradgradcheck runs its create_graph branch.
    g = torch.Generator().manual_seed(7)
    z = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(4, 6, generator=g, dtype=torch.float64)
    criterion = ResidualSmoothingLoss("global", activation=activation, reduction="none")
    assert type(criterion(z, y, 0.4).grad_fn).__name__ == "GlobalSmoothedLossBackward"
    assert torch.autograd.gradcheck(lambda x: criterion(x, y, 0.4), (z,))
    assert torch.autograd.gradgradcheck(lambda x: criterion(x, y, 0.4), (z,))


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "identity"])
def test_the_fused_nodes_second_derivative_holds_kappa_fixed_as_autograd_does(activation):
    # Under the full scheme kappa depends on z and is held constant: gradgradcheck cannot see
    # that, autograd through the written-out layer can. Hessian-vector products against it.
    g = torch.Generator().manual_seed(8)
    z = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (5,), generator=g)
    v = torch.randn(5, 7, generator=g, dtype=torch.float64)
    criterion = ResidualSmoothingLoss("full", activation=activation)
    hvps = []
    for loss in (criterion(z, y, 0.3), _autograd(criterion, z, y, 0.3, node=False)):
        (grad,) = torch.autograd.grad(loss, z, create_graph=True)
        hvps.append(torch.autograd.grad((grad * v).sum(), z)[0])
    torch.testing.assert_close(hvps[0], hvps[1], rtol=1e-12, atol=1e-14)
    assert hvps[0].abs().max() > 1e-3


def test_without_a_gradient_the_value_is_the_nodes():
    g = torch.Generator().manual_seed(9)
    z = torch.randn(8, 10, generator=g, requires_grad=True)
    y = torch.randint(0, 10, (8,), generator=g)
    criterion = ResidualSmoothingLoss(reduction="none")
    with_grad = criterion(z, y, 0.5)
    with torch.no_grad():
        without = criterion(z, y, 0.5)
    detached = criterion(z.detach(), y, 0.5)
    assert without.grad_fn is None and detached.grad_fn is None
    assert torch.equal(without, with_grad.detach()) and torch.equal(detached, with_grad.detach())


def test_half_precision_logits_get_the_float32_gradient():
    g = torch.Generator().manual_seed(10)
    z = torch.randn(6, 10, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    half = z.bfloat16().requires_grad_()
    full = half.detach().float().requires_grad_()
    ResidualSmoothingLoss()(half, y, 0.5).backward()
    ResidualSmoothingLoss()(full, y, 0.5).backward()
    assert half.grad.dtype == torch.bfloat16
    torch.testing.assert_close(half.grad, full.grad.bfloat16())


@pytest.mark.parametrize("scheme", ["global", "full"])
def test_the_fused_node_compiles_whole_once_over_a_run(scheme):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(11)
    y = torch.randint(0, 10, (16,), generator=g)
    y[3] = -100
    eager = ResidualSmoothingLoss(scheme, total_steps=4, validate_args=False)
    criterion = ResidualSmoothingLoss(scheme, total_steps=4, validate_args=False)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(criterion, fullgraph=True, backend=counter)
    scales = []
    for _ in range(2):  # two progresses of the schedule, 1/4 and 2/4: one graph
        criterion.step()
        eager.step()
        z = torch.randn(16, 10, generator=g, requires_grad=True)
        value = compiled(z, y)
        (grad,) = torch.autograd.grad(value, z)
        (expected_grad,) = torch.autograd.grad(eager(z, y), z)
        torch.testing.assert_close(value, eager(z, y))
        torch.testing.assert_close(grad, expected_grad)
        assert (grad[3] == 0).all()
        scales.append(criterion.last_scale)
    assert counter.frame_count == 1
    assert not torch.equal(scales[0], scales[1])  # the scale s(t) moved, in the one graph
