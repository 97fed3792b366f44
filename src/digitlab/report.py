"""The self-contained HTML report of a run folder: every image embedded, no external URL.

Presentation only: it reads `config.json`, `metrics.json` and `figures/` and writes
`report.html`. `digitlab report RUN_DIR` rebuilds it.
"""

from __future__ import annotations

import base64
import contextvars
import html
from collections.abc import Mapping
from pathlib import Path

from digitlab import figures
from digitlab.errors import DataError
from digitlab.files import atomic_write_text, read_json_object, shown_name
from digitlab.folders import owner
from digitlab.settings import source_words

CSS = """
:root { --ink:#1d2433; --muted:#5b6478; --line:#e3e6ee; --accent:#2f6fdf; --bg:#fbfcfe; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.55 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:linear-gradient(135deg,#1d2b53,#2f6fdf); color:#fff; padding:2.2rem 1.2rem; }
header h1 { margin:0 0 .3rem; font-size:2rem; }
header p { margin:.2rem 0; opacity:.9; }
main { max-width:1040px; margin:0 auto; padding:1rem 1.2rem 4rem; }
nav { display:flex; flex-wrap:wrap; gap:.5rem; margin:1rem 0 1.5rem; }
nav a { text-decoration:none; color:var(--accent); border:1px solid var(--line); background:#fff;
        padding:.25rem .7rem; border-radius:999px; font-size:.9rem; }
section { background:#fff; border:1px solid var(--line); border-radius:12px; padding:1.2rem 1.4rem;
          margin:1.2rem 0; box-shadow:0 1px 2px rgba(0,0,0,.03); }
h2 { margin-top:0; font-size:1.45rem; }
h3 { font-size:1.05rem; margin:1.2rem 0 .4rem; }
.lead { color:var(--muted); }
.note { color:var(--muted); font-size:.9em; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:.7rem;
         margin:1rem 0; }
.card { border:1px solid var(--line); border-radius:10px; padding:.7rem .9rem;
        background:#f7f9fd; }
.card b { display:block; font-size:1.45rem; }
.card span { color:var(--muted); font-size:.85rem; }
figure { margin:1rem 0; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; border-radius:6px;
             cursor:zoom-in; }
figcaption { color:var(--muted); font-size:.9rem; text-align:center; margin-top:.3rem; }
/* Tap a figure: it opens at full size over the page, scrollable both ways; tap to close. */
#zoom { position:fixed; inset:0; z-index:10; background:rgba(20,24,36,.92); overflow:auto;
        display:none; cursor:zoom-out; }
#zoom.open { display:block; }
#zoom img { display:block; margin:2.5rem auto 1rem; max-width:none; background:#fff; }
#zoom p { position:fixed; top:0; left:0; right:0; margin:0; padding:.5rem; color:#fff;
          text-align:center; font-size:.85rem; background:rgba(20,24,36,.8); }
/* Tables that are wider than the screen: soft shadows at the hidden edge (pure CSS), and a
   visible "scroll" cue above them (added by the script when a table really overflows). */
.scroll { overflow-x:auto; position:relative;
  background: linear-gradient(90deg,#fff 30%,rgba(255,255,255,0)) left/2rem 100% no-repeat local,
              linear-gradient(270deg,#fff 30%,rgba(255,255,255,0)) right/2rem 100% no-repeat local,
              radial-gradient(farthest-side at 0 50%,rgba(0,0,0,.18),transparent)
                left/.8rem 100% no-repeat scroll,
              radial-gradient(farthest-side at 100% 50%,rgba(0,0,0,.18),transparent)
                right/.8rem 100% no-repeat scroll; }
.cue { display:none; color:var(--accent); font-size:.85rem; text-align:right; margin:.4rem 0 0; }
.cue.on { display:block; }
table { border-collapse:collapse; width:100%; font-size:.92rem; margin:.6rem 0; }
th, td { border-bottom:1px solid var(--line); padding:.35rem .55rem; text-align:right;
         white-space:nowrap; }
th:first-child, td:first-child { text-align:left; }
th { background:#f3f5fa; }
tr.chosen td { background:#eef5ff; font-weight:600; }
/* Key/value tables (the environment): values wrap instead of running off screen. */
table.kv td { white-space:normal; overflow-wrap:anywhere; text-align:left; }
table.kv td:first-child { white-space:nowrap; color:var(--muted); width:1%; }
pre { font-size:.85rem; margin:.6rem 0; }
footer { color:var(--muted); font-size:.85rem; text-align:center; }
@media (max-width:600px) {
  header { padding:1.4rem 1rem; } header h1 { font-size:1.5rem; }
  main { padding:.5rem .6rem 3rem; } section { padding:.9rem .8rem; }
  .card b { font-size:1.2rem; } .cards { grid-template-columns:repeat(2,1fr); }
  table { font-size:.82rem; } th, td { padding:.3rem .35rem; }
  /* Headers may wrap onto two lines so most tables fit 390 px without scrolling. */
  th { white-space:normal; }
  /* The CNN summary: small enough that its shapes and parameter counts fit a phone. */
  pre.summary { font-size:.56rem; }
}
"""

