import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_digits, write_fake_idx
from digitlab.cli import main
from digitlab.cnn import (
    CNNConfig,
    CourseCNN,
    predict_proba,
    summary,
    to_tensor,
)
from digitlab.errors import CheckpointMismatch, ConfigError, DataError
from digitlab.loaders import load_model, save_model
from digitlab.preprocess import to_mnist
from digitlab.train import CHECKPOINT, TrainConfig, WeightAverage, train_cnn


def test_architecture_matches_the_course():
    model = CourseCNN()
    assert sum(p.numel() for p in model.parameters()) == 34_826
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert model.features(torch.zeros(2, 1, 28, 28)).shape == (2, 1600)
    text = summary(model)
    assert "Total params: 34,826" in text and "(None, 5, 5, 64)" in text and "18,496" in text


@pytest.mark.parametrize("fused", [False, True])
def test_pool_then_relu_is_the_course_order_bit_for_bit(fused):
    """Features and weight gradients equal conv -> ReLU -> pool, blank images (ties) included:
    bit for bit with PyTorch's layers; with the fused first stage (digitlab.conv_pool) up to
    the order of float additions in each 3x3 sum, the pool's choices (ties) the same."""
    torch.manual_seed(1)
    model = CourseCNN()
    model.fused = fused
    with torch.no_grad():  # biases of both signs, so blank patches give ties above and below 0
        model.conv1.bias.uniform_(-0.1, 0.1)
        model.conv2.bias.uniform_(-0.1, 0.1)
    course = torch.nn.Sequential(
        model.conv1, torch.nn.ReLU(), model.pool, model.conv2, torch.nn.ReLU(), model.pool
    )
    x, _ = make_digits(16)
    x = torch.from_numpy(np.concatenate([x, np.zeros((2, 28, 28), np.uint8)]) / 255.0)
    x = x.float()[:, None]
    weight = torch.randn(len(x), 1600)
    grads = []
    for f in (model.features, lambda t: torch.flatten(course(t), 1)):
        model.zero_grad()
        out = f(x)
        (out * weight).sum().backward()
        grads.append(
            (out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None])
        )
    if not fused:
        assert torch.equal(grads[0][0], grads[1][0])
        for a, b in zip(grads[0][1], grads[1][1], strict=True):
            assert torch.equal(a, b)
        return
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_dropout_keeps_the_right_share_and_scales():
    from digitlab.cnn import Dropout

    x = torch.ones(400, 1000, requires_grad=True)
    drop = Dropout(0.5).train()
    torch.manual_seed(0)
    out = drop(x)
    kept = out != 0
    # 400,000 draws: the kept share is within 5 standard deviations (0.004) of 1/2.
    assert abs(kept.float().mean().item() - 0.5) < 0.004
    assert torch.all(out[kept] == 2.0)
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())
    assert abs((Dropout(0.2).train()(x) != 0).float().mean().item() - 0.8) < 0.004
    # p = 0.5 takes one bit per entry from random bytes: each of the eight bit positions,
    # and pairs of neighbours, must be fair and independent (400,000 entries: 50,000 each).
    kept_of = kept.reshape(-1, 8).float()
    assert (kept_of.mean(0) - 0.5).abs().max() < 0.012  # 5 sd of 50,000 coins
    both = (kept_of[:, :-1] * kept_of[:, 1:]).mean(0)
    assert (both - 0.25).abs().max() < 0.01
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert not Dropout(1.0).train()(x).any()


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 32, 32), np.uint8), r"shape \(N, 28, 28\)"),
        (np.full((1, 28, 28), 2.0), r"in \[0, 1\]"),
        (np.full((1, 28, 28), np.nan), r"in \[0, 1\]"),
        (np.zeros((0, 28, 28), np.uint8), "no images"),
        (np.zeros((1, 28, 28), np.int64), "uint8 or float"),
    ],
)
def test_predict_validates_input(images, message):
    with pytest.raises(ValueError, match=message):
        to_tensor(images)


