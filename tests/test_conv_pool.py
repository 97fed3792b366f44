"""The fused first stage (conv -> 2x2 max-pool -> ReLU on the CPU) against PyTorch's layers in
float64: values, the pool's choice on ties and NaN, and both gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digitlab import conv_pool
from digitlab.cnn import CourseCNN
from digitlab.device import threads

pytestmark = pytest.mark.skipif(not conv_pool.available(), reason="numba cannot run here")


def reference(x, w, b):
    """The obvious, slow version: PyTorch's conv2d, max_pool2d and relu in float64."""
    return torch.relu(F.max_pool2d(F.conv2d(x.double(), w.double(), b.double()), 2))


def both(x, w, b, g, size=None):
    """Outputs and (weight, bias) gradients of the fused stage and of the float64 reference
    (sliced to `size`)."""
    results = []
    rows, cols = size or (None, None)
    for dtype in (torch.float32, torch.float64):
        wt = w.detach().to(dtype).requires_grad_()
        bt = b.detach().to(dtype).requires_grad_()
        if dtype == torch.float32:
            out = conv_pool.conv_pool_relu(x, wt, bt, size)
        else:
            out = reference(x, wt, bt)[:, :, :rows, :cols]
        (out * g.to(dtype)).sum().backward()
        results.append((out.detach().double(), wt.grad.double(), bt.grad.double()))
    return results


