"""The conditional GAN: seconds per training step (batch 64), ours against Keras', interleaved.

    python benchmarks/bench_gan.py [--data-dir DIR] [--blocks 8] [--threads N] [--all]
                                   [--compile] [--no-reference]

Ours runs with the default settings (GANTrainConfig(): channels-last, one generated batch per
step, float32, the thread count timed on the steps themselves), through the library's own step
(`run_step`), on the same 70,000 digits as the course's Keras networks and train_step (XLA),
in this process. Blocks of 10 steps alternate, ours then Keras', so both see the same load;
after one warm-up block each (Keras traces and compiles there; ours times its thread choice),
the per-step time is the median block, and each pair of blocks gives a ratio (printed as a
range). --all adds the other settings (NCHW, keras.io's second generator pass, bfloat16
where the CPU has instructions for it; elsewhere skipped, and said so). --compile adds
torch.compile (inductor) of both networks: its compile seconds and steady step time, in a
child process (inductor's generated code crashed the process with a segfault under the AVX2
emulation here; a crash is then reported as one line).
About two minutes by default on a 2-core machine.
Last line: one JSON object (`ours_s` = seconds per step with the default settings).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import suppress

import numpy as np
import torch

from _common import cpu_line, emit, parser
from digitlab.data import load_dataset
from digitlab.device import bf16_is_fast, cpu_summary, keep_freed_memory
from digitlab.gan import GANConfig
from digitlab.gan_train import GANTrainConfig, build_nets, device_data, run_step

BLOCK = 10  # steps per timed block


class Ours:
    """The library's training step with `settings` (GANTrainConfig fields), block by block."""

    def __init__(self, x, y, threads=None, compile_mode=None, **settings):
        cfg = GANTrainConfig(threads=threads, **settings)
        self.nets = build_nets(cfg, GANConfig(), torch.device("cpu"))
        self.x, self.hot = device_data(x, y, self.nets)
        self.rng = np.random.default_rng(0)
        self.step = 0
        self.compile_s = None
        if compile_mode is not None:
            kw = {} if compile_mode == "default" else {"mode": compile_mode}
            self.nets.g, self.nets.d = (
                torch.compile(self.nets.g, **kw),
                torch.compile(self.nets.d, **kw),
            )
            start = time.perf_counter()
            self.block(3)  # both networks compile (the discriminator twice: frozen or not)
            self.compile_s = time.perf_counter() - start

    def block(self, n: int = BLOCK) -> float:
        start = time.perf_counter()
        for _ in range(n):
            idx = torch.from_numpy(self.rng.choice(len(self.x), 64, replace=False))
            d_loss, _ = run_step(self.nets, self.x[idx], self.hot[idx], self.step)
            self.step += 1
        float(d_loss)
        return (time.perf_counter() - start) / n


def keras_block(x, y, n_threads: int | None = None):
    """A function running (and timing) blocks of keras.io's train_step; None without Keras."""
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

    def block(n: int = BLOCK) -> float:
        start = time.perf_counter()
        for _ in range(n):
            idx = rng.choice(len(images), 64, replace=False)
            out = train_step(tf.constant(images[idx]), tf.constant(hot[idx]))
        float(out[0])  # wait for the block to finish
        return (time.perf_counter() - start) / n

    return block


def interleaved(ours: Ours, keras, blocks: int) -> tuple[list[float], list[float]]:
    """Per-step seconds of `blocks` timed block pairs, after one warm-up block each."""
    ours.block()
    if keras:
        keras()
    mine, theirs = [], []
    for _ in range(blocks):
        mine.append(ours.block())
        if keras:
            theirs.append(keras())
    return mine, theirs


