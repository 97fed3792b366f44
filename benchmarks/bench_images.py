"""Reading digits as people hand them over: the shipped CNN on re-rendered MNIST test digits.

Each kind of picture (see `digitlab.picture_kinds`: photos on grey paper, uneven light,
shadows, 16-bit scans, ink in the alpha channel, thin pens drawn as the digit's skeleton, fat
markers, specks, noise + JPEG, small off-centre digits, EXIF rotations, Pillow's other modes,
coloured ink close to the paper's brightness, lined and squared paper)
is made from seeded MNIST test digits on canvases of 200-1000 px and read back through
`preprocess.prepare` -> the shipped CNN. Beside it: the same CNN on the same digits as MNIST
gives them (the ceiling), and the naive reader this project had before issue 14 (the
reference: grey, invert by the border, one global threshold, crop, 20x20, centre by mass).

    python benchmarks/bench_images.py [--per-kind 40] [--seed 0 | --seed 0,1]

Last line: one JSON object (benchmark, ours_s = our preprocessing per image, reference_s = the
naive reader's, ratio, accuracy figures).
"""

from __future__ import annotations

import io
import platform
import subprocess
import time

import numpy as np
import torch

from _common import emit, parser
from digitlab.cnn import predict_proba
from digitlab.data import load_dataset
from digitlab.errors import DigitlabError
from digitlab.loaders import load_model
from digitlab.picture_kinds import KINDS, render
from digitlab.preprocess import prepare
from digitlab.shipped import CNN as SHIPPED_CNN


