"""The conditional GAN: seconds per training step (batch 64) for each setting, and Keras'.

    python benchmarks/bench_gan.py [--data-dir DIR] [--steps 40] [--threads N] [--all]

Every setting trains from scratch on the same 70,000 digits: the time of a (10 + steps)-step
run less that of a 10-step run, per step. By default: the default settings, and bfloat16
autocast only where the CPU has AVX512-BF16 or AMX (elsewhere it is emulated and slow, so it is
skipped and the output says so). --all adds NCHW or channels-last x keras.io's step (a second
noise draw and generator pass for the generator update) or ours (one generated batch serves
both updates). About two minutes by default on a 2-core machine. Where TensorFlow is
importable, the course's Keras networks and train_step run on the same arrays in this process
as the reference.
Last line: one JSON object (`ours_s` = seconds per step with the default settings).
"""

from __future__ import annotations

import tempfile
import time
from contextlib import suppress

import numpy as np
import torch

from _common import cpu_line, emit, parser
from digitlab.data import load_dataset
from digitlab.device import bf16_is_fast, cpu_summary
from digitlab.gan_train import GANTrainConfig, train_gan


def ours_step_seconds(x, y, steps: int, **settings) -> float:
    """Seconds per step: (time for 10 + steps) - (time for 10), each run from scratch.

    The difference cancels the one-off costs (converting the images, the final checkpoint).
    """
    times = []
    for n in (10, 10 + steps):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = GANTrainConfig(epochs=1, max_steps=n, checkpoint_every=10**9, **settings)
            start = time.perf_counter()
            train_gan(x, y, cfg, tmp, progress=False)
            times.append(time.perf_counter() - start)
    return (times[1] - times[0]) / steps


def keras_step_seconds(x, y, steps: int, n_threads: int | None = None) -> float | None:
    try:
        import keras
        import tensorflow as tf
    except ImportError:
        return None
    if n_threads:
        with suppress(RuntimeError):  # only possible before TensorFlow's first op
            tf.config.threading.set_intra_op_parallelism_threads(n_threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
    from keras import layers

    latent, classes = 128, 10
    g_in, d_in = latent + classes, 1 + classes
    generator = keras.Sequential(
        [
            keras.Input((g_in,)),
            layers.Dense(7 * 7 * g_in),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Reshape((7, 7, g_in)),
            layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2D(1, (7, 7), padding="same", activation="sigmoid"),
        ]
    )
    discriminator = keras.Sequential(
        [
            keras.Input((28, 28, d_in)),
            layers.Conv2D(64, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2D(128, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.GlobalMaxPooling2D(),
            layers.Dense(1),
        ]
    )
    g_opt = keras.optimizers.Adam(3e-4)
    d_opt = keras.optimizers.Adam(3e-4)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function(jit_compile=True)  # XLA, as Keras' fit compiled keras.io's run
    def train_step(real, hot):
        n = tf.shape(real)[0]
        maps = tf.repeat(tf.repeat(hot[:, None, None, :], 28, axis=1), 28, axis=2)
        z = tf.random.normal((n, latent))
        fake = generator(tf.concat([z, hot], 1))
        both = tf.concat([tf.concat([fake, maps], -1), tf.concat([real, maps], -1)], 0)
        target = tf.concat([tf.ones((n, 1)), tf.zeros((n, 1))], 0)
        with tf.GradientTape() as tape:
            d_loss = bce(target, discriminator(both))
        grads = tape.gradient(d_loss, discriminator.trainable_weights)
        d_opt.apply_gradients(zip(grads, discriminator.trainable_weights, strict=True))
        z = tf.random.normal((n, latent))
        with tf.GradientTape() as tape:
            fake = generator(tf.concat([z, hot], 1))
            g_loss = bce(tf.zeros((n, 1)), discriminator(tf.concat([fake, maps], -1)))
        grads = tape.gradient(g_loss, generator.trainable_weights)
        g_opt.apply_gradients(zip(grads, generator.trainable_weights, strict=True))
        return d_loss, g_loss

    images = (x / 255.0).astype("float32")[..., None]
    hot = np.eye(classes, dtype="float32")[y]
    rng = np.random.default_rng(0)
    marks = []
    for block in range(1 + steps // 10):
        start = time.perf_counter()
        for _ in range(10):
            idx = rng.choice(len(images), 64, replace=False)
            out = train_step(tf.constant(images[idx]), tf.constant(hot[idx]))
        float(out[0])  # wait for the block to finish
        if block:  # the first block traces and compiles
            marks.append(time.perf_counter() - start)
    return float(np.median(marks)) / 10


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=40, help="timed steps per setting (default 40)")
    p.add_argument(
        "--all", action="store_true", help="every setting (NCHW/channels-last x one/two draws)"
    )
    p.add_argument("--no-reference", action="store_true", help="skip Keras even if installed")
    args = p.parse_args()
    print(cpu_line(), flush=True)
    ds = load_dataset("mnist", args.data_dir)
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    default = GANTrainConfig()
    base = {"channels_last": default.channels_last, "reuse_fakes": default.reuse_fakes}
    settings = [{**base, "bf16": False}]
    if args.all:
        settings += [
            {"channels_last": cl, "reuse_fakes": reuse, "bf16": False}
            for cl in (False, True)
            for reuse in (False, True)
            if {"channels_last": cl, "reuse_fakes": reuse} != base
        ]
    if bf16_is_fast():
        settings.append({**base, "bf16": True})
    else:
        print("bf16: skipped (no AVX512-BF16/AMX here: bfloat16 would be emulated, and slow)")
    rows = []
    for s in settings:
        sec = ours_step_seconds(x, y, args.steps, threads=args.threads, **s)
        rows.append({**s, "step_s": sec, "steps_per_s": 1 / sec})
        print(
            f"channels_last={s['channels_last']} one_generated_batch={s['reuse_fakes']} "
            f"bf16={s['bf16']}: {sec * 1000:.0f} ms/step ({1 / sec:.2f} steps/s)",
            flush=True,
        )
    ours = rows[0]["step_s"]  # the default settings
    fastest = min(rows, key=lambda r: r["step_s"])
    ref = None if args.no_reference else keras_step_seconds(x, y, args.steps, args.threads)
    if ref:
        print(f"Keras reference: {ref * 1000:.0f} ms/step ({1 / ref:.2f} steps/s)")
        print(f"ratio (Keras / ours, default settings): {ref / ours:.2f}x")
        print(f"ratio (Keras / ours, fastest setting): {ref / fastest['step_s']:.2f}x")
    else:
        print("Keras reference: TensorFlow not installed (or --no-reference)")
    emit(
        {
            "benchmark": "gan",
            "ours_s": ours,
            "reference_s": ref,
            "ratio": ref / ours if ref else None,
            "fastest_s": fastest["step_s"],
            "fastest_ratio": ref / fastest["step_s"] if ref else None,
            "threads": args.threads or torch.get_num_threads(),
            "cpu": cpu_summary(),
            "settings": rows,
        }
    )


if __name__ == "__main__":
    main()
