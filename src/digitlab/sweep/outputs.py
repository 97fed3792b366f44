"""The sweep's files: sweep.json, trials.csv, one figure per swept setting, sweep.html.

Presentation only: numbers come from `results.aggregate`; every file is written atomically.
sweep.html is self-contained (figures embedded) and links each trial's own report.html.
"""

from __future__ import annotations

import base64
import csv
import io
import math
from pathlib import Path

from digitlab import __version__, plots
from digitlab.files import atomic_write_json, atomic_write_text
from digitlab.report import CSS
from digitlab.sweep.stats import CLIPPED_NOTE, interval_text


def _num(x) -> str:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.6g}"


def trials_csv(records: list[dict], keys: list[str], metric: str, test_metric: str | None) -> str:
    """One row per trial: name, status, seed, the swept settings, objective, test figure, ..."""
    # The objective and the test figure have their own columns: not again among the rest.
    extra = sorted({m for r in records for m in (r.get("metrics") or {})} - {metric, test_metric})
    head = [
        "trial",
        "status",
        "seed",
        *keys,
        metric,
        test_metric or "test",
        "seconds",
        "attempts",
        *extra,
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for r in records:
        m = r.get("metrics") or {}
        writer.writerow(
            [r["name"], r["status"], r["seed"]]
            + [("none" if r["settings"].get(k) is None else r["settings"].get(k)) for k in keys]
            + [
                _num(r.get("objective")),
                _num(r.get("test")),
                _num(r.get("seconds")),
                r.get("attempts", ""),
            ]
            + [_num(m.get(k)) for k in extra]
        )
    return buf.getvalue()


def figures(summary: dict, keys: list[str], ranges: dict, metric: str, folder: Path) -> list[Path]:
    """The metric against each swept setting: mean over seeds with its 95% interval.

    One line per combination of the other settings (or, when there are more than eight, the
    mean over them), with the test figure of the same configurations as hollow markers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = summary["configs"]
    out: list[Path] = []
    for key in keys:
        others = [k for k in keys if k != key]
        lines: dict[str, list[dict]] = {}
        for c in configs:
            label = ", ".join(f"{k}={c['settings'][k]}" for k in others) or metric
            lines.setdefault(label, []).append(c)
        if len(lines) > 8:
            lines = {f"{metric} (each configuration)": configs}
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        numeric = all(
            isinstance(c["settings"][key], (int, float))
            and not isinstance(c["settings"][key], bool)
            for c in configs
        )
        labels = sorted({str(c["settings"][key]) for c in configs})
        for i, (label, group) in enumerate(lines.items()):
            if numeric:
                group = sorted(group, key=lambda c: c["settings"][key])
                xs = [c["settings"][key] for c in group]
            else:
                xs = [labels.index(str(c["settings"][key])) for c in group]
            ys = [c["objective"]["mean"] for c in group]
            lo = [
                (c["objective"]["mean"] - c["objective"]["ci_low"])
                if c["objective"]["ci_low"] is not None
                else 0.0
                for c in group
            ]
            color = f"C{i % 10}"
            ax.errorbar(
                xs,
                ys,
                yerr=lo,
                marker="o",
                capsize=3,
                color=color,
                label=label,
                linestyle="-" if len(lines) <= 8 and numeric else "none",
            )
            tys = [c["test"]["mean"] for c in group]
            if any(t is not None for t in tys):
                ax.plot(
                    [x for x, t in zip(xs, tys, strict=True) if t is not None],
                    [t for t in tys if t is not None],
                    marker="o",
                    markerfacecolor="none",
                    linestyle="none",
                    color=color,
                    alpha=0.7,
                )
        if not numeric:
            ax.set_xticks(range(len(labels)), labels)
        elif key in ranges and ranges[key].get("log"):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"{metric} (mean over seeds, 95% CI)")
        ax.set_title(
            f"{metric} against {key}\n(hollow: test figure, shown only, never chosen on)",
            fontsize=10,
        )
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        name = "metric_vs_" + "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in key)
        out.append(plots.save(fig, folder / f"{name}.png"))
    return out


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>digitlab sweep: {{ metric }}</title>
<style>{{ css }}
td.bad { color:#b3261e; } .small { font-size:.85rem; color:var(--muted); }</style></head>
<body><header><h1>Sweep: {{ metric }} ({{ mode }})</h1>
<p>{{ n_done }} of {{ n_trials }} trials finished · {{ configs|length }} configurations ·
seeds {{ seeds }} · search {{ search }}</p></header><main>
<section><h2>The result</h2>
{% if best is not none %}{% set b = configs[best] %}
<div class="cards">
<div class="card"><b>{{ settings_text(b.settings) }}</b><span>chosen on validation</span></div>
<div class="card"><b>{{ pct(b.objective.mean) }}</b><span>{{ metric }}, mean of {{ b.objective.n }}
{% if b.objective.ci_low is not none %} (95% CI {{ ci(b.objective, clipped_note) }}){% endif %}</span></div>
{% if test_metric %}<div class="card"><b>{{ pct(b.test.mean) }}</b><span>{{ test_metric }} (test set, reported, never used to choose)</span></div>{% endif %}
</div>
<p class="lead">The configuration is chosen by its mean {{ metric }} over seeds (a validation
figure); the test-set figure is shown beside it and plays no part in the choice.</p>
{% else %}<p>No trial finished.</p>{% endif %}
</section>
<section><h2>Every configuration, over seeds</h2><div class="scroll"><table>
<tr><th>configuration</th><th>n</th><th>mean</th><th>std</th><th>min</th><th>max</th>
<th>95% CI</th>{% if test_metric %}<th>test mean</th><th>test 95% CI</th>{% endif %}</tr>
{% for c in configs %}<tr{% if loop.index0 == best %} class="chosen"{% endif %}>
<td>{{ settings_text(c.settings) }}</td><td>{{ c.objective.n }}</td><td>{{ pct(c.objective.mean) }}</td>
<td>{{ pct(c.objective.std) }}</td><td>{{ pct(c.objective.min) }}</td><td>{{ pct(c.objective.max) }}</td>
<td>{{ ci(c.objective) }}</td>{% if test_metric %}<td>{{ pct(c.test.mean) }}</td><td>{{ ci(c.test) }}</td>{% endif %}</tr>
{% endfor %}</table></div>
<p class="small">std: sample standard deviation; CI: Student's t interval of the mean
(marked clipped where it reached past the values the figure can take and was cut there;
sweep.json keeps it unclipped as ci_unclipped).</p></section>
{% if comparisons %}<section><h2>The chosen configuration against each other, seed by seed</h2>
<div class="scroll"><table><tr><th>other configuration</th><th>n</th><th>mean difference</th>
<th>95% CI</th><th>chosen better</th><th>Wilcoxon p</th><th>paired t p</th>
{% if test_metric %}<th>test: difference</th><th>test: chosen better</th>{% endif %}</tr>
{% for cmp in comparisons %}<tr><td>{{ settings_text(cmp.other_settings) }}</td><td>{{ cmp.objective.n }}</td>
<td>{{ signed(cmp.objective.mean_diff) }}</td><td>{{ ci(cmp.objective) }}</td>
<td>{{ cmp.objective.wins }} of {{ cmp.objective.n }}{% if cmp.objective.ties %} ({{ cmp.objective.ties }} ties){% endif %}</td>
<td>{{ p(cmp.objective.wilcoxon_p) }}</td><td>{{ p(cmp.objective.ttest_p) }}</td>
{% if test_metric %}<td>{{ signed(cmp.test.mean_diff) }}</td><td>{{ cmp.test.wins }} of {{ cmp.test.n }}</td>{% endif %}</tr>
{% endfor %}</table></div>
<p class="small">Differences are chosen − other, in points, on the seeds both ran. Wilcoxon:
scipy's signed-rank test; paired t: scipy's ttest_rel; both two-sided.</p></section>{% endif %}
{% if images %}<section><h2>The metric against each setting</h2>
{% for name, data in images %}<figure><img alt="{{ name }}" src="data:image/png;base64,{{ data }}">
<figcaption>{{ name }}</figcaption></figure>{% endfor %}</section>{% endif %}
<section><h2>Every trial</h2><div class="scroll"><table>
<tr><th>trial</th><th>status</th><th>seed</th><th>{{ metric }}</th>{% if test_metric %}<th>{{ test_metric }}</th>{% endif %}
<th>seconds</th><th>attempts</th></tr>
{% for r in records %}<tr><td>{% if r.status == "done" %}<a href="trials/{{ r.name }}/report.html">{{ r.name }}</a>{% else %}{{ r.name }}{% endif %}</td>
<td{% if r.status != "done" %} class="bad" title="{{ r.get('error') or '' }}"{% endif %}>{{ r.status }}</td><td>{{ r.seed }}</td>
<td>{{ pct(r.objective) }}</td>{% if test_metric %}<td>{{ pct(r.test) }}</td>{% endif %}
<td>{{ num(r.get('seconds')) }}</td><td>{{ r.get('attempts', '') }}</td></tr>{% endfor %}</table></div></section>
<footer>digitlab {{ version }} · sweep.json and trials.csv beside this page hold every figure</footer>
</main></body></html>
"""  # noqa: E501 (HTML lines)


def _pct(x) -> str:
    return "–" if x is None else f"{x:.4f}"


def _ci(s: dict, note: str = "clipped") -> str:
    # A clipped interval says so: its bound at the metric's edge is not the t interval's.
    return interval_text(s, " – ", note) or "–"


def sweep_html(summary: dict, records: list[dict], image_paths: list[Path]) -> str:
    """The self-contained page (Jinja2, autoescaped; the report's stylesheet)."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    images = [(p.stem, base64.b64encode(p.read_bytes()).decode("ascii")) for p in image_paths]
    return env.from_string(TEMPLATE).render(
        css=CSS,
        version=__version__,
        images=images,
        records=records,
        n_done=sum(r["status"] == "done" for r in records),
        n_trials=len(records),
        pct=_pct,
        ci=_ci,
        clipped_note=CLIPPED_NOTE,
        num=_num,
        p=lambda x: "–" if x is None else f"{x:.3g}",
        signed=lambda x: "–" if x is None else f"{x:+.4f}",
        settings_text=lambda s: (
            ", ".join(f"{k}={'none' if v is None else v}" for k, v in s.items())
            or "base configuration"
        ),
        **summary,
    )


def write_outputs(out: Path, summary: dict, records: list[dict]) -> dict[str, Path]:
    """Write sweep.json, trials.csv, figures/metric_vs_*.png and sweep.html into `out`."""
    keys = summary["keys"]
    paths = {"json": atomic_write_json(out / "sweep.json", {**summary, "trials": records})}
    paths["csv"] = atomic_write_text(
        out / "trials.csv", trials_csv(records, keys, summary["metric"], summary["test_metric"])
    )
    images = (
        figures(summary, keys, summary["space"]["ranges"], summary["metric"], out / "figures")
        if summary["configs"]
        else []
    )
    paths["html"] = atomic_write_text(out / "sweep.html", sweep_html(summary, records, images))
    return paths