def ms(values: list[float]) -> str:
    lo, hi = min(values) * 1000, max(values) * 1000
    return f"{statistics.median(values) * 1000:.0f} ms (range {lo:.0f}-{hi:.0f})"


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def compile_in_child(args) -> dict | None:
    """Run the torch.compile row in a child process: a crash there is a result, not ours."""
    cmd = [sys.executable, __file__, "--compile-child", "--no-reference"]
    cmd += ["--blocks", str(args.blocks)] + (
        ["--threads", str(args.threads)] if args.threads else []
    )
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        print(f"torch.compile: the child process failed ({why}); eager is the default")
        return {"setting": "torch.compile", "failed": why}
    print(lines[-2] if len(lines) > 1 else "", flush=True)
    return json.loads(lines[-1])


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--blocks", type=int, default=8, help=f"timed blocks of {BLOCK} steps (8)")
    p.add_argument("--all", action="store_true", help="also NCHW, keras.io's step, bfloat16")
    p.add_argument("--compile", action="store_true", help="also torch.compile (inductor)")
    p.add_argument("--compile-child", action="store_true", help=argparse_hidden())
    p.add_argument("--no-reference", action="store_true", help="skip Keras even if installed")
    args = p.parse_args()
    print(cpu_line(), flush=True)
    with suppress(OSError), open("/proc/loadavg") as f:
        print(f"# load average at start: {' '.join(f.read().split()[:3])}")
    ds = load_dataset("mnist", args.data_dir)
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    # Ours runs as `train_gan` runs it: with glibc keeping freed memory for the next step
    # (device.keep_freed_memory; without it each step's 25 MB buffers fault in afresh: 298
    # against 245-277 ms a step, AVX2 kind). The setting is process-wide, so Keras' blocks
    # run under it too; alone, Keras measured the same with and without it (medians 552 and
    # 588 ms without, 559 and 587 with; one process each, AVX2 kind).
    with keep_freed_memory("cpu"):
        measure(args, x, y)


def measure(args, x: np.ndarray, y: np.ndarray) -> None:
    """Ours against Keras (and --all's settings, --compile's child) on the images x (N, 28,
    28) uint8 and labels y (N,); prints the results and the JSON line."""
    keras = None if args.no_reference else keras_block(x, y, args.threads)
    if keras is None:
        print("Keras reference: TensorFlow not installed (or --no-reference)")
    ours = Ours(x, y, threads=args.threads)
    mine, theirs = interleaved(ours, keras, 1 if args.compile_child else args.blocks)
    our_s = statistics.median(mine)
    ref = statistics.median(theirs) if theirs else None
    chosen = ours.nets.threads.current
    print(f"ours, default settings ({chosen} threads chosen): {ms(mine)} per step", flush=True)
    pair_ratios = [t / m for m, t in zip(mine, theirs, strict=True)] if theirs else []
    if ref:
        print(f"Keras (XLA): {ms(theirs)} per step")
        print(
            f"ratio Keras / ours: {ref / our_s:.2f}x (block pairs: "
            f"{min(pair_ratios):.2f}-{max(pair_ratios):.2f}x)"
        )
    rows = [{"setting": "default", "step_s": our_s, "threads": chosen}]
    extra = []
    if args.all:
        extra += [
            ("NCHW", {"channels_last": False}),
            ("keras.io's second generator pass", {"reuse_fakes": False}),
        ]
        if bf16_is_fast():
            extra.append(("bf16 autocast", {"bf16": True}))
        else:
            print("bf16: skipped (no AVX512-BF16/AMX here: bfloat16 would be emulated, and slow)")
    if args.compile_child:
        extra = [("torch.compile", {"compile_mode": "default"})]
    elif args.compile:
        compile_row = compile_in_child(args)
        if compile_row:
            rows.append(compile_row)
    for name, settings in extra:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                other = Ours(x, y, threads=args.threads, **settings)
        except Exception as exc:  # a missing compiler is a result to report, not a crash
            print(f"{name}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
            rows.append({"setting": name, "failed": type(exc).__name__})
            continue
        # Interleave with ours again, so that the ratio between the two is from the same load.
        again, times = interleaved(ours, other.block, max(args.blocks // 2, 2))
        note = f", compile {other.compile_s:.1f} s (first 3 steps)" if other.compile_s else ""
        speed = statistics.median(again) / statistics.median(times)
        print(
            f"{name}: {ms(times)} per step against the default's {ms(again)} "
            f"(its speed against the default: {speed:.2f}x){note}",
            flush=True,
        )
        rows.append(
            {
                "setting": name,
                "step_s": statistics.median(times),
                "default_step_s_same_time": statistics.median(again),
                "compile_s": other.compile_s,
            }
        )
    if args.compile_child:
        print(json.dumps(rows[-1]))
        return
    emit(
        {
            "benchmark": "gan",
            "ours_s": our_s,
            "reference_s": ref,
            "ratio": ref / our_s if ref else None,
            "ratio_range": [min(pair_ratios), max(pair_ratios)] if ref else None,
            "threads": chosen,
            "cpu": cpu_summary(),
            "settings": rows,
        }
    )


if __name__ == "__main__":
    main()