TITLES = {
    "data": "1. The data",
    "knn": "2. k-nearest neighbours",
    "sweep": "3. Tuning k",
    "cnn": "4. A convolutional network",
    "cluster": "5. Clustering without labels",
    "gan": "6. Generating digits",
}


SCRIPT = """
(function () {
  // Tap a figure to see it at full size; tap again (or press Escape) to close.
  var zoom = document.getElementById('zoom'), big = zoom.querySelector('img');
  document.querySelectorAll('figure img').forEach(function (img) {
    img.addEventListener('click', function () {
      big.src = img.src; big.alt = img.alt; zoom.classList.add('open');
    });
  });
  function close() { zoom.classList.remove('open'); big.removeAttribute('src'); }
  zoom.addEventListener('click', close);
  document.addEventListener('keydown', function (e) { if (e.key === 'Escape') close(); });
  // A visible cue above every table that is wider than its box.
  function cues() {
    document.querySelectorAll('.scroll').forEach(function (box) {
      var cue = box.previousElementSibling;
      if (cue && cue.classList.contains('cue'))
        cue.classList.toggle('on', box.scrollWidth > box.clientWidth + 1);
    });
  }
  cues(); window.addEventListener('resize', cues);
})();
"""

METHODS = {"kmeans": "k-means", "gmm": "a Gaussian mixture"}
EMBEDDINGS = {"raw": "raw-pixel", "pca": "PCA", "umap": "UMAP"}


# The figures the stage being drawn says it wrote (its record's "figures"): one of them
# missing or damaged is said on the page; another figure absent is one the stage left out.
_expected: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "digitlab_report_expected", default=frozenset()
)
_SIGNATURES = {".png": b"\x89PNG\r\n\x1a\n", ".gif": b"GIF8"}