def test_uint8_and_float_inputs_agree():
    model = CourseCNN().eval()
    x, _ = make_digits(5)
    np.testing.assert_allclose(predict_proba(model, x), predict_proba(model, x / 255.0), atol=1e-6)
    assert predict_proba(model, x[0]).shape == (1, 10)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = CourseCNN().eval()
    save_model(model, tmp_path / "m", {"accuracy": 0.5})
    again = load_model(tmp_path / "m")
    x, _ = make_digits(20)
    np.testing.assert_array_equal(predict_proba(model, x), predict_proba(again, x))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["conv1"] == 32


@pytest.mark.parametrize(
    "bad",
    [
        {"kernel": 0},
        {"conv1": -3},
        {"kernel": "3"},
        {"dropout": 1.0},
        {"kernel": 13},
        {"image_size": 5},
        {"n_classes": True},
    ],
)
def test_config_refuses_sizes_no_network_can_have(bad):
    with pytest.raises(ConfigError):
        CNNConfig(**bad)


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="config.json is missing"):
        load_model(tmp_path)  # a folder, but not a saved model
    with pytest.raises(DataError, match="nonexist does not exist: give the folder of a saved"):
        load_model(tmp_path / "nonexist")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_model(tmp_path / "file")
    save_model(CourseCNN(CNNConfig(conv1=16)), tmp_path / "a")
    save_model(CourseCNN(), tmp_path / "b")
    # weights of a 16-filter network under a 32-filter config
    (tmp_path / "b" / "model.safetensors").write_bytes(
        (tmp_path / "a" / "model.safetensors").read_bytes()
    )
    with pytest.raises(DataError, match="does not match") as caught:
        load_model(tmp_path / "b")
    assert "size mismatch for conv1" in str(caught.value)  # what, not just "Error(s) in ..."
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "a" / "model.safetensors"))
    state["fc.weight"] = state["fc.weight"] * float("nan")  # a damaged file, loadable
    save_file(state, str(tmp_path / "b" / "model.safetensors"))
    save_model(CourseCNN(CNNConfig(conv1=16)), tmp_path / "b2")
    save_file(state, str(tmp_path / "b2" / "model.safetensors"))
    with pytest.raises(DataError, match="not finite numbers"):
        load_model(tmp_path / "b2")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable safetensors"):
        load_model(tmp_path / "b")
    (tmp_path / "a" / "config.json").write_text('{"conv1": 16, "colour": 3}')
    with pytest.raises(DataError, match="unknown keys"):
        load_model(tmp_path / "a")
    # values no network can be built from: one DataError, never a traceback from torch
    for bad in (
        '{"kernel": 0}',
        '{"conv1": -3}',
        '{"kernel": "3"}',
        '{"dropout": 2}',
        '{"kernel": 13}',
        '{"dropout": true}',
    ):
        (tmp_path / "a" / "config.json").write_text(bad)
        with pytest.raises(DataError, match="no course_cnn can be built from"):
            load_model(tmp_path / "a")
    # JSON that is no object, or not text at all: one DataError as well
    for bad, said in (("[1, 2]", "not an object"), (b"\xff\xfe\x00", "not valid JSON")):
        path = tmp_path / "a" / "config.json"
        path.write_bytes(bad) if isinstance(bad, bytes) else path.write_text(bad)
        with pytest.raises(DataError, match=said):
            load_model(tmp_path / "a")


@pytest.fixture(scope="module")
def small_data():
    return make_digits(600, seed=3)


def _cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "train_size": None, "threads": 1, **kw})


def test_training_learns_and_is_reproducible(small_data):
    x, y = small_data
    m1, h1, info = train_cnn(x, y, _cfg(), progress=False)
    m2, h2, _ = train_cnn(x, y, _cfg(), progress=False)
    assert h1.as_dict() == {**h2.as_dict(), "epoch_seconds": h1.epoch_seconds}
    assert h1.val_accuracy[-1] > 0.5 and len(h1.loss) == 2
    assert info["n_val"] == 60 and info["n_fit"] == 540
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_thread_count_is_timed_on_the_training_steps(small_data, monkeypatch):
    """threads=None: the first real steps are the trial (4 at all cores, 4 at one thread); the
    caller's thread count is back afterwards; asked-for threads are never timed."""
    import digitlab.train as train_module
    from digitlab import device

    used: list[int] = []

    def spying(fixed, dev):
        picker = device.step_threads(fixed, dev)
        record = picker.record

        def spy(n, seconds, rows=1):
            used.append(n)
            record(n, seconds, rows)

        picker.record = spy
        return picker

    monkeypatch.setattr(train_module, "step_threads", spying)
    x, y = small_data
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, _, info = train_cnn(x, y, _cfg(threads=None, batch_size=32, epochs=1), progress=False)
        assert used[:8] == [2] * 4 + [1] * 4 and len(used) == 17  # 540 images, batch 32
        assert set(used[8:]) == {info["threads"]} and info["threads"] in (1, 2)
        assert torch.get_num_threads() == 2
        used.clear()
        _, _, info = train_cnn(x, y, _cfg(threads=2, batch_size=32, epochs=1), progress=False)
        assert set(used) == {2} and info["threads"] == 2
    finally:
        torch.set_num_threads(before)


