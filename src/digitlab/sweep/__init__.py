"""`digitlab sweep`: many runs of the course, on Ray, compared with honest statistics.

A sweep is a base run (preset, TOML file, key=value overrides, stages) and a search space
(grid values, ranges, seeds). Every trial is a normal run folder in `OUT/trials/`; the
objective is a validation figure, with its test-set twin reported beside it and never used to
choose. Ray Tune schedules the trials (this machine by default, or a cluster by address).

    from digitlab import sweep
    table = sweep(["knn.k=1,3,5,7"], seeds="0-2", metric="knn.val_accuracy",
                  overrides=["knn.train_size=2000"], stages=["knn"], out="runs/k-sweep")

`sweep(...)` returns a pandas DataFrame of the trials when pandas is installed, else a list of
dicts; `run_sweep(...)` returns everything (records, per-configuration statistics, paths).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from digitlab.errors import ConfigError


@dataclass
class SweepResult:
    """What a sweep produced: the trial records, the statistics and the files written."""

    folder: Path
    records: list[dict]
    summary: dict
    paths: dict[str, Path]
    complete: bool

    @property
    def best(self) -> dict | None:
        """The configuration chosen on validation (with its statistics), or None."""
        i = self.summary.get("best")
        return None if i is None else self.summary["configs"][i]

    def table(self):
        """The trials as a pandas DataFrame when pandas is installed, else a list of dicts."""
        rows = [
            {
                "trial": r["name"],
                "status": r["status"],
                "seed": r["seed"],
                **r["settings"],
                r["metric"]: r.get("objective"),
                (r.get("test_metric") or "test"): r.get("test"),
                "seconds": r.get("seconds"),
                "attempts": r.get("attempts"),
            }
            for r in self.records
        ]
        try:
            import pandas as pd  # optional (the `sweep` extra): a list of dicts without it
        except ImportError:
            return rows
        return pd.DataFrame(rows)


def split_words(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split command-line words into (search space, base overrides).

    A value list (`knn.k=1,3,5`) or a range (`cnn.lr=1e-4..1e-2:log`) is swept; a single value
    (`knn.train_size=2000`, or a quoted TOML string such as `sweep.ks='1,3'`) sets the base run.
    """
    space, overrides = [], []
    for word in words:
        _key, sep, value = str(word).partition("=")
        v = value.strip()
        if sep and not v.startswith(("'", '"', "[")) and ("," in v or ".." in v or not v):
            space.append(word)
        else:
            overrides.append(word)
    return space, overrides


def candidate_points(space, search: str) -> Iterator[dict[str, object]]:
    """The settings to check before a sweep starts: every grid configuration, or (random,
    Optuna) each range's ends and each listed value on its own, on the first seed; then every
    other seed, on the first of them."""
    # Loaded on use: the run layer brings torch, and `import digitlab` must stay light.
    from digitlab.sweep.space import SEED_KEY

    if search == "grid":
        points = list(space.grid_points())
    else:
        points = [
            {key: int(end) if r.integer else end}
            for key, r in space.ranges.items()
            for end in (r.low, r.high)
        ]
        points += [{key: v} for key, values in space.grid.items() for v in values]
    points = points or [{}]
    # A seed changes no other setting's range (it is checked on its own), so each seed is
    # checked once, not with every configuration: 100 configurations on 100 seeds are 199
    # checks, not 10,000 (each a copy and a full check of the run configuration).
    first, *others = space.seeds
    for point in points:
        yield {**point, SEED_KEY: first}
    for seed in others:
        yield {**points[0], SEED_KEY: seed}


