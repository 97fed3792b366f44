"""Ray Tune runs the trials: scheduling, search algorithms, early stopping, retries, resume.

Nothing here is a scheduler of our own. This module turns a sweep plan into a `tune.Tuner`
(a grid, random search or Optuna's TPE; optionally ASHA early stopping; FailureConfig retries;
`Tuner.restore` for --resume) and runs one trial per run folder through `adapter.run_trial`.

Ray is an optional extra: importing this module does not import Ray; `require_ray()` does and
names the extra when it is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from digitlab.errors import ConfigError, DataError, DigitlabError
from digitlab.files import atomic_write_json, read_json_object
from digitlab.sweep import adapter
from digitlab.sweep.space import SEED_KEY, SearchSpace

SEARCHES = ("grid", "random", "optuna")
TRIALS_DIR = "trials"
RAY_DIR = "ray"


class MissingExtraError(DigitlabError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require_ray():
    """Import Ray Tune, or raise MissingExtraError naming `digitlab[sweep]`."""
    try:
        import ray
        from ray import tune  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"digitlab sweep needs Ray Tune ({exc.name or 'ray'} is not installed): "
            "pip install 'digitlab[sweep]'"
        ) from None
    return ray


@dataclass
class Plan:
    """Everything a sweep needs to run, fixed before Ray starts (saved in sweep.json)."""

    space: SearchSpace
    metric: str
    mode: str
    stages: list[str]
    search: str = "grid"
    trials: int | None = None  # random/optuna: configurations to sample
    search_seed: int = 0
    asha: bool = False
    max_failures: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    base_overrides: dict[str, object] = field(default_factory=dict)
    preset: str = "course"
    config_file: str | None = None

    @property
    def test_metric(self) -> str | None:
        return adapter.METRICS[self.metric].test

    @property
    def threads(self) -> int:
        """Torch threads of one trial: its CPU share, at least one."""
        return max(1, int(self.cpus_per_trial))

    def n_planned(self) -> int:
        seeds = len(self.space.seeds)
        if self.search == "grid":
            return self.space.n_grid() * seeds
        if self.search == "random":
            return int(self.trials or 1) * seeds
        return int(self.trials or 1)

    def fingerprint(self) -> dict:
        """The settings that make two sweeps the same sweep (checked on --resume)."""
        return {
            "space": self.space.as_dict(),
            "metric": self.metric,
            "mode": self.mode,
            "stages": self.stages,
            "search": self.search,
            "trials": self.trials,
            "search_seed": self.search_seed,
            "asha": self.asha,
            "preset": self.preset,
            "base_overrides": self.base_overrides,
        }


# ----- naming -------------------------------------------------------------------------------


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "none" if value is None else str(value)


def trial_name(settings: dict[str, object], seed: int) -> str:
    """A readable, stable folder name for one trial, e.g. 'knn.k=3_seed=0'.

    The same settings always give the same name, so a resumed sweep finds its trials' folders.
    A short hash is added when a value would be shortened (sampled floats) or the name is long.
    """
    parts = [f"{k}={_text(v)}" for k, v in settings.items()] + [f"seed={seed}"]
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "-", "_".join(parts))
    exact = all(not isinstance(v, float) or float(_text(v)) == v for v in settings.values())
    if not exact or len(name) > 120:
        digest = hashlib.sha1(
            json.dumps([settings, seed], sort_keys=True, default=str).encode()
        ).hexdigest()[:8]
        name = f"{name[:110]}-{digest}"
    return name


# ----- the trial (runs on a Ray worker) -----------------------------------------------------


def _report(metrics: dict) -> None:
    from ray import tune

    report = getattr(tune, "report", None)
    if report is None:  # Ray before Tune had its own report function
        from ray import train

        report = train.report
    report(metrics)


def _read_record(folder: Path) -> dict | None:
    path = folder / "trial.json"
    if not path.is_file():
        return None
    try:
        return read_json_object(path)
    except DataError:
        return None


def run_one(params: dict, ctx: dict) -> None:
    """Ray Tune's trainable: one trial = one run folder, reported to Tune at the end.

    `params` holds the swept settings and 'seed'; `ctx` the sweep's fixed context (base
    configuration, stages, metric, folders). A trial whose folder already holds a finished
    record with the same settings is not rerun (resume); each start is appended to
    attempts.jsonl, so retries after a lost worker are visible.
    """
    # First thing, before the slow imports: who runs this attempt (a lost worker is retried).
    seed = int(params["seed"])
    settings = {k: params[k] for k in ctx["keys"]}
    folder = Path(ctx["out"]) / TRIALS_DIR / trial_name(settings, seed)
    done = _read_record(folder)
    if done and done.get("status") == "done" and done.get("settings") == settings:
        _report({"objective": done["objective"], "test": done.get("test"), "reused": 1})
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "attempts.jsonl", "a") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "start": time.time()}) + "\n")
    metric = ctx["metric"]

    import torch

    torch.set_num_threads(ctx["threads"])
    epoch_reports = ctx["asha"] and adapter.METRICS[metric].stage == "cnn"

    def on_epoch(stage: str, epoch: int, figures: dict) -> None:
        if metric in figures:
            _report({"objective": figures[metric], "epoch": epoch + 1})

    start = time.perf_counter()
    flat = adapter.run_trial(
        ctx["base"],
        {**settings, SEED_KEY: seed},
        folder,
        ctx["stages"],
        metric,
        threads=ctx["threads"],
        on_epoch=on_epoch if epoch_reports else None,
    )
    test_key = adapter.METRICS[metric].test
    record = {
        "name": folder.name,
        "status": "done",
        "settings": settings,
        "seed": seed,
        "metric": metric,
        "objective": flat.get(metric),
        "test_metric": test_key,
        "test": flat.get(test_key) if test_key else None,
        "metrics": flat,
        "seconds": time.perf_counter() - start,
        "attempts": _attempts(folder),
    }
    if record["objective"] is None:
        raise DigitlabError(f"trial {folder.name} produced no {metric}")
    atomic_write_json(folder / "trial.json", record)
    _report({"objective": record["objective"], "test": record["test"], "reused": 0})


# ----- connecting -----------------------------------------------------------------------------


def check_address(address: str) -> None:
    """Reach a Ray cluster's address by TCP first, so a wrong one fails in seconds, clearly."""
    if address == "auto":
        return
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", address)
    if not match:
        raise ConfigError(
            f"--address must be auto, ray://HOST:PORT or HOST:PORT (a Ray head's GCS "
            f"address), got {address!r}"
        )
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot reach a Ray cluster at {address} ({reason}); start one with "
            "`ray start --head` there, or drop --address to run on this machine"
        ) from None