def _img(figures_dir: Path, name: str, caption: str) -> str:
    path = figures_dir / name
    # A link could point anywhere (it once embedded /etc/passwd): only the run's own files.
    if not path.is_file() or path.is_symlink():
        return _lost(name, caption, "missing") if name in _expected.get() else ""
    raw = path.read_bytes()
    # A file that is not the picture its name says was embedded as a broken image.
    if not _is_picture(raw, path.suffix):
        return _lost(name, caption, "damaged")
    data = base64.b64encode(raw).decode("ascii")
    kind = "gif" if path.suffix == ".gif" else "png"
    return (
        f'<figure><img alt="{html.escape(caption)}" title="Tap to open full size" '
        f'src="data:image/{kind};base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _is_picture(head: bytes, suffix: str) -> bool:
    """Whether a figure file's first bytes are those of the format its suffix names."""
    return head.startswith(_SIGNATURES.get(suffix, b""))


def _lost(name: str, caption: str, why: str) -> str:
    return (
        f"<p class='lead'><b>Figure {why}:</b> {html.escape(caption)} ({html.escape(name)}); "
        "rerunning the run with its settings draws it again.</p>"
    )


def stage_figures(m: dict) -> frozenset[str]:
    """The file names a stage's record says its figures were written to."""
    listed = m.get("figures") if isinstance(m, dict) else None
    names = (
        listed.values() if isinstance(listed, dict) else listed if isinstance(listed, list) else ()
    )
    return frozenset(n for n in names if isinstance(n, str))


def lost_figures(folder: str | Path, metrics: dict) -> list[str]:
    """The figures a run folder's stages wrote that are now missing or damaged in figures/
    (names, sorted): `digitlab report` says them; the page shows each as lost."""
    figures_dir = Path(folder) / "figures"
    lost = []
    stages = metrics.get("stages") if isinstance(metrics.get("stages"), dict) else {}
    for m in stages.values():
        for name in stage_figures(m):
            path = figures_dir / name
            if path.is_symlink() or not path.is_file():
                lost.append(name)
                continue
            with open(path, "rb") as handle:
                head = handle.read(8)
            if not _is_picture(head, path.suffix):
                lost.append(name)
    return sorted(lost)


def _cards(items: list[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f"<div class='card'><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>"
            for k, v in items
        )
        + "</div>"
    )


def _table(
    head: list[str] | None, rows: list[list[str]], chosen: int | None = None, kind: str = ""
) -> str:
    """A table in a sideways-scrolling box, with a cue that shows when it overflows.

    `head` None: no header row. `kind` "kv": a key/value table whose values wrap.
    """
    cls = f" class='{kind}'" if kind else ""
    out = [
        "<p class='cue' aria-hidden='true'>scroll sideways for more →</p>",
        f"<div class='scroll'><table{cls}>",
    ]
    if head:
        out += ["<tr>", *(f"<th>{html.escape(h)}</th>" for h in head), "</tr>"]
    for i, row in enumerate(rows):
        cls = " class='chosen'" if chosen is not None and i == chosen else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    out.append("</table></div>")
    return "".join(out)


def _honest(x: float, decimals: int, extremes: tuple[float, ...] = (0.0,)) -> str:
    """`x` with `decimals` decimals, or with as many more as it takes not to read as one of
    `extremes` that it is not: a GAN trained for 40 steps was headlined "0.0 training
    epochs", and 0.04 s of fitting "0.0 s"."""
    for d in range(decimals, decimals + 12):
        text = f"{x:.{d}f}"
        if not any(float(text) == e != x for e in extremes):
            return text
    return f"{x:.2g}"  # smaller than any decimals we would show: say it in powers of ten


def _pct(x: float) -> str:
    """A share 0..1 as a percentage with 2 decimals, more where a share that is not 0 or 1
    would read as 0.00% or 100.00%."""
    return _honest(100 * x, 2, (0.0, 100.0)) + "%"


def _seconds(x: float) -> str:
    return _honest(x, 1) + " s"


def _per_class_table(m: dict) -> str:
    rows = [
        [
            r["class"],
            f"{r['precision']:.4f}",
            f"{r['recall']:.4f}",
            f"{r['f1']:.4f}",
            r["support"],
            r["tp"],
            r["fp"],
            r["fn"],
            r["tn"],
        ]
        for r in m["per_class"]
    ]
    return _table(["class", "precision", "recall", "F1", "support", "TP", "FP", "FN", "TN"], rows)


def _size(n) -> str:
    return "all 60,000" if n is None else f"{n:,d}"


def section_data(figures_dir: Path, m: dict) -> str:
    """The HTML of the dataset's section, from its metrics and figures."""
    s = m["summary"]
    rows = [
        [
            split,
            str(tuple(s[split]["images_shape"])),
            s[split]["images_dtype"],
            f"{s[split]['pixel_min']}..{s[split]['pixel_max']}",
            s[split]["pixel_mean"],
        ]
        for split in ("train", "test")
    ]
    counts = [[split, *s[split]["class_counts"]] for split in ("train", "test")]
    title, description = _dataset_words(m.get("_dataset", {}), s.get("dataset"))
    n_train, n_test = s["train"]["images_shape"][0], s["test"]["images_shape"][0]
    what = description or (
        f"{n_train + n_test:,d} images, 28×28 gray pixels, split into {n_train:,d} training "
        f"and {n_test:,d} test images"
    )
    return (
        f"<p class='lead'>{html.escape(title)}: {html.escape(what)}. Every model below "
        "learns from training images only and is judged on the test images.</p>"
        + _table(["split", "images", "dtype", "pixels", "mean"], rows)
        + "<h3>Images per class</h3>"
        + _table(["split", *s["classes"]], counts)
        + _img(figures_dir, figures.DATA["digit"], "One training image and its label")
        + _img(figures_dir, figures.DATA["three"], "Three examples of one digit")
        + _img(figures_dir, figures.DATA["gallery"], "Ten random training images of every class")
    )


def section_knn(figures_dir: Path, m: dict) -> str:
    """The HTML of kNN's section, from its metrics and figures."""
    c = m["config"]
    extras = [
        x
        for x, on in (
            ("deskewed", c["deskew"]),
            (f"PCA-{c['pca']}", c["pca"]),
            ("distance-weighted", c["weights"] == "distance"),
        )
        if on
    ]
    how = "".join(f", {x}" for x in extras)
    return (
        f"<p class='lead'>Each test digit gets the majority label of its k = {c['k']} nearest "
        f"training images (euclidean distance on the 784 pixels{how}), "
        f"fitted on a seeded random subset of {_size(c['train_size'])} training images. Our "
        "search is exact: it returns the same neighbours and predictions as scikit-learn's "
        "brute-force kNN, ties included.</p>"
        + _cards(
            [
                ("test accuracy", _pct(m["accuracy"])),
                ("macro F1", _honest(m["f1_macro"], 4, (0.0, 1.0))),
                ("errors", f"{m['n_errors']:,d} / {m['n_samples']:,d}"),
                ("fit + predict", _seconds(m["timing"]["fit_predict_s"])),
            ]
        )
        + _reference(m)
        + _img(
            figures_dir,
            figures.KNN["confusion_matrix"],
            "Confusion matrix: rows are true digits, columns predictions; errors in red",
        )
        + _img(figures_dir, figures.KNN["per_class"], "Precision, recall and F1 per digit")
        + "<h3>Per-class figures</h3>"
        + _per_class_table(m)
        + _img(figures_dir, figures.KNN["misclassified"], "The first misclassified test digits")
        + _img(
            figures_dir,
            figures.KNN["misclassified_confident"],
            (
                "The most confidently wrong: ranked by how much farther the nearest training "
                "image of the true digit was than the nearest one of the winning digit "
                "(+40%: 40% farther)"
                if "misclassified_confident_margin" in m
                else "The most confidently wrong (share of neighbour votes for the wrong digit)"
            ),
        )
    )


def _dataset_words(dataset: dict, name: str | None = None) -> tuple[str, str]:
    """The dataset's title and one-sentence description, from metrics.json's "dataset"."""
    name = dataset.get("name") or name or "mnist"
    title = dataset.get("title") or _TITLES.get(name, name)
    return str(title), str(dataset.get("description") or "")


# Titles for run folders written before metrics.json named its dataset.
_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "kmnist": "Kuzushiji-MNIST"}


