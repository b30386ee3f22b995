"""The networks: parameter counts against the papers and by hand, shapes, memory format, init, errors."""

import copy
import math

import pytest
import torch

from resmooth import heat_diffuse, laplacian
from resmooth.lab.data import augment_batch, batches
from resmooth.lab.models import MODELS, DenseNetBC, ResNet, build_model, count_parameters
from resmooth.lab.models.autoencoder import ConvAutoencoder
from resmooth.lab.sweep import Sweep


def resnet_parameters(n: int, num_classes: int, in_channels: int, w: int = 16) -> int:
    """Option-A ResNet of depth 6n + 2, counted layer by layer (conv weights, BN weight + bias, fc).

    For ResNet20 (n = 3), 10 classes, RGB:
      stem     3*16*9 + 2*16                                              =     464
      stage 1  3 blocks * 2 * (16*16*9 + 2*16)                            =  14,016
      stage 2  (16*32*9 + 64) + (32*32*9 + 64) + 2 * 2 * (32*32*9 + 64)   =  51,072
      stage 3  (32*64*9 + 128) + (64*64*9 + 128) + 2 * 2 * (64*64*9 + 128) = 203,520
      fc       64*10 + 10                                                 =     650
      total                                                                 269,722
    (Option B's 1x1 projection + BN shortcuts would add 16*32 + 64 + 32*64 + 128 = 2,752,
    giving 272,474.)
    """
    total = in_channels * w * 9 + 2 * w
    c_in = w
    for width in (w, 2 * w, 4 * w):
        for _ in range(n):
            total += c_in * width * 9 + 2 * width + width * width * 9 + 2 * width
            c_in = width
    return total + 4 * w * num_classes + num_classes