def _use_local_token(address: str) -> None:
    """Present this machine's Ray token to a cluster on this machine.

    `ray start` enables token authentication when a token exists (~/.ray/auth_token), and Ray
    sends it for `--address auto` but not for an explicit address, where the connection is then
    refused after half a minute of retries. For an address on this machine we do what `auto`
    does (Ray's own function); a token is never sent to another host unless the user sets
    RAY_AUTH_MODE=token (see the README).
    """
    host = re.sub(r"^ray://", "", address).rsplit(":", 1)[0].strip("[]")
    local = {"127.0.0.1", "localhost", "::1"}
    with contextlib.suppress(OSError):
        local.add(socket.gethostbyname(socket.gethostname()))
    if host not in local:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: its own defaults apply
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def connect(address: str | None, quiet: bool = True) -> bool:
    """Join the cluster at `address`, or start Ray on this machine; True if we started it."""
    ray = require_ray()
    level = logging.ERROR if quiet else logging.WARNING
    logging.getLogger("ray").setLevel(level)
    # A lost worker's traceback is Tune's to log; our callback prints one line for it instead.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    # Ray notes on every start that it uses this machine's token (~/.ray/auth_token, see
    # _use_local_token): a line about Ray's set-up, not this sweep, that came before each of
    # our one-line refusals (a trial no node can hold) and every sweep's first line.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    if address is None:
        if ray.is_initialized():
            return False
        # One trial per core by default: Ray counts this machine's cores.
        ray.init(include_dashboard=False, logging_level=level, log_to_driver=False)
        return True
    check_address(address)
    if address != "auto":
        _use_local_token(address)
    if ray.is_initialized():
        ray.shutdown()
    try:
        ray.init(address=address, logging_level=level, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot join the Ray cluster at {address}: {first}") from None
    return False


@contextlib.contextmanager
def ray_session(address: str | None, quiet: bool = True):
    """Join the cluster at `address` (or start Ray on this machine) for the block; leave the
    cluster (it keeps running), or stop the Ray started here, after it. Raises ConfigError as
    `connect` does."""
    ray = require_ray()
    started_here = connect(address, quiet)
    try:
        yield
    finally:
        if started_here or address is not None:
            ray.shutdown()


# ----- resources ------------------------------------------------------------------------------

# The resources of one trial's bundle, and the flags that set them.
_ASKED = (("CPU", "--cpus-per-trial"), ("GPU", "--gpus-per-trial"))


def fits(asked: dict[str, float], shapes: list[dict[str, float]]) -> bool:
    """Whether one node of `shapes` (each a node's resources, as ray.nodes() lists them)
    holds all of `asked` at once: Ray places a trial's CPUs and GPUs on a single node, so a
    cluster's total does not count."""
    # Ray counts resources in units of 1/10,000: a node's 0.1 + 0.2 is not below 0.3 there.
    return any(
        all(amount <= shape.get(name, 0.0) + 1e-9 for name, amount in asked.items() if amount)
        for shape in shapes
    )


def _amount(x: float, unit: str) -> str:
    return f"{x:g} {unit}{'s' if x > 1 else ''}" if x else f"no {unit}"


def _shape_text(shape: dict[str, float]) -> str:
    return " and ".join(_amount(shape.get(name, 0.0), name) for name, _ in _ASKED)


def _shapes_text(shapes: list[dict[str, float]]) -> str:
    counts: dict[str, int] = {}
    for shape in shapes:
        text = _shape_text(shape)
        counts[text] = counts.get(text, 0) + 1
    if len(shapes) == 1:
        return f"has {next(iter(counts))}"
    kinds = ", ".join(f"{text} (x{n})" if n > 1 else text for text, n in counts.items())
    return f"has {len(shapes)} nodes: {kinds}"


def resource_problem(
    asked: dict[str, float],
    nodes: list[dict[str, float]],
    launchable: list[dict[str, float]] = (),
    where: str = "the Ray cluster",
    remedy: str = "ask for less, or add a node that has it",
) -> str | None:
    """None if a trial asking for `asked` ({"CPU": 1, "GPU": 0.5}) can run on one of `nodes`
    (the cluster's live nodes) or of `launchable` (node types its autoscaler may add); else
    the one line that says what was asked and what the cluster has."""
    if fits(asked, [*nodes, *launchable]):
        return None
    wanted = " and ".join(_amount(asked[name], name) for name, _ in _ASKED if asked.get(name))
    flags = ", ".join(f"{flag} {asked[name]:g}" for name, flag in _ASKED if asked.get(name))
    text = f"a trial asks for {wanted} on one node ({flags}), but {where} {_shapes_text(nodes)}"
    if launchable:
        text += f", and its autoscaler adds nodes of {', '.join(map(_shape_text, launchable))}"
    return f"{text}: Ray would never start it; {remedy}"


def _node_shapes() -> list[dict[str, float]]:
    """The resources of each live node (the cluster's total as one, if they cannot be had)."""
    import ray

    try:
        nodes = [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]
    except Exception:  # another Ray version or a client connection: the total still bounds it
        nodes = []
    return nodes or [dict(ray.cluster_resources())]


def _launchable_shapes() -> list[dict[str, float]]:
    """The node types an autoscaler may start (from the cluster's autoscaling config, as Ray
    Train reads it); none on a fixed cluster, or where Ray does not say."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        groups = list(config.node_group_configs) if config is not None else []
        return [dict(g.resources) for g in groups if g.max_count != 0]
    except Exception:  # Ray's internals of another version, or a client connection
        return []


def check_resources(plan: Plan, address: str | None) -> None:
    """ConfigError when no node of the connected cluster can hold one trial's CPUs and GPUs
    (Ray would keep it pending forever), naming what was asked and what the cluster has. Node
    types an autoscaling cluster may still add count as nodes. Call it after `connect`."""
    asked = {"CPU": plan.cpus_per_trial, "GPU": plan.gpus_per_trial}
    if address is None:
        where, remedy = (
            "Ray on this machine",
            "ask for less, or join a cluster that has it with --address",
        )
    else:
        where, remedy = f"the Ray cluster at {address}", "ask for less, or add a node that has it"
    problem = resource_problem(asked, _node_shapes(), _launchable_shapes(), where, remedy)
    if problem is not None:
        raise ConfigError(problem)


# ----- the tuner --------------------------------------------------------------------------------


def _tune_space(plan: Plan) -> dict:
    from ray import tune

    space = plan.space
    out: dict = {}
    if plan.search == "grid":
        for key, values in space.grid.items():
            out[key] = tune.grid_search(values)
        for key, r in space.ranges.items():
            out[key] = tune.grid_search(r.grid())
    else:
        for key, values in space.grid.items():
            out[key] = tune.choice(values)
        for key, r in space.ranges.items():
            if r.integer:
                out[key] = (
                    tune.lograndint(int(r.low), int(r.high) + 1)
                    if r.log
                    else tune.randint(int(r.low), int(r.high) + 1)
                )
            else:
                out[key] = tune.loguniform(r.low, r.high) if r.log else tune.uniform(r.low, r.high)
    if plan.search == "optuna":
        out["seed"] = space.seeds[0]
    else:
        out["seed"] = tune.grid_search(space.seeds)
    return out


class _Progress:
    """A Tune callback that prints one line per finished or failed trial."""

    def __new__(cls, plan: Plan, say: Callable[[str], None]):
        from ray import tune

        class Progress(tune.Callback):
            def __init__(self):
                self.finished = 0

            def on_trial_complete(self, iteration, trials, trial, **info):
                self.finished += 1
                result = trial.last_result or {}
                test = result.get("test")
                test_text = f", test {test:.4f}" if isinstance(test, (int, float)) else ""
                note = " (finished before: reused)" if result.get("reused") else ""
                params = " ".join(f"{k}={_text(v)}" for k, v in trial.config.items())
                say(
                    f"trial {self.finished}/{plan.n_planned()} {params}: {plan.metric} "
                    f"{result.get('objective', float('nan')):.4f}{test_text}{note}"
                )

            def on_trial_error(self, iteration, trials, trial, **info):
                params = " ".join(f"{k}={_text(v)}" for k, v in trial.config.items())
                say(f"trial {params} failed (its worker died or it raised); retried if allowed")

        return Progress()


def _searcher(plan: Plan):
    if plan.search == "grid":
        return None
    if plan.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=plan.search_seed)
    try:
        import optuna
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise MissingExtraError(
            "--search optuna needs Optuna: pip install 'digitlab[sweep]'"
        ) from None
    import optuna

    # TPE, Optuna's default sampler, seeded so the same sweep proposes the same settings.
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=plan.search_seed))


def run_plan(
    plan: Plan,
    base,
    out: Path,
    resume: bool = False,
    say: Callable[[str], None] = print,
    quiet: bool = True,
):
    """Run the plan's trials on Ray Tune into `out/trials`; returns Tune's ResultGrid.

    Runs on the cluster joined by `ray_session` (whose resources `check_resources` checked).
    """
    # Tune's own progress tables are replaced by one line per trial (the _Progress callback).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    require_ray()
    from ray import tune

    keys = plan.space.keys
    ctx = {
        "base": base,
        "keys": keys,
        "stages": plan.stages,
        "metric": plan.metric,
        "out": str(out),
        "threads": plan.threads,
        "asha": plan.asha,
    }
    resources = {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(run_one, ctx=ctx), resources)
    storage = out / RAY_DIR
    if resume and tune.Tuner.can_restore(str(storage / "tune")):
        say(f"resuming the sweep in {out} (finished trials are kept)")
        tuner = tune.Tuner.restore(
            str(storage / "tune"),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
        )
        return _fit(tuner)
    scheduler = None
    if plan.asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="training_iteration", grace_period=1, reduction_factor=3, max_t=10_000
        )
    tune_config = tune.TuneConfig(
        metric="objective",
        mode=plan.mode,
        search_alg=_searcher(plan),
        scheduler=scheduler,
        num_samples=1 if plan.search == "grid" else int(plan.trials or 1),
        max_concurrent_trials=plan.max_concurrent,
        trial_dirname_creator=lambda trial: trial.trial_id,
        # One worker process serves many trials: torch and the data are imported once.
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name="tune",
        storage_path=str(storage),
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        callbacks=[_Progress(plan, say if not quiet else (lambda _text: None))],
        verbose=0,
    )
    tuner = tune.Tuner(
        trainable, param_space=_tune_space(plan), tune_config=tune_config, run_config=run_config
    )
    return _fit(tuner)


def _fit(tuner):
    """`tuner.fit()`, with the process's Ctrl-C and SIGTERM handlers given back after it:
    Tune installs its own (Ctrl-C stops the sweep gently) and leaves them, so after a sweep
    from Python (a notebook, the app, a test run) Ctrl-C no longer interrupted anything."""
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in held}
    try:
        return tuner.fit()
    finally:
        if threading.current_thread() is threading.main_thread():
            for s, handler in previous.items():
                if handler is not None:
                    signal.signal(s, handler)


def collect(plan: Plan, out: Path, results) -> list[dict]:
    """The trial records of a finished (or interrupted) sweep, from the trials' own folders.

    status: "done" (a finished run folder), "stopped" (ended early by ASHA), "failed" (raised
    or lost its worker more often than --max-failures allows) or "unfinished" (interrupted).
    """
    analysis = getattr(results, "_experiment_analysis", None)
    trials = list(getattr(analysis, "trials", None) or [])
    records: dict[str, dict] = {}
    for trial in trials:
        config = trial.config or {}
        if "seed" not in config:
            continue
        settings = {k: config[k] for k in plan.space.keys if k in config}
        name = trial_name(settings, int(config["seed"]))
        folder = out / TRIALS_DIR / name
        record = _read_record(folder)
        if record is None or record.get("status") != "done":
            # A trial that ended without its record was stopped early by ASHA; without ASHA
            # it was cut short by an interruption (Tune marks such trials terminated too).
            status = {"TERMINATED": "stopped" if plan.asha else "unfinished", "ERROR": "failed"}
            status = status.get(trial.status, "unfinished")
            last = trial.last_result or {}
            error = None
            if status == "failed":
                error = _error_line(trial)
            record = {
                "name": name,
                "status": status,
                "settings": settings,
                "seed": int(config["seed"]),
                "metric": plan.metric,
                "objective": last.get("objective"),
                "test_metric": plan.test_metric,
                "test": None,
                "error": error,
            }
        record["attempts"] = _attempts(folder)
        records[name] = record
    return list(records.values())


def _error_line(trial) -> str:
    """The last line of a failed trial's error (its exception, or the lost worker).

    Read from the trial's folder in the sweep's own storage (`out/ray/tune/<trial>`), which
    needs no running Ray: the records are collected after Ray is shut down, when Tune's
    driver-side paths can no longer be asked for.
    """
    meta = getattr(trial, "run_metadata", None)
    name = getattr(meta, "error_filename", None) or "error.txt"
    try:
        folder = trial.path
    except Exception:  # another Ray version's internals: the error stays unnamed
        folder = None
    if folder:
        try:
            lines = [ln for ln in (Path(folder) / name).read_text().splitlines() if ln.strip()]
        except OSError:
            lines = []
        if lines:
            return lines[-1].strip()
    return "failed"


def _attempts(folder: Path) -> int:
    try:
        return sum(1 for _ in open(folder / "attempts.jsonl"))
    except OSError:
        return 0


def is_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