def plan_sweep(
    space: Sequence[str] | Mapping[str, object] = (),
    *,
    metric: str,
    mode: str | None = None,
    seeds: str | int | Sequence[int] = "0",
    preset: str = "course",
    config: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, object] = (),
    stages: Sequence[str] | None = None,
    search: str = "grid",
    trials: int | None = None,
    search_seed: int = 0,
    asha: bool = False,
    max_failures: int = 2,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_concurrent: int | None = None,
):
    """Check every input and fix the plan, before Ray or any data is touched.

    `overrides` set the base run, as `key=value` words or a mapping of keys to typed values;
    single-valued words in `space` join them. Returns (plan, base configuration). Raises
    ConfigError with one clear line for: an unknown setting, an empty grid, a bad range or
    seed list, a metric that no stage produces (or whose stage is left out), a mode other than
    min/max, a bad search/trials/resource figure, more trials than MAX_TRIALS, a setting out of
    range for the dataset's table size (a validation split that would be empty included).
    """
    # Loaded on use: the run layer brings torch, and `import digitlab` must stay light.
    from digitlab.sweep import adapter
    from digitlab.sweep.engine import SEARCHES, Plan
    from digitlab.sweep.space import parse_space

    tests = {m.test: name for name, m in adapter.METRICS.items() if m.test}
    if metric in tests:
        raise ConfigError(
            f"{metric} is a test-set figure: a sweep never chooses on it (it is reported "
            f"beside the objective); use the validation figure {tests[metric]}"
        )
    if metric not in adapter.METRICS:
        raise ConfigError(
            f"no stage produces the metric {metric!r}; the objective must be a validation "
            f"figure, one of: {', '.join(adapter.METRICS)}"
        )
    natural = adapter.METRICS[metric].mode
    mode = natural if mode is None else mode
    if mode not in ("min", "max"):
        raise ConfigError(f"--mode must be min or max, got {mode!r}")
    if search not in SEARCHES:
        raise ConfigError(f"--search must be one of {', '.join(SEARCHES)}, got {search!r}")
    if trials is not None and (not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"--trials must be a whole number >= 1, got {trials!r}")
    if search != "grid" and trials is None:
        raise ConfigError(f"--search {search} needs --trials N (how many settings to sample)")
    if not (isinstance(cpus_per_trial, (int, float)) and cpus_per_trial > 0):
        raise ConfigError(f"--cpus-per-trial must be above 0, got {cpus_per_trial!r}")
    if not (isinstance(gpus_per_trial, (int, float)) and gpus_per_trial >= 0):
        raise ConfigError(f"--gpus-per-trial must be 0 or more, got {gpus_per_trial!r}")
    if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
        raise ConfigError(f"--gpus-per-trial above 1 must be whole, got {gpus_per_trial}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be at least 1, got {max_concurrent}")
    if max_failures < 0:
        raise ConfigError(f"--max-failures must be 0 or more, got {max_failures}")
    if isinstance(space, str):
        space = [space]
    words: list[str] | Mapping = space
    extra: list[str] = []
    if not isinstance(space, Mapping):
        words, extra = split_words(space)
    # Loaded on use: the run layer brings torch, and `import digitlab` must stay light.
    from digitlab.files import jsonable
    from digitlab.run_config import parse_overrides

    fixed: dict[str, object] = (
        dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(list(overrides))
    )
    fixed.update(parse_overrides(extra))
    base = adapter.resolve_base(preset, config, fixed)
    parsed = parse_space(words, seeds, adapter.setting_type, adapter.coerce_value)
    stage_list = adapter.check_stages(stages) if stages else None
    wanted = adapter.METRICS[metric].stage
    if stage_list is None:  # default: the stages the metric and the swept settings need
        needed = {wanted} | {adapter.stage_of_setting(k) for k in parsed.keys}
        stage_list = adapter.check_stages(sorted(s for s in needed if s))
    elif wanted not in stage_list:
        raise ConfigError(
            f"the metric {metric} comes from the {wanted} stage, which --stages "
            f"{','.join(stage_list)} leaves out"
        )
    if asha and adapter.METRICS[metric].stage != "cnn":
        # Accepted, it did nothing: only the CNN reports its metric epoch by epoch.
        raise ConfigError(
            f"--asha stops trials early on the CNN's per-epoch reports; {metric} comes once, "
            "when a trial ends: leave out --asha, or choose a cnn metric"
        )
    if search == "optuna" and len(parsed.seeds) > 1:
        raise ConfigError(
            "--search optuna tunes on one seed (--seeds N); compare the configurations it "
            "finds over many seeds with a grid sweep"
        )
    plan = Plan(
        space=parsed,
        metric=metric,
        mode=mode,
        stages=stage_list,
        search=search,
        trials=trials,
        search_seed=search_seed,
        asha=asha,
        max_failures=max_failures,
        cpus_per_trial=float(cpus_per_trial),
        gpus_per_trial=float(gpus_per_trial),
        max_concurrent=max_concurrent,
        base_overrides=jsonable(fixed),  # recorded in plan.json and sweep.json
        preset=preset,
        config_file=str(config) if config else None,
    )
    _check_count(plan)  # before the configurations are made and checked one by one
    for point in candidate_points(parsed, search):  # every one valid before anything runs
        adapter.check_settings(base, point, metric)
    return plan, base


def _check_count(plan) -> None:
    """ConfigError when the plan has more trials than MAX_TRIALS, saying how many and how
    to narrow it."""
    from digitlab.sweep.space import MAX_TRIALS

    n = plan.n_planned()
    if n <= MAX_TRIALS:
        return
    n_seeds = len(plan.space.seeds)
    seeds = f"{n_seeds:,} seed{'s' * (n_seeds != 1)}"
    if plan.search == "grid":
        n_grid = plan.space.n_grid()
        count = f"{n_grid:,} configuration{'s' * (n_grid != 1)} x {seeds}"
        narrow = "narrow the grid or --seeds, or sample it with --search random --trials N"
    elif plan.search == "random":
        count = f"--trials {plan.trials:,} x {seeds}"
        narrow = "lower --trials or narrow --seeds"
    else:
        count = f"--trials {plan.trials:,}"
        narrow = "lower --trials"
    raise ConfigError(
        f"the sweep would run {n:,} trials ({count}); a sweep runs at most {MAX_TRIALS:,}: {narrow}"
    )