def digits_like(n, h, w, seed):
    """Images with MNIST's character: most pixels exactly 0 (ties under every window), some
    exactly 1, the rest in between."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, h, w), dtype=np.float32)
    x[x < 0.6] = 0
    x[x > 0.9] = 1
    x[: max(1, n // 8)] = 0  # blank images: all four window values equal the bias
    return torch.from_numpy(x)


@pytest.mark.parametrize(
    "n, channels, k, h, w",
    [
        (128, 32, 3, 28, 28),  # the course's batch
        (5, 32, 3, 27, 28),  # an odd side: the pool drops the last row
        (1, 7, 3, 9, 10),
        (9, 4, 5, 28, 28),  # other kernel sizes take the generic kernels
        (3, 1, 2, 8, 8),
    ],
)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_matches_pytorch_in_float64(n, channels, k, h, w, n_threads):
    torch.manual_seed(n + k)
    x = digits_like(n, h, w, seed=n)
    wt = torch.randn(channels, 1, k, k) / k
    b = torch.rand(channels) * 0.2 - 0.1  # both signs: blank windows tie above and below zero
    fused_out = conv_pool.conv_pool_relu(x, wt, b)
    assert fused_out.shape == (n, channels, (h - k + 1) // 2, (w - k + 1) // 2)
    assert fused_out.dtype == torch.float32
    g = torch.randn(fused_out.shape)
    with threads(n_threads):
        (out, gw, gb), (ref, ref_gw, ref_gb) = both(x, wt, b, g)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    # float32 sums over n * h2 * w2 terms against float64 ones
    scale = float(ref_gw.abs().max())
    torch.testing.assert_close(gw, ref_gw, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(gb, ref_gb, rtol=1e-4, atol=1e-5 * float(ref_gb.abs().max()))


@pytest.mark.parametrize(
    "window, expected",
    [
        ((0.0, 0.0, 0.0, 0.0), (0, 0)),  # a blank window: all four tie
        ((0.0, 1.0, 1.0, 0.5), (0, 1)),  # (0, 1) and (1, 0) tie
        ((0.0, 0.5, 1.0, 1.0), (1, 0)),  # (1, 0) and (1, 1) tie
        ((0.0, 0.5, 0.25, 1.0), (1, 1)),
    ],
)
def test_ties_send_the_gradient_to_the_first_window_position(window, expected):
    """PyTorch's pool takes the first maximum in row-major order, and so must the fused stage.
    Only the bottom-right tap is non-zero, so the conv value at window position (a, b) is the
    pixel at (2 + a, 2 + b); the weight gradient then shows which position was chosen: it is
    the 3x3 patch under it."""
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 2
    x[0, 0, 2:4, 2:4] = torch.tensor(window).reshape(2, 2)
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 2, 2] = 1.0
    b = torch.tensor([0.5])
    (out, gw, gb), (ref, ref_gw, ref_gb) = both(x, w, b, torch.ones(1, 1, 1, 1))
    r, c = expected
    assert torch.equal(gw[0, 0], x[0, 0, r : r + 3, c : c + 3].double())
    assert torch.equal(out, ref) and torch.equal(gw, ref_gw) and torch.equal(gb, ref_gb)


def test_nan_and_relu_zero_follow_pytorch():
    x = torch.zeros(2, 1, 6, 6)
    x[0, 0, 2, 2] = float("nan")
    w = torch.ones(2, 1, 3, 3)
    w[1] = -1
    b = torch.tensor([0.0, -0.5])
    out = conv_pool.conv_pool_relu(x, w, b)
    ref = reference(x, w, b).float()
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(torch.nan_to_num(out), torch.nan_to_num(ref))
    assert (out[1] == 0).all()  # blank image, negative bias: the ReLU's zero everywhere


def test_course_cnn_takes_the_fused_stage_only_where_it_applies():
    model = CourseCNN()
    x = digits_like(4, 28, 28, seed=3)
    fused = model.features(x)
    model.fused = False
    plain = model.features(x)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    model.fused = True
    assert model._fuses_first_stage(x)
    assert not model._fuses_first_stage(x.double())
    assert not model._fuses_first_stage(x.clone().requires_grad_())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not model._fuses_first_stage(x)
    # images that need a gradient (saliency maps) get it through PyTorch's layers
    xg = x.clone().requires_grad_()
    model.features(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_the_kernels_refuse_strided_arrays():
    """Only C-contiguous signatures are compiled: a strided array would run 10x slower, so it
    must fail loudly instead of compiling a slow variant."""
    forward, _ = conv_pool._kernels(3)
    x = np.zeros((2, 8, 16), np.float32)[:, :, ::2]
    w = np.zeros((9, 4), np.float32)
    with pytest.raises(TypeError):
        forward(
            x,
            w,
            np.zeros(4, np.float32),
            np.zeros((2, 3, 3, 4), np.float32),
            np.zeros((2, 3, 3, 4), np.uint8),
            0,
            2,
        )


def test_size_computes_only_the_first_rows_and_columns():
    x = digits_like(6, 28, 28, seed=5)
    w = torch.randn(8, 1, 3, 3)
    b = torch.rand(8) - 0.5
    g = torch.randn(6, 8, 12, 11)
    (out, gw, gb), (ref, ref_gw, ref_gb) = both(x, w, b, g, size=(12, 11))
    assert out.shape == (6, 8, 12, 11)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-4, atol=1e-5 * float(ref_gw.abs().max()))
    torch.testing.assert_close(gb, ref_gb, rtol=1e-4, atol=1e-5 * float(ref_gb.abs().max()))


@pytest.mark.parametrize(
    "conv1",
    [
        lambda: torch.nn.Conv2d(1, 32, 3, padding=1),
        lambda: torch.nn.Conv2d(1, 32, 3, padding=1, padding_mode="reflect"),
        lambda: torch.nn.Conv2d(1, 32, 3, dilation=2),
        lambda: torch.nn.Conv2d(1, 32, 3, bias=False),
    ],
)
def test_a_replaced_first_layer_is_honoured(conv1):
    """Someone swaps conv1 for other settings: PyTorch's layers run it, not the fused stage."""
    torch.manual_seed(0)
    model = CourseCNN().eval()
    model.conv1 = conv1()
    x = digits_like(3, 28, 28, seed=1)
    assert not model._fuses_first_stage(x)
    try:
        fused = model(x)
    except RuntimeError:  # the shapes no longer fit the dense layer: so be it, both ways
        model.fused = False
        with pytest.raises(RuntimeError):
            model(x)
        return
    model.fused = False
    torch.testing.assert_close(fused, model(x))


def test_hooks_on_the_first_layer_fire():
    model = CourseCNN().eval()
    seen = []
    model.conv1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(digits_like(2, 28, 28, seed=2))
    assert seen == [(2, 32, 26, 26)]


def test_second_derivatives_match_pytorch():
    """create_graph=True (a gradient penalty): the fused stage's backward hands over to PyTorch's
    layers, so the gradient of the gradient exists and equals the unfused one."""
    x = digits_like(8, 28, 28, seed=4)
    y = torch.arange(8) % 10
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = CourseCNN().eval()
        model.fused = fused
        params = list(model.parameters())
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        penalty = sum((g**2).sum() for g in grads)
        results.append(torch.autograd.grad(penalty, params))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))


def test_torch_func_transforms_work():
    torch.manual_seed(0)
    model = CourseCNN().eval()
    x = digits_like(4, 28, 28, seed=6)
    y = torch.arange(4)
    params = dict(model.named_parameters())

    def loss(p):
        return F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    grads = torch.func.grad(loss)(params)
    model.zero_grad()
    loss(params).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6)
    per_image = torch.func.vmap(lambda xi: model(xi[None])[0])(x)
    torch.testing.assert_close(per_image, model(x), rtol=1e-5, atol=1e-6)