def naive_to_mnist(data: bytes) -> np.ndarray:
    """The reader digitlab had before issue 14, kept here as the reference."""
    from PIL import Image
    from scipy import ndimage

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        image = im.copy()
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    arr = np.asarray(image.convert("L"), dtype=np.float64)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    if np.median(border) > 127:
        arr = 255.0 - arr
    arr = np.clip(arr - np.median(border if np.median(border) <= 127 else 255.0 - border), 0, None)
    if arr.max() <= 0:
        raise ValueError("blank")
    arr = arr * (255.0 / arr.max())
    ink = arr > 0.1 * 255
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    crop = arr[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    s = 20.0 / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = Image.fromarray(crop.astype(np.float32), mode="F").resize(
        (nw, nh), Image.Resampling.LANCZOS
    )
    out = np.zeros((28, 28))
    top, left = (28 - nh) // 2, (28 - nw) // 2
    out[top : top + nh, left : left + nw] = np.clip(np.asarray(small), 0, 255)
    yy, xx = np.mgrid[:28, :28]
    cy, cx = (out * yy).sum() / out.sum(), (out * xx).sum() / out.sum()
    out = ndimage.shift(out, (14.0 - cy, 14.0 - cx), order=1, mode="constant")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def cpu_line() -> str:
    model = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return (
        f"CPU: {model}; torch capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads"
    )


def read_all(reader, files: list[bytes]) -> tuple[np.ndarray, np.ndarray, float]:
    """28x28s (zeros where the reader failed), which succeeded, and the seconds it took."""
    out, ok = np.zeros((len(files), 28, 28), np.uint8), np.zeros(len(files), bool)
    start = time.perf_counter()
    for i, data in enumerate(files):
        try:
            out[i] = reader(data)
            ok[i] = True
        except (DigitlabError, ValueError, OSError, IndexError, ZeroDivisionError):
            pass
    return out, ok, time.perf_counter() - start


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-kind", type=int, default=40, help="pictures per kind (default: 40)")
    p.add_argument(
        "--seed", default="0", help="seed, or seeds separated by commas, e.g. 0,1 (default: 0)"
    )
    p.add_argument("--no-reference", action="store_true", help="skip the naive reader")
    args = p.parse_args()
    try:
        seeds = [int(s) for s in str(args.seed).split(",")]
    except ValueError:
        p.error(f"--seed: expected whole numbers separated by commas, got {args.seed!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(cpu_line())
    ds = load_dataset("mnist", args.data_dir, quiet=True)
    model = load_model(SHIPPED_CNN)
    rows, totals = [], {"ours": 0, "naive": 0, "ceiling": 0, "n": 0, "ours_s": 0.0, "ref_s": 0.0}
    per_kind = {k: {"ours": 0, "naive": 0, "ceiling": 0, "n": 0} for k in KINDS}
    print(
        f"{'kind':18s} {'seed':>4s} {'n':>4s} {'ours':>7s} {'naive':>7s} {'ceiling':>8s} "
        f"{'ms/img':>7s}"
    )
    for seed in seeds:
        # One generator per seed, drawn kind after kind: new kinds go at the end of KINDS,
        # so the pictures of the earlier kinds stay the same for a seed.
        rng = np.random.default_rng(seed)
        for kind in KINDS:
            idx = rng.choice(len(ds.x_test), args.per_kind, replace=False)
            digits, labels = ds.x_test[idx], ds.y_test[idx]
            files = [render(d, kind, rng) for d in digits]
            ours, ok, ours_s = read_all(lambda b: prepare(b).image, files)
            right = (predict_proba(model, ours).argmax(1) == labels) & ok
            ceiling = predict_proba(model, digits).argmax(1) == labels
            naive_right, ref_s = np.zeros(len(files), bool), 0.0
            if not args.no_reference:
                naive, nok, ref_s = read_all(naive_to_mnist, files)
                naive_right = (predict_proba(model, naive).argmax(1) == labels) & nok
            n = len(files)
            rows.append(
                {
                    "kind": kind,
                    "seed": seed,
                    "n": n,
                    "accuracy": float(right.mean()),
                    "naive_accuracy": None if args.no_reference else float(naive_right.mean()),
                    "ceiling": float(ceiling.mean()),
                    "ms_per_image": 1000 * ours_s / n,
                }
            )
            print(
                f"{kind:18s} {seed:4d} {n:4d} {right.mean():7.1%} "
                f"{'-' if args.no_reference else f'{naive_right.mean():.1%}':>7s} "
                f"{ceiling.mean():8.1%} {1000 * ours_s / n:7.1f}",
                flush=True,
            )
            for part, count in (
                ("ours", right.sum()),
                ("naive", naive_right.sum()),
                ("ceiling", ceiling.sum()),
                ("n", n),
            ):
                per_kind[kind][part] += int(count)
                totals[part] += int(count)
            totals["ours_s"] += ours_s
            totals["ref_s"] += ref_s
    if len(seeds) > 1:
        print(f"per kind over seeds {','.join(map(str, seeds))}:")
        for kind, t in per_kind.items():
            naive = "-" if args.no_reference else f"{t['naive'] / t['n']:.1%}"
            print(
                f"{kind:18s} {'all':>4s} {t['n']:4d} {t['ours'] / t['n']:7.1%} {naive:>7s} "
                f"{t['ceiling'] / t['n']:8.1%}"
            )
    n = totals["n"]
    acc = totals["ours"] / n
    worst_kind = min(per_kind, key=lambda k: per_kind[k]["ours"] / per_kind[k]["n"])
    worst_acc = per_kind[worst_kind]["ours"] / per_kind[worst_kind]["n"]
    naive_text = "-" if args.no_reference else f"{totals['naive'] / n:.1%}"
    print(
        f"{'overall':18s} {'':4s} {n:4d} {acc:7.1%} {naive_text:>7s} "
        f"{totals['ceiling'] / n:8.1%} {1000 * totals['ours_s'] / n:7.1f}"
    )
    print(f"lowest kind: {worst_kind} {worst_acc:.1%} (targets: >= 97% overall, 93%)")
    ours_s = totals["ours_s"] / n
    ref_s = None if args.no_reference else totals["ref_s"] / n
    emit(
        {
            "benchmark": "images",
            "ours_s": ours_s,
            "reference_s": ref_s,
            "ratio": None if ref_s is None else ref_s / ours_s,
            "accuracy": acc,
            "naive_accuracy": None if args.no_reference else totals["naive"] / n,
            "ceiling_accuracy": totals["ceiling"] / n,
            "min_kind": worst_kind,
            "min_kind_accuracy": worst_acc,
            "n_images": n,
            "seeds": seeds,
            "per_kind": rows,
        }
    )


if __name__ == "__main__":
    main()