def run_sweep(
    space: Sequence[str] | Mapping[str, object] = (),
    *,
    metric: str,
    out: str | Path = "runs/sweep",
    address: str | None = None,
    resume: bool = False,
    quiet: bool = True,
    say: Callable[[str], None] | None = None,
    **options,
) -> SweepResult:
    """Plan, run on Ray, aggregate and write a sweep; see `plan_sweep` for the options.

    `out` is the sweep folder (trials in `out/trials/`, Ray's state in `out/ray/`), `address`
    a Ray cluster ("auto", "ray://HOST:PORT" or a head's "HOST:PORT"; None: start Ray here),
    `resume` continues an interrupted sweep in `out` without rerunning finished trials.
    Raises ConfigError for bad input (a trial that no node of the cluster can hold
    included: checked once Ray is joined, before anything is written), MissingExtraError
    without Ray, and DataError for a folder that holds another sweep.
    """
    # Loaded on use: the run layer brings torch, and `import digitlab` must stay light.
    import json
    from dataclasses import asdict

    from digitlab.errors import DataError
    from digitlab.files import read_json_object
    from digitlab.folders import claim
    from digitlab.sweep import adapter
    from digitlab.sweep.engine import (
        RAY_DIR,
        check_resources,
        collect,
        ray_session,
        require_ray,
        run_plan,
    )
    from digitlab.sweep.outputs import write_outputs
    from digitlab.sweep.results import aggregate

    plan, base = plan_sweep(space, metric=metric, **options)
    require_ray()
    if address is None:
        # Sizes are checked against the dataset itself (a training subset larger than a small
        # dataset, a k above the fitting images) here, once, not in every trial (where each
        # would fail and be retried). The trials read the same data on this machine; on a
        # cluster the data may live on its nodes only, and the trials check it there.
        points = candidate_points(plan.space, plan.search)
        adapter.check_with_data(base, points, metric, plan.stages)
    say = say or (print if not quiet else (lambda _text: None))
    folder = Path(out).resolve()
    # The folder is this sweep's alone: another command's is refused, and so is a second
    # sweep (or any writer) while this one runs, naming it.
    with claim(folder, "sweep"):
        state = folder / "plan.json"
        fingerprint = json.loads(json.dumps(plan.fingerprint(), default=str))
        if state.is_file():
            saved = read_json_object(state)
            if not resume:
                raise DataError(
                    f"{folder} already holds a sweep; pass --resume to continue it, or choose "
                    "another --out"
                )
            if saved.get("fingerprint") != fingerprint:
                planned = saved.get("fingerprint") or {}
                diff = [k for k in fingerprint if fingerprint[k] != planned.get(k)]
                raise DataError(
                    f"the sweep in {folder} was planned with other settings ({', '.join(diff)}); "
                    "resume it with the same command"
                )
        elif (folder / RAY_DIR).exists() or (folder / "trials").exists():
            raise DataError(f"{folder} holds files of an unknown sweep; choose another --out")
        elif resume:  # a mistyped --out would otherwise start over in silence
            say(f"no sweep in {folder} to resume: starting a new one there")
        folder.mkdir(parents=True, exist_ok=True)
        # Loaded on use: the run layer brings torch, and `import digitlab` must stay light.
        from digitlab.files import atomic_write_json

        with ray_session(address, quiet):
            # What the cluster has is known once joined: a trial that no node can hold would
            # wait forever. Checked before the plan is written, so a refused sweep leaves no
            # plan that a corrected command would have to --resume.
            check_resources(plan, address)
            atomic_write_json(
                state, {"fingerprint": fingerprint, "base": adapter.config_dict(base)}
            )
            say(
                f"sweep: {plan.n_planned()} trials ({plan.search}), objective {plan.metric} "
                f"({plan.mode}), stages {','.join(plan.stages)} -> {folder}"
            )
            results = run_plan(plan, base, folder, resume and state.is_file(), say, quiet)
        records = collect(plan, folder, results)  # from the trials' files, Ray left
        summary = {
            "format": 1,
            "metric": plan.metric,
            "mode": plan.mode,
            "test_metric": plan.test_metric,
            "search": plan.search,
            "keys": plan.space.keys,
            "seeds": plan.space.seeds,
            "space": plan.space.as_dict(),
            "stages": plan.stages,
            "base": adapter.config_dict(base),
            "plan": {k: v for k, v in asdict(plan).items() if k != "space"},
            "n_planned": plan.n_planned(),
            **aggregate(records, plan.space.keys, plan.mode, adapter.METRICS[plan.metric].bounds),
        }
        paths = write_outputs(folder, summary, records)
        complete = len(records) >= plan.n_planned() and not any(
            r["status"] == "unfinished" for r in records
        )
        return SweepResult(folder, records, summary, paths, complete)


def sweep(space: Sequence[str] | Mapping[str, object] = (), **options):
    """Run a sweep (see `run_sweep`); return the trial table (DataFrame or list of dicts)."""
    return run_sweep(space, **options).table()


class _CallableModule(types.ModuleType):
    """`from digitlab import sweep; sweep(...)` calls the function of the same name."""

    def __call__(self, *args, **kwargs):
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["SweepResult", "plan_sweep", "run_sweep", "split_words", "sweep"]