def speed_words(ours_s: float, theirs_s: float) -> str:
    """How the reference compares with us, in its own row: "3.2x slower" when it took longer,
    "10.0x faster" when it took less time, "as fast" within 5%."""
    if ours_s <= 0 or theirs_s <= 0:
        return "n/a"
    ratio = theirs_s / ours_s
    if 1 / 1.05 <= ratio <= 1.05:
        return "as fast"
    return f"{ratio:.1f}x slower" if ratio > 1 else f"{1 / ratio:.1f}x faster"


def _reference(m: dict) -> str:
    ref = m.get("reference")
    if not ref:
        return ""
    ours = m["timing"]["fit_predict_s"]
    same = "identical" if ref["identical_predictions"] else "NOT identical"
    return (
        _table(
            ["same fit + predict", "seconds", "vs ours"],
            [
                ["digitlab (this run)", f"{ours:.2f}", "1.0x"],
                [
                    f"{ref['library']} brute force",
                    f"{ref['fit_predict_s']:.2f}",
                    speed_words(ours, ref["fit_predict_s"]),
                ],
            ],
        )
        + f"<p class='lead'>Predictions of the two: {same}.</p>"
    )


def section_sweep(figures_dir: Path, m: dict) -> str:
    """The HTML of the k sweep's section, from its metrics and figures."""
    ks = m["ks"]
    rows = [
        [k, f"{m['val_accuracy'][str(k)]:.4f}", f"{m['test_accuracy'][str(k)]:.4f}"] for k in ks
    ]
    return (
        f"<p class='lead'>Which k is best? The course tried k = 1..7 and picked the best on the "
        f"<em>test</em> set, which makes the test score an optimistic guess. Here k is chosen on "
        f"a stratified validation split ({m['n_val']:,d} of the training images, never used to "
        f"fit); the test accuracy of every k is shown only for reference. Neighbours are "
        f"searched once at the largest k and every k is scored from that one search.</p>"
        + _cards(
            [
                ("chosen k", str(m["chosen_k"])),
                ("its test accuracy", _pct(m["test_accuracy_at_chosen_k"])),
                (
                    "search time",
                    _seconds(m["timing"]["validation_search_s"] + m["timing"]["test_search_s"]),
                ),
            ]
        )
        + _table(
            ["k", "validation accuracy (chooses)", "test accuracy (reported)"],
            rows,
            chosen=ks.index(m["chosen_k"]),
        )
        + _img(
            figures_dir,
            figures.SWEEP["sweep"],
            "Accuracy vs k on the validation split and the test set",
        )
    )


