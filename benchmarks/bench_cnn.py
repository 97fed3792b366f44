"""The course CNN: seconds per epoch for each CPU setting, and the course run's accuracy.

    python benchmarks/bench_cnn.py [--data-dir DIR] [--epochs 10] [--bf16]

Every setting trains on the same 18,000 images (the seeded 20,000 subset less 10% validation),
batch 128, and validates on the other 2,000 after each epoch. Where TensorFlow is importable,
the course's Keras code (`fit(..., validation_split=0.1)`) runs on the same 20,000 images in
this process as the reference. Last line: one JSON object.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import cpu_line, emit, parser
from digitlab.cnn import predict_proba
from digitlab.data import load_dataset, random_subset
from digitlab.device import bf16_is_fast
from digitlab.train import TrainConfig, train_cnn


def keras_epoch_seconds(x, y, epochs: int = 4) -> list[float] | None:
    """The course's Keras code on the 20,000 images: 90% trained on, 10% validated per epoch.

    Ours also validates after every epoch, so both epochs do the same work. Returns every
    epoch's seconds (the first pays for tracing the graph), or None without Keras.
    """
    try:
        import keras
    except ImportError:
        return None
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    xs = (x / 255.0).astype("float32")[..., None]
    ys = keras.utils.to_categorical(y, 10)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(xs, ys, batch_size=128, epochs=1, verbose=0, validation_split=0.1)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=10, help="epochs of the accuracy run")
    p.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(cpu_line(), flush=True)
    ds = load_dataset("mnist", args.data_dir)
    x, y = random_subset(ds.x_train, ds.y_train, 20000, seed=0)
    # The reference first: our training loops leave glibc's malloc thresholds raised
    # (device.keep_freed_memory), which must not touch the reference's run.
    keras_times = keras_epoch_seconds(x, y)
    # Both sides: the median epoch after the first (which pays one-off set-up: graph tracing,
    # compiling). Until issue 18 the reference took its fastest epoch against our median.
    ref = float(np.median(keras_times[1:] or keras_times)) if keras_times else None
    cores = torch.get_num_threads()
    settings = []
    for n in sorted({1, cores}):
        for cl in (False, True):
            settings.append({"threads": n, "channels_last": cl})
    if args.bf16 and not bf16_is_fast():
        print("bf16: skipped (no AVX512-BF16/AMX here: bfloat16 would be emulated, and slow)")
    elif args.bf16:
        for n in sorted({1, cores}):
            settings.append({"threads": n, "channels_last": True, "bf16": True})
    rows = []
    for s in settings:
        # Two epochs; the second is the steady state (the first pays one-off set-up costs).
        _, h, _ = train_cnn(x, y, TrainConfig(epochs=2, **s), progress=False)
        rows.append({**s, "epoch_s": h.epoch_seconds[-1], "val_accuracy": h.val_accuracy[-1]})
        print(
            f"threads={s['threads']} channels_last={s['channels_last']} "
            f"bf16={s.get('bf16', False)}: {h.epoch_seconds[-1]:.2f} s/epoch "
            f"(val acc after 2 epochs {h.val_accuracy[-1]:.4f})",
            flush=True,
        )

    start = time.perf_counter()
    model, h, info = train_cnn(x, y, TrainConfig(epochs=args.epochs), progress=False)
    run_s = time.perf_counter() - start
    acc = float(np.mean(predict_proba(model, ds.x_test).argmax(1) == ds.y_test))
    ours = float(np.median(h.epoch_seconds[1:] or h.epoch_seconds))
    # The same run without the weight average: Keras' behaviour, and what averaging costs.
    last, h_last, _ = train_cnn(
        x, y, TrainConfig(epochs=args.epochs, threads=info["threads"], ema=None), progress=False
    )
    acc_last = float(np.mean(predict_proba(last, ds.x_test).argmax(1) == ds.y_test))
    ours_last = float(np.median(h_last.epoch_seconds[1:] or h_last.epoch_seconds))
    print(
        f"default settings (threads {info['threads']}, measured; channels_last): {ours:.2f} "
        f"s/epoch, {args.epochs} epochs in {run_s:.1f} s, test accuracy {acc:.4f} "
        f"(weight average); last weights, as Keras: {ours_last:.2f} s/epoch, {acc_last:.4f}"
    )
    if ref:
        theirs_min = min(keras_times[1:] or keras_times)
        ours_min = min(h.epoch_seconds[1:] or h.epoch_seconds)
        print(
            f"Keras reference: {ref:.2f} s/epoch (median of epochs 2-{len(keras_times)}; "
            f"fastest {theirs_min:.2f}; ours fastest {ours_min:.2f})"
        )
    else:
        print("Keras reference: not installed")
    emit(
        {
            "benchmark": "cnn",
            "ours_s": ours,
            "reference_s": ref,
            "reference_epochs_s": keras_times,
            "ours_epochs_s": h.epoch_seconds,
            "ratio": ref / ours if ref else None,
            "accuracy": acc,
            "accuracy_last_weights": acc_last,
            "epochs": args.epochs,
            "threads": info["threads"],
            "settings": rows,
        }
    )


if __name__ == "__main__":
    main()
