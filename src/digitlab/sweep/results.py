"""From trial records to what a reader needs: per-configuration statistics over seeds, the
configuration chosen on validation, and paired comparisons with it on the same seeds."""

from __future__ import annotations

import json
import math

from digitlab.sweep.stats import paired, summarize


def _key(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _ok(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def aggregate(
    records: list[dict],
    keys: list[str],
    mode: str,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    test_bounds: tuple[float, float] = (0.0, 1.0),
) -> dict:
    """Group finished trials by their settings (seeds apart) and compare them.

    Returns {"configs": [...], "best": index or None, "comparisons": [...]}. Each config holds
    its settings, seeds, trial names and `summarize` of the objective and of the test figure.
    The best configuration has the best mean objective (validation) in the direction of `mode`
    (ties: the first given); the test figure plays no part. Each comparison pairs the best
    configuration with another on the seeds both ran (objective and test figure, best - other).
    `bounds` and `test_bounds`: the values the objective and the test figure can take (their
    intervals are clipped to them).
    """
    groups: dict[str, dict] = {}
    for r in records:
        if r.get("status") != "done":
            continue
        settings = {k: r["settings"].get(k) for k in keys}
        g = groups.setdefault(
            _key(settings), {"settings": settings, "seeds": [], "trials": [], "by_seed": {}}
        )
        g["seeds"].append(r["seed"])
        g["trials"].append(r["name"])
        g["by_seed"][r["seed"]] = (r.get("objective"), r.get("test"))
    configs = []
    for g in groups.values():
        order = sorted(g["by_seed"])
        objective = [g["by_seed"][s][0] for s in order]
        test = [g["by_seed"][s][1] for s in order]
        configs.append(
            {
                "settings": g["settings"],
                "seeds": order,
                "trials": [g["trials"][g["seeds"].index(s)] for s in order],
                "objective": summarize([v for v in objective if _ok(v)], bounds=bounds),
                "test": summarize([v for v in test if _ok(v)], bounds=test_bounds),
                "_by_seed": g["by_seed"],
            }
        )
    scored = [i for i, c in enumerate(configs) if c["objective"]["mean"] is not None]
    best = None
    if scored:
        sign = 1 if mode == "max" else -1
        best = max(scored, key=lambda i: (sign * configs[i]["objective"]["mean"], -i))
    comparisons = []
    if best is not None:
        b = configs[best]["_by_seed"]
        for i, c in enumerate(configs):
            if i == best:
                continue
            seeds = sorted(s for s in c["_by_seed"] if s in b)
            pair_obj = [(b[s][0], c["_by_seed"][s][0]) for s in seeds]
            pair_test = [
                (b[s][1], c["_by_seed"][s][1])
                for s in seeds
                if _ok(b[s][1]) and _ok(c["_by_seed"][s][1])
            ]
            comparisons.append(
                {
                    "other": i,
                    "other_settings": c["settings"],
                    "seeds": seeds,
                    "objective": paired([p[0] for p in pair_obj], [p[1] for p in pair_obj], mode),
                    # The test figure is better when higher (accuracy); shown, never used.
                    "test": paired([p[0] for p in pair_test], [p[1] for p in pair_test], "max"),
                }
            )
    for c in configs:
        c.pop("_by_seed")
    return {"configs": configs, "best": best, "comparisons": comparisons}