def _number(x: float | None, spec: str = ".4f") -> str:
    """A figure from metrics.json; None is a NaN or infinity the JSON could not hold (a
    diverged training's loss): shown as "not a number", not a crash of the whole report."""
    return "not a number" if x is None else format(x, spec)


def _resumed(start: int | None, epochs: int) -> str:
    """The sentence saying training resumed from a checkpoint ('' when it did not): a run that
    finished training stopped at epoch 36 read as 60 epochs in its 31 s stage time."""
    if not start:
        return ""
    return (
        f" <b>Resumed at epoch {start + 1} of {epochs}</b>: epochs 1–{start} were trained "
        "by an earlier, interrupted run into this folder (their seconds are in the table); the "
        "stage time counts this run's part only."
    )


def section_cnn(figures_dir: Path, m: dict) -> str:
    """The HTML of the CNN's section, from its metrics and figures."""
    cfg = m["train_config"]
    h = m["history"]
    rows = [
        [
            i + 1,
            _number(h["loss"][i]),
            _number(h["accuracy"][i]),
            _number(h["val_loss"][i]),
            _number(h["val_accuracy"][i]),
            _number(h["epoch_seconds"][i], ".1f"),
        ]
        for i in range(len(h["loss"]))
    ]
    return (
        "<p class='lead'>The course's network: two 3×3 convolutions (32 and 64 filters) with "
        "ReLU and 2×2 max pooling, dropout 0.5 and a 10-way dense layer (34,826 parameters), "
        f"trained with Adam (learning rate {cfg['lr']}), batch {cfg['batch_size']}, "
        f"{cfg['epochs']} epochs on {_size(cfg['train_size'])} training images with 10% held out "
        "for validation. "
        + (
            f"The weights it keeps are a moving average over the training steps (decay "
            f"{cfg['ema']}; the validation figures are theirs), not the last step's. "
            if cfg.get("ema")
            else ""
        )
        + "It is scored with its own predictions on the test set."
        + _resumed(m.get("training", {}).get("resumed_from_epoch"), cfg["epochs"])
        + "</p>"
        + _cards(
            [
                ("test accuracy", _pct(m["accuracy"])),
                ("macro F1", _honest(m["f1_macro"], 4, (0.0, 1.0))),
                ("errors", f"{m['n_errors']:,d} / {m['n_samples']:,d}"),
                (
                    "seconds per epoch",
                    _honest(sum(h["epoch_seconds"]) / len(h["epoch_seconds"]), 1),
                ),
                ("CPU threads", str(m["training"]["threads"])),
            ]
        )
        + "<p class='cue' aria-hidden='true'>scroll sideways for more →</p>"
        + f"<div class='scroll'><pre class='summary'>{html.escape(m['summary'])}</pre></div>"
        + _img(figures_dir, figures.CNN["curves"], "Training and validation loss and accuracy")
        + _table(["epoch", "loss", "accuracy", "val loss", "val accuracy", "seconds"], rows)
        + _img(figures_dir, figures.CNN["confusion_matrix"], "CNN confusion matrix")
        + _img(figures_dir, figures.CNN["per_class"], "Precision, recall and F1 per digit")
        + "<h3>Per-class figures</h3>"
        + _per_class_table(m)
        + _img(figures_dir, figures.CNN["misclassified"], "The first misclassified test digits")
        + _img(
            figures_dir,
            figures.CNN["misclassified_confident"],
            "The CNN's most confidently wrong (its probability for the wrong digit)",
        )
    )


