"""The GAN training step's fast paths agree with the plain computation they replace."""

import pytest
import torch
import torch.nn.functional as F

from conftest import make_digits
from digitlab.gan import Discriminator, Generator, conv_to_one_channel, one_hot


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("channels_last", [False, True])
def test_one_channel_conv_matches_conv2d_in_float64(k, channels_last):
    """Values and all three gradients against F.conv2d in float64; float32's own conv2d is
    held to the same bound, so the GEMM + fold form is no less accurate than oneDNN's."""
    gen = torch.Generator().manual_seed(k)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 5, 9, 11, generator=gen).contiguous(memory_format=fmt)
    w, b = torch.randn(1, 5, k, k, generator=gen), torch.randn(1, generator=gen)
    grad = torch.randn(3, 1, 9, 11, generator=gen)

    def run(fn, dtype):
        args = [t.to(dtype).clone().requires_grad_() for t in (x, w, b)]
        out = fn(*args)
        out.backward(grad.to(dtype))
        return [out.detach(), *(a.grad for a in args)]

    exact = run(lambda *a: F.conv2d(*a, padding=k // 2), torch.float64)
    ours = run(conv_to_one_channel, torch.float32)
    onednn = run(lambda *a: F.conv2d(*a, padding=k // 2), torch.float32)
    for e, o, n in zip(exact, ours, onednn, strict=True):
        scale = e.abs().max().item()
        assert o.shape == e.shape
        assert (o.double() - e).abs().max().item() <= 1e-5 * scale
        assert (n.double() - e).abs().max().item() <= 1e-5 * scale


def test_one_channel_conv_refuses_other_shapes():
    x = torch.randn(2, 4, 6, 6)
    for w in (torch.randn(2, 4, 3, 3), torch.randn(1, 4, 4, 4), torch.randn(1, 3, 3, 3)):
        with pytest.raises(ValueError, match="odd k"):
            conv_to_one_channel(x, w, None)


def test_generator_uses_the_same_last_layer_as_conv2d():
    """The generator's CPU forward (GEMM + fold for its 7x7, 128 -> 1 layer) against the same
    network through nn.Conv2d: the same function of the same weights."""
    torch.manual_seed(0)
    g = Generator()
    z, hot = torch.randn(8, 128), one_hot(range(8))
    x = torch.cat([z, hot], 1)
    x = g.act(g.fc(x)).view(8, -1, 7, 7)
    x = g.act(g.up2(g.act(g.up1(x))))
    reference = torch.sigmoid(g.out(x))
    assert torch.allclose(g(z, hot), reference, atol=1e-6, rtol=0)


def _stacked_discriminator(d: Discriminator, images, onehot):
    """keras.io's discriminator as written: the image stacked with its 10 class maps."""
    n, _, h, w = images.shape
    maps = onehot[:, :, None, None].expand(n, onehot.shape[1], h, w)
    x = d.act(d.conv2(d.act(d.conv1(torch.cat([images, maps], 1)))))
    return d.fc(torch.amax(x, dim=(2, 3)))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("soft", [False, True])
def test_discriminator_equals_the_stacked_class_maps_in_float64(channels_last, soft):
    """The first layer without the (N, 11, 28, 28) stack: the logit and the gradients of
    every weight and of the image equal keras.io's stacked form in float64, for one-hot and
    for blended labels (the factoring is linear in them), in either memory format."""
    gen = torch.Generator().manual_seed(int(soft))
    torch.manual_seed(1)
    d = Discriminator().double()
    for p in d.parameters():  # Keras' zero biases would leave the bias path untested
        p.data.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    if channels_last:
        d = d.to(memory_format=torch.channels_last)
    images = torch.rand(6, 1, 28, 28, generator=gen, dtype=torch.float64)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    onehot = one_hot([3, 0, 9, 3, 7, 1]).double()
    if soft:
        onehot = torch.softmax(torch.randn(6, 10, generator=gen, dtype=torch.float64), 1)
    weights = torch.randn(6, 1, generator=gen, dtype=torch.float64)

    def run(forward):
        d.zero_grad()
        x = images.clone().requires_grad_()
        out = forward(x)
        (out * weights).sum().backward()
        return [out.detach(), x.grad, *(p.grad.clone() for p in d.parameters())]

    ours = run(lambda x: d(x, onehot))
    stacked = run(lambda x: _stacked_discriminator(d, x, onehot))
    for o, s in zip(ours, stacked, strict=True):
        assert o.shape == s.shape
        assert (o - s).abs().max().item() <= 1e-12 * max(1.0, s.abs().max().item())


def _run_trial(picker, seconds_per_count):
    """Drive `picker` through steps whose time depends on the thread count only."""
    used = []
    for _ in range(12):
        n = picker.next()
        used.append(n)
        picker.record(n, seconds_per_count[n])
    return used


def test_step_threads_keep_the_faster_count_and_time_again():
    from digitlab.device import step_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        picker = step_threads(None, torch.device("cpu"), every=10)
        # A quiet machine: two threads win; the trial runs 4 steps at each count first.
        used = _run_trial(picker, {2: 0.1, 1: 0.15})
        assert used[:8] == [2] * 4 + [1] * 4 and used[8:] == [2] * 4
        assert picker.chosen == 2
        # The load changes: the next trial (after 10 steps) finds one thread faster.
        used = _run_trial(picker, {2: 0.5, 1: 0.15})
        assert 1 in used and picker.chosen == 1
        # The warm-up step of each count is not counted: one slow first step changes nothing.
        picker = step_threads(None, torch.device("cpu"), every=10)
        for i, n in enumerate([2] * 4 + [1] * 4):
            assert picker.next() == n
            picker.record(n, 9.0 if i == 0 else {2: 0.1, 1: 0.2}[n])
        assert picker.chosen == 2
    finally:
        torch.set_num_threads(before)


def test_step_threads_asked_for_or_off_the_cpu_are_never_timed():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        from digitlab.device import step_threads

        assert _run_trial(step_threads(1, torch.device("cpu")), {1: 0.1}) == [1] * 12
        assert _run_trial(step_threads(None, torch.device("cuda")), {2: 0.1}) == [2] * 12
    finally:
        torch.set_num_threads(before)


def test_training_reports_the_chosen_threads_and_restores_the_count(tmp_path):
    from digitlab.gan_train import GANTrainConfig, train_gan

    x, y = make_digits(64, seed=4)
    before = torch.get_num_threads()
    cfg = GANTrainConfig(epochs=1, batch_size=4, max_steps=10)  # threads timed: 1 vs all
    _, _, info = train_gan(x, y, cfg, tmp_path, progress=False)
    assert info["steps"] == 10 and info["threads"] in {1, before}
    assert torch.get_num_threads() == before


def test_upsample_has_second_derivatives_like_pytorchs_layer():
    """gradgradcheck in float64, and a gradient penalty where the input needs no gradient
    (a frozen layer before it) equals the one through nn.ConvTranspose2d and LeakyReLU."""
    from digitlab.gan import upsample

    torch.manual_seed(0)
    up = torch.nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w, b = up.weight, up.bias
    assert torch.autograd.gradcheck(lambda x: upsample(up, x, 0.2), (x,))
    assert torch.autograd.gradgradcheck(lambda x: upsample(up, x, 0.2), (x,))
    penalties = []
    for layer in (lambda t: upsample(up, t, 0.2), lambda t: F.leaky_relu(up(t), 0.2)):
        up.zero_grad()
        out = layer(x.detach())  # the input needs no gradient
        (gw,) = torch.autograd.grad((out**2).sum(), (w,), create_graph=True)
        (gw**2).sum().backward()
        penalties.append((w.grad.clone(), b.grad.clone()))
    for a, c in zip(*penalties, strict=True):
        torch.testing.assert_close(a, c)


@pytest.mark.parametrize("channels_last", [True, False])
def test_upsample_fused_in_float32_equals_the_layer_and_its_activation(channels_last):
    """The float32 path (oneDNN's convolution with the activation fused) against PyTorch's
    own two layers: values and all three gradients."""
    from digitlab.gan import upsample

    torch.manual_seed(1)
    up = torch.nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    up = up.to(memory_format=fmt)
    x = torch.randn(4, 16, 7, 7).contiguous(memory_format=fmt).requires_grad_()
    ours, ref = upsample(up, x, 0.2), F.leaky_relu(up(x), 0.2)
    torch.testing.assert_close(ours, ref)
    assert (ours < 0).any() and (ours > 0).any()  # both sides of the activation are used
    g = torch.randn_like(ref)
    for a, c in zip(
        torch.autograd.grad(ours, (x, up.weight, up.bias), g),
        torch.autograd.grad(ref, (x, up.weight, up.bias), g),
        strict=True,
    ):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


def test_bfloat16_autocast_training_steps_run_on_the_cpu():
    """`gan train --bf16` on the CPU: the hand-written layers step aside under autocast (their
    backward once handed oneDNN a bfloat16 gradient with float32 weights: RuntimeError)."""
    from digitlab.gan import GANConfig
    from digitlab.gan_train import GANTrainConfig, build_nets, device_data, run_step

    x, y = make_digits(16, seed=5)
    for channels_last in (True, False):
        cfg = GANTrainConfig(bf16=True, batch_size=8, threads=1, channels_last=channels_last)
        nets = build_nets(cfg, GANConfig(), torch.device("cpu"))
        images, hot = device_data(x, y, nets)
        d_loss, g_loss = run_step(nets, images[:8], hot[:8], 0)
        assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
        for net in (nets.g, nets.d):
            assert all(
                p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters()
            )