def test_train_size_takes_the_seeded_subset_the_tasks_layer_takes(small_data):
    """More images than train_size: the same seeded subset random_subset gives (it was
    silently ignored); fewer: all of them, as given."""
    from digitlab.data import random_subset

    x, y = small_data
    _, h, info = train_cnn(x, y, _cfg(train_size=300, epochs=1), progress=False)
    assert info["n_fit"] + info["n_val"] == 300
    xs, ys = random_subset(x, y, 300, 0)
    _, h_same, _ = train_cnn(xs, ys, _cfg(train_size=300, epochs=1), progress=False)
    assert h.loss == h_same.loss and h.val_accuracy == h_same.val_accuracy
    _, _, info = train_cnn(x, y, _cfg(train_size=5000, epochs=1), progress=False)
    assert info["n_fit"] + info["n_val"] == len(x)


def test_interrupted_run_resumes_to_the_same_weights(small_data, tmp_path):
    x, y = small_data
    full, h_full, _ = train_cnn(x, y, _cfg(epochs=3), progress=False)

    def stop_after_first(epoch, history):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_cnn(
            x, y, _cfg(epochs=3), checkpoint_dir=tmp_path, progress=False, on_epoch=stop_after_first
        )
    assert (tmp_path / CHECKPOINT).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    resumed, h, info = train_cnn(
        x, y, _cfg(epochs=3), checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert info["resumed_from_epoch"] == 1
    assert h.val_loss == h_full.val_loss
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_guards(small_data, tmp_path):
    x, y = small_data
    train_cnn(x, y, _cfg(epochs=1), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="already holds a training checkpoint"):
        train_cnn(x, y, _cfg(epochs=1), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="other settings .*lr"):
        train_cnn(
            x, y, _cfg(epochs=2, lr=0.01), checkpoint_dir=tmp_path, resume=True, progress=False
        )
    (tmp_path / CHECKPOINT).write_bytes(b"broken")
    with pytest.raises(DataError, match="not a readable digitlab checkpoint"):
        train_cnn(x, y, _cfg(epochs=2), checkpoint_dir=tmp_path, resume=True, progress=False)


@pytest.mark.parametrize(
    "cfg, message",
    [
        (TrainConfig(epochs=0), "epochs must be"),
        (TrainConfig(lr=-1.0), "lr must be"),
        (TrainConfig(val_fraction=1.5), "val_fraction must be in"),
        # not numbers: one ConfigError (a string once raised a TypeError)
        (TrainConfig(val_fraction="0.1"), "val_fraction must be in"),
        (TrainConfig(val_fraction=True), "val_fraction must be in"),
        (TrainConfig(val_fraction=float("nan")), "val_fraction must be in"),
        (TrainConfig(lr_schedule="step"), "lr_schedule must be one of constant, cosine"),
        (TrainConfig(threads=0), "threads must be"),
        (TrainConfig(device="tpu"), "unknown device"),
        (TrainConfig(ema=1.0), "ema must be in"),
        (TrainConfig(ema=0), "ema must be in"),
        # Checked against the subset trained on, before any epoch runs.
        (
            TrainConfig(train_size=5),
            "5 training images cannot be split for validation: each side needs at least one of "
            "each of the 10 classes, so at least 20 images; raise train_size",
        ),
        (TrainConfig(train_size=60001), "train_size must be in 1..60000"),
        (TrainConfig(seed=-1), "seed must be a whole number >= 0"),
        (TrainConfig(seed=2**64), "seed must be a whole number >= 0"),
        (TrainConfig(epochs=1.0), "epochs must be a whole number"),
    ],
)
def test_bad_train_config(cfg, message, small_data):
    """Refused by validate (the CLI's check) and by train_cnn itself (the library's)."""
    with pytest.raises(ConfigError, match=message):
        cfg.validate(60000)
    if cfg.train_size in (5, 60001):
        return  # about a subset of the 60,000: train_cnn takes train_size as "at most"
    x, y = small_data
    with pytest.raises(ConfigError, match=message):
        train_cnn(x, y, cfg, progress=False)


def test_a_batch_larger_than_the_data_is_one_partial_batch(small_data):
    """As in Keras: a batch larger than the (subset's) images trained on is one step an epoch
    (the default 128 on a 20-image subset was refused); larger than all the images given, a
    mistake, is refused. train_size "all" is the same as None."""
    x, y = small_data
    TrainConfig(batch_size=128, train_size=20, val_fraction=0.5).validate(60000)
    _, h, info = train_cnn(x, y, _cfg(batch_size=600, epochs=2, train_size="all"), progress=False)
    assert info["n_fit"] == 540 and len(h.loss) == 2
    _, _, info = train_cnn(x[:40], y[:40], _cfg(batch_size=128, val_fraction=0.5), progress=False)
    assert info["n_fit"] == 20  # the tasks layer hands over a subset: one partial batch
    with pytest.raises(ConfigError, match="at most the 600 training images"):
        TrainConfig(batch_size=601).validate(600)  # the faces' check, on all the data


def test_weight_average_follows_the_recurrence():
    """The average after each update equals the obvious loop over the same weights."""
    net = torch.nn.Linear(3, 2)
    averaged = WeightAverage(net, decay=0.9)
    rng = np.random.default_rng(0)
    expected = None
    for n in range(40):
        w = rng.normal(size=(2, 3))
        with torch.no_grad():
            net.weight.copy_(torch.from_numpy(w))
        averaged.update_parameters(net)
        if expected is None:
            expected = w.copy()
        else:
            d = min(0.9, (1 + n) / (10 + n))  # warm-up: early weights are forgotten fast
            expected = d * expected + (1 - d) * w
        np.testing.assert_allclose(
            averaged.module.weight.detach().numpy(), expected, rtol=1e-5, atol=1e-6
        )


def test_saved_weights_are_the_average_and_resume_keeps_it(small_data, tmp_path):
    """ema=None hands back the last step's weights; with averaging, the checkpoint holds both."""
    from safetensors.torch import load_file

    x, y = small_data
    plain, _, _ = train_cnn(x, y, _cfg(ema=None), checkpoint_dir=tmp_path / "p", progress=False)
    avg, h, info = train_cnn(x, y, _cfg(), checkpoint_dir=tmp_path / "a", progress=False)
    assert info["ema"] == 0.95
    raw = load_file(tmp_path / "a" / CHECKPOINT)
    assert not any(k.startswith("ema.") for k in load_file(tmp_path / "p" / CHECKPOINT))
    for name, p in plain.state_dict().items():
        # The same Adam steps either way: the raw weights match the run without averaging.
        assert torch.equal(raw[f"model.{name}"], p)
        assert torch.equal(raw[f"ema.module.{name}"], avg.state_dict()[name])
        assert not torch.equal(avg.state_dict()[name], p)
    # The validation figures are the averaged model's.
    from digitlab.data import stratified_split

    _, val = stratified_split(y, 0.1, 0)
    correct = int((predict_proba(avg, x[val]).argmax(1) == y[val]).sum())
    assert correct / len(val) == pytest.approx(h.val_accuracy[-1], abs=1e-12)


def test_checkpoint_from_before_averaging_asks_for_no_ema(small_data, tmp_path):
    from digitlab.checkpoint import load_state, save_state

    x, y = small_data
    train_cnn(x, y, _cfg(epochs=1, ema=None), checkpoint_dir=tmp_path, progress=False)
    meta = load_state(tmp_path / CHECKPOINT)
    meta.pop("_tensors"), meta.pop("param_groups")
    del meta["train_config"]["ema"]  # as written before the option existed
    model, opt = CourseCNN(), torch.optim.Adam(CourseCNN().parameters())
    save_state(tmp_path / CHECKPOINT, {"model": model}, {"optim": opt}, meta)
    with pytest.raises(ConfigError, match=r"other settings \(ema\)"):
        train_cnn(x, y, _cfg(epochs=2), checkpoint_dir=tmp_path, resume=True, progress=False)
    _, h, info = train_cnn(
        x, y, _cfg(epochs=2, ema=None), checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert info["resumed_from_epoch"] == 1 and len(h.loss) == 2


def test_augmented_training_runs(small_data):
    x, y = small_data
    _, h, _ = train_cnn(x, y, _cfg(epochs=1, augment=True), progress=False)
    assert 0 < h.loss[0] < 3


def test_cosine_schedule_resumes_on_the_same_curve(small_data, tmp_path):
    x, y = small_data
    cfg = _cfg(epochs=3, lr_schedule="cosine")
    full, _, _ = train_cnn(x, y, cfg, progress=False)
    constant, _, _ = train_cnn(x, y, _cfg(epochs=3), progress=False)
    pairs = zip(full.parameters(), constant.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)

    def stop_after_first(epoch, history):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_cnn(x, y, cfg, checkpoint_dir=tmp_path, progress=False, on_epoch=stop_after_first)
    resumed, _, _ = train_cnn(x, y, cfg, checkpoint_dir=tmp_path, resume=True, progress=False)
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    # More epochs would lay the curve out again over a run half decayed: refused (it once
    # jumped from ~0 back to half the rate and ended another model), while under the
    # constant rate more epochs continue the run exactly.
    with pytest.raises(CheckpointMismatch, match="epochs"):
        train_cnn(
            x,
            y,
            _cfg(epochs=4, lr_schedule="cosine"),
            checkpoint_dir=tmp_path,
            resume=True,
            progress=False,
        )
    train_cnn(x, y, _cfg(epochs=1), checkpoint_dir=tmp_path / "c", progress=False)
    more, _, _ = train_cnn(
        x, y, _cfg(epochs=3), checkpoint_dir=tmp_path / "c", resume=True, progress=False
    )
    for a, b in zip(constant.parameters(), more.parameters(), strict=True):
        assert torch.equal(a, b)


# ----- turning real pictures into MNIST-style images ------------------------------------------


def _as_photo(digit: np.ndarray, scale: int = 5, offset=(40, 70), canvas=(260, 220)) -> Image.Image:
    """A digit drawn big, off-centre, dark ink on light paper, in RGB."""
    big = np.asarray(Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.BILINEAR))
    page = np.zeros(canvas, np.uint8)
    page[offset[0] : offset[0] + big.shape[0], offset[1] : offset[1] + big.shape[1]] = big
    return Image.fromarray(255 - page).convert("RGB")


def _corr(a, b):
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


@pytest.mark.real_data
def test_to_mnist_recovers_real_digits(mnist, tmp_path):
    """Real test digits, redrawn big, off-centre, dark on light, come back as MNIST digits."""
    from digitlab.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(3).fit(mnist.x_train[:20000], mnist.y_train[:20000])
    got, corr = [], []
    for i in range(40):
        digit = mnist.x_test[i]
        path = tmp_path / f"{i}.png"
        _as_photo(digit, scale=3 + i % 5, offset=(3 * i % 90, 7 * i % 90), canvas=(300, 300)).save(
            path
        )
        image = to_mnist(path)
        assert image.dtype == np.uint8 and image.shape == (28, 28)
        got.append(image)
        corr.append(_corr(image, digit))
    assert np.mean(corr) > 0.75
    agree = np.mean(knn.predict(np.array(got)) == knn.predict(mnist.x_test[:40]))
    assert agree >= 0.9


def test_to_mnist_centres_by_mass_and_fits_20x20():
    x, _ = make_digits(3)
    got = to_mnist(np.asarray(_as_photo(x[0], scale=7, offset=(0, 0), canvas=(300, 400))))
    ys, xs = np.nonzero(got > 25)
    assert ys.max() - ys.min() <= 21 and xs.max() - xs.min() <= 21
    yy, xx = np.mgrid[:28, :28]
    assert abs((got * yy).sum() / got.sum() - 14) < 0.6
    assert abs((got * xx).sum() / got.sum() - 14) < 0.6
    # light ink on dark background is taken as it is
    np.testing.assert_array_equal(
        to_mnist(255 - np.asarray(_as_photo(x[0]).convert("L"))), to_mnist(_as_photo(x[0]))
    )


def test_to_mnist_bad_input(tmp_path):
    with pytest.raises(ValueError, match="blank"):
        to_mnist(np.full((50, 50), 255, np.uint8))
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    with pytest.raises(DataError, match="not an image"):
        to_mnist(bad)


# ----- CLI ------------------------------------------------------------------------------------


def test_cli_train_eval_predict(tmp_path, capsys):
    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=60)
    out = tmp_path / "cnn"
    argv = [
        "cnn",
        "train",
        "--epochs",
        "1",
        "--train-size",
        "300",
        "--threads",
        "1",
        "--data-dir",
        str(data),
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "f1_macro", "history"} <= set(metrics)
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "cnn_training_curves.png").is_file()
    assert main(argv) == 1  # the checkpoint is there: refuse to overwrite without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["cnn", "eval", str(out), "--data-dir", str(data)]) == 0
    assert "macro F1" in capsys.readouterr().out
    x, _ = make_digits(1)
    _as_photo(x[0]).save(tmp_path / "digit.png")
    assert (
        main(
            [
                "cnn",
                "predict",
                str(out),
                str(tmp_path / "digit.png"),
                "--out",
                str(tmp_path / "seen"),
            ]
        )
        == 0
    )
    line = capsys.readouterr().out
    assert "digit.png:" in line and line.count("%") == 3
    assert (tmp_path / "seen" / "digit_28x28.png").is_file()
    # Two pictures of one name (from two folders), and one already named like the second's
    # place: each keeps its own 28x28 (the second once overwrote the first).
    (tmp_path / "b").mkdir()
    _as_photo(x[0], offset=(10, 10)).save(tmp_path / "b" / "digit.png")
    _as_photo(x[0]).save(tmp_path / "b" / "digit-2.png")
    b = tmp_path / "b"
    pictures = [tmp_path / "digit.png", b / "digit.png", b / "digit-2.png"]
    seen = tmp_path / "seen2"
    assert main(["cnn", "predict", str(out), *map(str, pictures), "--out", str(seen)]) == 0
    assert sorted(p.name for p in seen.glob("*.png")) == [
        "digit-2-2_28x28.png",
        "digit-2_28x28.png",
        "digit_28x28.png",
    ]