def section_cluster(figures_dir: Path, m: dict) -> str:
    """The HTML of clustering's section, from its metrics and figures."""
    c = m["config"]
    names = [
        ("consistency", "consistency (the course's score)"),
        ("purity", "purity"),
        ("accuracy", "accuracy after Hungarian matching"),
        ("ari", "adjusted Rand index"),
        ("nmi", "normalised mutual information"),
        ("ami", "adjusted mutual information"),
        ("homogeneity", "homogeneity"),
        ("completeness", "completeness"),
        ("v_measure", "V-measure"),
        ("silhouette", "silhouette (2,000-image sample)"),
    ]
    train = m.get("train_scores", {})

    def score(v) -> str:
        # Older run folders have no training silhouette: say so instead of printing nan.
        return "not computed" if v is None or v != v else f"{v:.4f}"

    rows = [[label, score(m[k]), score(train.get(k))] for k, label in names if k in m]
    method = METHODS.get(c["method"], c["method"])
    embedding = EMBEDDINGS.get(c["embedding"], c["embedding"])
    return (
        f"<p class='lead'>No labels this time: {method} with {c['n_clusters']} clusters on "
        f"{embedding} features of {_size(c['train_size'])} training images, then every test "
        "image goes to its nearest cluster. The course's <em>consistency</em> (for each digit, "
        "the share in its largest cluster) rewards keeping digits together but not apart, so it "
        "is shown beside the standard scores.</p>"
        + _cards(
            [
                ("consistency", _honest(m["consistency"], 3, (0.0, 1.0))),
                ("purity", _honest(m["purity"], 3, (0.0, 1.0))),
                ("matched accuracy", _honest(m["accuracy"], 3, (0.0, 1.0))),
                ("ARI", _honest(m["ari"], 3, (0.0, 1.0))),
            ]
        )
        + _table(["score", "test images", "training images"], rows)
        + (
            "<p class='lead'>Silhouette: how much closer each image is to its own cluster "
            "than to the next one (−1..1), on a seeded sample of 2,000 images of each set.</p>"
        )
        + _img(
            figures_dir,
            figures.CLUSTER["centres"],
            "Each cluster's mean image and its most likely digit",
        )
        + _img(
            figures_dir,
            figures.CLUSTER["scatter"],
            "Test images projected on the first two principal components; each centre is "
            "labelled with its cluster and that cluster's most likely digit",
        )
    )


def section_gan(figures_dir: Path, m: dict) -> str:
    """The HTML of the GAN's section, from its metrics and figures."""
    if "skipped" in m:
        return f"<p class='lead'>Skipped: {html.escape(m['skipped'])}.</p>"
    meta = m.get("generator_metadata", {})
    quality = meta.get("quality", {})
    cards = []
    if "conditional_accuracy" in quality:
        cards.append(("conditional accuracy", _pct(quality["conditional_accuracy"])))
    if "frechet" in quality:
        cards.append(("Fréchet distance (CNN features)", _honest(quality["frechet"], 1)))
        cards.append(("real-vs-real floor", _honest(quality["frechet_real_vs_real"], 1)))
    recorded = ""
    if cards:
        # Not measured in this run (the stage draws pictures): the cards once stood beside
        # the run's own kNN and CNN figures as if they were.
        n = quality.get("n_generated")
        digits = f"{n:,d} generated digits" if isinstance(n, int) else "generated digits"
        recorded = (
            "<p class='note'>The generator's own figures, recorded with it when it was "
            f"measured ({digits} read by a trained CNN); this run did not measure them. "
            "<code>digitlab gan evaluate</code> measures them again.</p>"
        )
    if "steps" in meta and "epochs" in meta:  # a finished training: it may stop mid-epoch
        epochs = _honest(meta["epochs"], 2 if meta["epochs"] < 1 else 1)
        cards.append(("training", f"{meta['steps']:,d} steps ({epochs} epochs)"))
    elif "epochs" in meta:  # saved after an epoch (a generator taken mid-training)
        cards.append(("training epochs", _honest(meta["epochs"], 1)))
    return (
        "<p class='lead'>A conditional GAN: the generator turns 128 random numbers plus the "
        "digit it is asked for into an image; the discriminator, shown images with their "
        "digit, learns to tell real from generated, and the generator learns to fool it. "
        "Conditional accuracy is the share of generated digits a trained CNN reads as the "
        "digit that was asked for; the Fréchet distance compares CNN features of generated "
        "and real images.</p>"
        + (_cards(cards) if cards else "")
        + recorded
        + _img(
            figures_dir,
            figures.GAN["grid"],
            "Every digit, ten samples each (row d asks for digit d)",
        )
        + _img(figures_dir, figures.GAN["digit"], "One chosen digit, ten times")
        + _img(
            figures_dir,
            figures.GAN["morph"],
            "Morphing one digit into another: the noise stays fixed while the label is blended",
        )
        + _img(figures_dir, figures.GAN["morph_strip"], "The same morph, frame by frame")
    )