def densenet_bc_parameters(depth: int, k: int, num_classes: int, in_channels: int) -> int:
    """DenseNet-BC counted layer by layer; 769,162 for L = 100, k = 12, 10 classes, RGB."""
    c = 2 * k
    total = in_channels * c * 9
    for block in range(3):
        for _ in range((depth - 4) // 6):
            total += 2 * c + c * 4 * k + 2 * 4 * k + 4 * k * k * 9  # BN, 1x1, BN, 3x3
            c += k
        if block < 2:
            total += 2 * c + c * (c // 2)
            c //= 2
    return total + 2 * c + c * num_classes + num_classes


@pytest.mark.parametrize("name,n,w", [("resnet8", 1, 16), ("resnet8-w8", 1, 8), ("resnet20", 3, 16), ("resnet32", 5, 16), ("resnet44", 7, 16), ("resnet56", 9, 16), ("resnet110", 18, 16)])
@pytest.mark.parametrize("num_classes,in_channels", [(10, 3), (100, 3), (10, 1)])
def test_resnet_exact_parameter_count(name, n, w, num_classes, in_channels):
    model = build_model(name, num_classes, in_channels)
    assert count_parameters(model) == resnet_parameters(n, num_classes, in_channels, w)


@pytest.mark.parametrize("name,blocks", [("resnet20", 9), ("resnet56", 27)])
def test_option_b_projects_where_the_shape_changes(name, blocks):
    a, b = build_model(name, 10, 1), build_model(name, 10, 1, shortcut="B")
    # 16*32 + 2*32 + 32*64 + 2*64: two 1x1 projections and their batch norms, at every depth.
    assert count_parameters(b) - count_parameters(a) == 2_752
    shortcuts = [block.shortcut for block in b.blocks]
    projected = [i for i, s in enumerate(shortcuts) if isinstance(s, torch.nn.Sequential)]
    n = blocks // 3
    assert len(shortcuts) == blocks and projected == [n, 2 * n]  # the first block of stages 2 and 3
    conv, norm = shortcuts[n]
    assert (conv.kernel_size, conv.stride, conv.in_channels, conv.out_channels) == ((1, 1), (2, 2), 16, 32)
    assert isinstance(norm, torch.nn.BatchNorm2d) and conv.bias is None
    assert all(isinstance(s, torch.nn.Identity) for i, s in enumerate(shortcuts) if i not in projected)
    for size in (28, 32):  # Fashion-MNIST as it is, and padded to 32x32
        assert b.eval()(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_a_shortcut_is_refused_where_there_is_none():
    with pytest.raises(ValueError, match="shortcut must be one of 'A', 'B'"):
        build_model("resnet20", 10, shortcut="C")
    with pytest.raises(ValueError, match="shortcut='B' applies to the ResNets"):
        build_model("densenet-bc-100", 10, shortcut="B")


def test_resnet20_hand_count():
    assert count_parameters(build_model("resnet20", 10)) == 269_722


@pytest.mark.parametrize("num_classes,in_channels", [(10, 3), (100, 3), (10, 1)])
def test_densenet_exact_parameter_count(num_classes, in_channels):
    model = build_model("densenet-bc-100", num_classes, in_channels)
    assert count_parameters(model) == densenet_bc_parameters(100, 12, num_classes, in_channels)


# The papers print counts rounded to the digits below (He et al. 2016, Table 6; Huang et al. 2017,
# Table 2), so the tolerance is half a unit of the last printed digit: for DenseNet-BC 0.8M that
# is 6.25% (769,162 is 3.9% under 0.8M); for the ResNets it is under 3%.
@pytest.mark.parametrize(
    "name,published,half_unit",
    [
        ("resnet20", 0.27e6, 0.005e6),
        ("resnet32", 0.46e6, 0.005e6),
        ("resnet44", 0.66e6, 0.005e6),
        ("resnet56", 0.85e6, 0.005e6),
        ("resnet110", 1.7e6, 0.05e6),
        ("densenet-bc-100", 0.8e6, 0.05e6),
    ],
)
def test_parameter_count_matches_paper(name, published, half_unit):
    assert abs(count_parameters(build_model(name, 10)) - published) <= half_unit


@pytest.mark.parametrize("name", ["resnet20", "resnet110", "densenet-bc-100"])
@pytest.mark.parametrize("shape,num_classes", [((2, 3, 32, 32), 10), ((2, 1, 28, 28), 100)])
def test_output_shape(name, shape, num_classes):
    model = build_model(name, num_classes, in_channels=shape[1]).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet20", "densenet-bc-100"])
def test_channels_last_matches_contiguous(name):
    torch.manual_seed(0)
    model = build_model(name, 10).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(x.double())
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    # Both float32 layouts sum in orders the kernels choose (by instruction set, by layout). Each
    # convolution's sum of K products is off by about sqrt(K) roundings of float32's eps, and the
    # relative errors of the layers add up along the depth: the bound, relative to the size of
    # the logits, is layers * sqrt(max K) * eps. Each layout must be that close to float64.
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    fan_in = max(m.weight[0].numel() for m in convs)
    tolerance = (len(convs) + 1) * math.sqrt(fan_in) * torch.finfo(torch.float32).eps * float(exact.abs().max())
    for layout, logits in (("contiguous", ref), ("channels_last", out)):
        error = float((logits.double() - exact).abs().max())
        assert error <= tolerance, f"{layout}: {error:.3g} from float64, bound {tolerance:.3g}"


def test_resnet_trains_in_channels_last():
    model = build_model("resnet20", 10, 1).to(memory_format=torch.channels_last).train()
    x = torch.randn(2, 1, 28, 28).to(memory_format=torch.channels_last)
    model(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_compiles_without_graph_breaks():
    # fullgraph=True fails on any graph break, i.e. on Python control flow that depends on data;
    # the eager backend checks the tracing without paying for code generation.
    model = build_model("resnet20", 10, 1).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("name", ["resnet56", "densenet-bc-100"])
def test_he_normal_init(name):
    torch.manual_seed(0)
    model = build_model(name, 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    conv = max(convs, key=lambda m: m.weight.numel())  # the most samples for the std estimate
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.mean().abs() < 0.05 * math.sqrt(2 / fan_out)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    fc = model.fc
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2 / fc.in_features), rel=0.15)
    assert (fc.bias == 0).all()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert (bn.weight == 1).all() and (bn.bias == 0).all()


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match="name must be one of") as info:
        build_model("resnet18", 10)
    for allowed in MODELS:
        assert repr(allowed) in str(info.value)


@pytest.mark.parametrize("kwargs,arg", [({"num_classes": 1}, "num_classes"), ({"num_classes": 10, "in_channels": 0}, "in_channels")])
def test_bad_sizes(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        build_model("resnet20", **kwargs)


@pytest.mark.parametrize("depth", [21, 2, 0])
def test_resnet_bad_depth(depth):
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth)


@pytest.mark.parametrize("kwargs,arg", [({"depth": 101}, "depth"), ({"growth": 0}, "growth"), ({"compression": 0.0}, "compression")])
def test_densenet_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        DenseNetBC(**kwargs)


def test_densenet_is_configurable():
    # L = 40, k = 12 without compression is DenseNet-B-40's layout: 3 blocks of 6 bottlenecks.
    model = DenseNetBC(depth=40, growth=12, compression=1.0, num_classes=10, in_channels=1).eval()
    assert model.fc.in_features == 24 + 3 * 6 * 12
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: ResNet(20.0), "depth"),
        (lambda: ResNet(20, width=True), "width"),
        (lambda: DenseNetBC(depth=40.0), "depth"),
        (lambda: DenseNetBC(growth=12.0), "growth"),
        (lambda: ConvAutoencoder(1, 1, width=4.0), "width"),
        (lambda: next(batches(torch.zeros(2, 1), torch.zeros(2), 1.0, shuffle=False)), "batch_size"),
        (lambda: augment_batch(torch.zeros(2, 1, 4, 4), padding=1.0), "padding"),
        (lambda: heat_diffuse(torch.rand(4, 4), 0.1, 1.0, 2, steps=2.0), "steps"),
        (lambda: laplacian(torch.rand(4, 4), 2.0), "ndim"),
        (lambda: Sweep("unused", base={}, grid=[], trials=1.0, kind="dense"), "trials"),
    ],
)
def test_integer_arguments_are_one_check_everywhere(make, name):
    # resmooth._checks.check_int: a non-integer is a TypeError that names the argument.
    with pytest.raises(TypeError, match=f"{name} must be an integer; got float|{name} must be an integer; got bool"):
        make()