def test_cli_train_refuses_a_subset_too_small_before_the_table(tmp_path, capsys):
    """One error line and no epoch table header: the settings are checked before training."""
    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=60)
    args = ["cnn", "train", "--data-dir", str(data), "--train-size", "5", "--out"]
    assert main([*args, str(tmp_path / "o")]) != 0
    captured = capsys.readouterr()
    assert "5 training images cannot be split" in captured.err and "val_loss" not in captured.out
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_cli_train_resume_messages(tmp_path, capsys):
    """--resume without a checkpoint says it starts anew; a refused --resume prints only its
    error (no epoch table header); an interrupted run's folder is not a model yet, and
    eval/predict say how to finish it; --ema none is the last weights, and --no-ema with
    --ema is refused as a contradiction."""
    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=60)
    out = tmp_path / "o"
    base = ["cnn", "train", "--data-dir", str(data), "--train-size", "300", "--threads", "1"]
    assert main([*base, "--epochs", "1", "--ema", "none", "--out", str(out), "--resume"]) == 0
    said = capsys.readouterr().out
    assert "no checkpoint in" in said and "starting a new run" in said
    assert main([*base, "--epochs", "2", "--ema", "0.9", "--out", str(out), "--resume"]) == 1
    captured = capsys.readouterr()
    assert "other settings (ema)" in captured.err and "val_loss" not in captured.out
    with pytest.raises(SystemExit):
        main([*base, "--no-ema", "--ema", "0.5", "--out", str(out)])
    assert "not allowed with argument" in capsys.readouterr().err
    (tmp_path / "cut").mkdir()
    (out / CHECKPOINT).replace(tmp_path / "cut" / CHECKPOINT)  # a run stopped before saving
    for argv in (["eval", str(tmp_path / "cut")], ["predict", str(tmp_path / "cut"), "x.png"]):
        assert main(["cnn", *argv]) == 1
        assert "unfinished training run" in capsys.readouterr().err