SECTIONS = {
    "data": section_data,
    "knn": section_knn,
    "sweep": section_sweep,
    "cnn": section_cnn,
    "cluster": section_cluster,
    "gan": section_gan,
}


def write_report(folder: str | Path) -> tuple[Path, list[str]]:
    """Build report.html from a run folder: (its path, the figures `lost_figures` finds
    missing or damaged, which the page shows as such). Raises DataError for a missing folder,
    another command's folder, or a run folder whose metrics or config cannot be read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder: give a run folder (`digitlab run --out`)")
    held = owner(folder)
    if held not in (None, "run"):
        # Its metrics are another command's: the advice to rebuild them with `run` was then
        # refused by `run` itself.
        what = held if held == "a saved model" else f"the output of `digitlab {held}`"
        raise DataError(
            f"{folder} holds {what}, not a run: `digitlab report` rebuilds the report of a "
            "folder `digitlab run --out` wrote"
        )
    if not (folder / "metrics.json").exists():
        raise DataError(
            f"{folder} is not a digitlab run folder (no metrics.json): give the folder a "
            "`digitlab run --out` wrote"
        )
    try:
        metrics = read_json_object(folder / "metrics.json")
        config = read_json_object(folder / "config.json")
    except DataError as exc:
        raise DataError(
            f"{exc}; `digitlab run --out {folder}` with its settings rebuilds "
            "them from its finished stages"
        ) from exc
    page = atomic_write_text(folder / "report.html", render_report(folder, metrics, config))
    return page, lost_figures(folder, metrics)


def render_report(
    folder: str | Path,
    metrics: dict,
    config: dict,
    figure_dirs: Mapping[str, Path] | None = None,
) -> str:
    """The report's HTML for a run folder from its metrics and config (as metrics.json and
    config.json hold them) and its figures/. `figure_dirs` maps a stage to another folder of
    its figures (a run renders its report from the stages' staged figures before it moves them
    into figures/). Raises DataError when the figures are not what a report needs
    (hand-edited: a string for an accuracy, a stage that is null)."""
    folder = Path(folder)
    try:
        return _page(folder, metrics, config, figure_dirs or {})
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # These once gave a traceback, for `report` and for every later `run` of the folder.
        raise DataError(
            f"{folder / 'metrics.json'} does not hold the figures a report needs "
            f"({type(exc).__name__}: {exc}); delete it (and any hand-edited stages/*.json) "
            f"and rerun `digitlab run --out {folder}` with its settings"
        ) from exc


def check_stage(stage: str, m: dict) -> None:
    """Raise DataError when `m`, a stage's figures (a stages/<stage>.json record), cannot be
    shown in a report: a hand-edited record is rerun, not reused into a report that fails."""
    try:
        SECTIONS[stage](Path("/nonexistent"), m)  # the HTML only: no figure is read
        float(m.get("seconds", 0))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise DataError(f"its figures cannot be shown ({type(exc).__name__}: {exc})") from exc


def _rerun_words(config: dict, stages: list[str]) -> str:
    """Whether rerunning config.toml gives these numbers again: on a CPU, only with the same
    thread counts (a report once promised it while the CNN's count was chosen by timing and a
    rerun on another count gave 0.9209 for 0.9210)."""
    timed = [
        s
        for s in ("cnn", "cluster")
        if s in stages and isinstance(config.get(s), dict) and config[s].get("threads") is None
    ]
    if not timed:
        return "rerunning with it reproduces these numbers (on CPU)."
    names = " and ".join({"cnn": "CNN's", "cluster": "k-means'"}[s] for s in timed)
    settings = ", ".join(f"{s}.threads" for s in timed)
    return (
        f"rerunning with it on a CPU gives these numbers again only on the same thread counts: "
        f"the {names} thread count{'s were' if len(timed) > 1 else ' was'} chosen here by timing "
        "(left unset), and on another "
        "count the floats are summed in another order, so those figures may differ in their "
        f"last digits. Set {settings} (or --threads) to fix it."
    )


def _notes(m: dict) -> str:
    """What a stage did other than asked (its record's `notes`: e.g. the data stage showing
    another image than the course's on a small local folder), said at the section's top."""
    notes = m.get("notes") if isinstance(m.get("notes"), list) else []
    return "".join(f"<p class='lead'><b>Note:</b> {html.escape(str(n))}</p>" for n in notes)


def _page(folder: Path, metrics: dict, config: dict, figure_dirs: Mapping[str, Path]) -> str:
    """The report's HTML from a run folder's metrics and config (and its figures)."""
    stages = [s for s in SECTIONS if s in metrics.get("stages", {})]
    env = metrics.get("environment", {})
    dataset = metrics.get("dataset", {})
    if not dataset.get("name"):
        dataset = {**dataset, "name": config.get("data", {}).get("dataset", "mnist")}
    title, _ = _dataset_words(dataset)
    # Where the settings came from, as config.toml's first line says it: a run given a run's
    # config.toml back (no preset in it) was headed "preset course".
    source = source_words(config.get("preset"), config.get("config_file"))
    source_html = source_words(
        config.get("preset"),
        config.get("config_file"),
        lambda n: f"<b>{html.escape(shown_name(n))}</b>",
    )
    body = []
    for s in stages:
        m = metrics["stages"][s]
        if s == "data":
            m = {**m, "_dataset": dataset}
        token = _expected.set(stage_figures(m))
        try:
            html_of = SECTIONS[s](figure_dirs.get(s, folder / "figures"), m)
        finally:
            _expected.reset(token)
        body.append(
            f"<section id='{s}'><h2>{TITLES[s]}</h2>{_notes(m)}{html_of}"
            f"<p class='lead'>Stage time: {_seconds(m.get('seconds', 0))}</p></section>"
        )
    timing = _table(
        ["stage", "seconds"],
        [[TITLES[s], _honest(metrics["stages"][s].get("seconds", 0), 1)] for s in stages],
    )
    env_rows = [[k, v] for k, v in env.items()]
    env_table = _table(None, env_rows, kind="kv")
    nav = "".join(f"<a href='#{s}'>{TITLES[s]}</a>" for s in stages)
    rerun = _rerun_words(config, stages)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>digitlab report: {html.escape(title)} course ({html.escape(source)})</title>
<style>{CSS}</style></head>
<body><header><h1>Machine learning on {html.escape(title)}</h1>
<p>A digitlab run, {source_html}, seed
{html.escape(str(config.get("seed", config.get("data", {}).get("seed"))))},
on {html.escape(str(env.get("platform", "")))}</p>
</header><main><nav>{nav}<a href="#timing">Timing</a></nav>
{"".join(body)}
<section id="timing"><h2>Timing and environment</h2>{timing}<h3>Environment</h3>{env_table}
<p class="lead">The full configuration is in config.toml beside this report; {rerun}</p></section>
<footer>Made by digitlab {html.escape(str(env.get("digitlab", "")))}</footer></main>
<div id="zoom" role="dialog" aria-label="Figure at full size"><p>Tap anywhere to close</p><img
alt=""></div><script>{SCRIPT}</script></body></html>
"""
    return page