def test_cli_predict_errors(tmp_path, capsys):
    assert main(["cnn", "predict", str(tmp_path), str(tmp_path / "x.png")]) == 1
    assert "is missing" in capsys.readouterr().err


@pytest.mark.real_data
def test_shipped_cnn_loads_and_reads_mnist(mnist):
    from digitlab.shipped import CNN as SHIPPED_CNN

    model = load_model(SHIPPED_CNN)
    acc = np.mean(predict_proba(model, mnist.x_test).argmax(1) == mnist.y_test)
    recorded = json.loads((SHIPPED_CNN / "metadata.json").read_text())
    # The figure the README quotes is the one the shipped weights give (to a digit or two).
    assert acc >= 0.995 and abs(acc - recorded["accuracy"]) <= 2e-4


@pytest.mark.real_data
def test_centre_by_mass_moves_shifted_digits_back(mnist):
    from digitlab.preprocess import centre_by_mass

    x = mnist.x_test[:300]
    yy, xx = np.mgrid[:28, :28]
    w = x.astype(float)
    cy = (w * yy).sum((1, 2)) / w.sum((1, 2))
    cx = (w * xx).sum((1, 2)) / w.sum((1, 2))
    centred = (np.abs(cy - 14) < 0.5) & (np.abs(cx - 14) < 0.5)
    assert centred.mean() > 0.8  # MNIST's digits already sit there, to a whole pixel
    np.testing.assert_array_equal(centre_by_mass(x[centred]), x[centred])
    for dy, dx in ((3, 4), (-2, 3), (0, -4)):
        moved = np.zeros_like(x)
        src = x[:, max(0, -dy) : 28 - max(0, dy), max(0, -dx) : 28 - max(0, dx)]
        moved[:, max(0, dy) : max(0, dy) + src.shape[1], max(0, dx) : max(0, dx) + src.shape[2]] = (
            src
        )
        kept = centred & (moved.sum((1, 2)) == x.sum((1, 2)))  # no ink pushed out of the frame
        np.testing.assert_array_equal(centre_by_mass(moved[kept]), x[kept])
    blank = np.zeros((2, 28, 28), np.uint8)
    np.testing.assert_array_equal(centre_by_mass(blank), blank)


def test_a_tampered_checkpoint_is_one_data_error(small_data, tmp_path):
    """A checkpoint that is valid safetensors but does not fit (a tensor missing, no history,
    a word for the epoch, metadata of another shape, history lists of unequal length): resuming
    is one DataError saying to delete it (each once raised KeyError, ValueError, TypeError or
    RuntimeError, or crashed while plotting after training)."""
    import json as json_lib

    from safetensors import safe_open
    from safetensors.torch import save_file

    x, y = small_data
    train_cnn(x, y, _cfg(epochs=1), checkpoint_dir=tmp_path / "good", progress=False)
    good = tmp_path / "good" / CHECKPOINT
    with safe_open(str(good), framework="pt") as f:
        meta = json_lib.loads(f.metadata()["digitlab"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118

    def tampered(meta_value, drop=None):
        kept = {k: v for k, v in tensors.items() if k != drop}
        return {"meta": meta_value, "tensors": kept}

    history = meta["history"]
    cases = [
        tampered(meta, drop="model.conv1.bias"),
        tampered({k: v for k, v in meta.items() if k != "history"}),
        tampered({**meta, "epoch": "two"}),
        tampered([1, 2]),
        tampered({**meta, "history": {**history, "loss": history["loss"] * 2}}),
        tampered({**meta, "history": {**history, "colour": []}}),
    ]
    for i, case in enumerate(cases):
        folder = tmp_path / f"bad{i}"
        folder.mkdir()
        save_file(
            case["tensors"], str(folder / CHECKPOINT), {"digitlab": json_lib.dumps(case["meta"])}
        )
        with pytest.raises(DataError, match="delete it to start over"):
            train_cnn(x, y, _cfg(epochs=2), checkpoint_dir=folder, resume=True, progress=False)
