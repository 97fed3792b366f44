"""The search space of a sweep, parsed from the command line's words.

Three kinds of words, each `KEY=SPEC` with KEY a run setting such as `knn.k` or `cnn.lr`:

- a grid: `knn.k=1,3,5,7`, `cnn.ema=none,0.95` (every value is tried);
- a range: `cnn.lr=1e-4..1e-2:log` (sampled by random search or Optuna), or with a number of
  points, `cnn.lr=1e-4..1e-2:log:5`, which the grid search spreads evenly (on a log scale with
  `:log`); an integer setting's range `knn.k=1..7` is every whole number in it for the grid;
- seeds: `--seeds 0-11` or `0,3,7`: every configuration is run once per seed (the run's `seed`), so
  configurations can be compared seed by seed.

Pure parsing: no Ray, no data. Values are typed against the setting they change (through the
`setting_type` function handed in), so `knn.k=three` fails here, before anything runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from digitlab.errors import ConfigError
from digitlab.validation import int_ranges

#: The setting every trial's seed goes into.
SEED_KEY = "seed"

#: The most trials one sweep may plan (configurations times seeds). Each trial is a run folder
#: and a Tune trial; far beyond this, planning alone takes minutes, the sweep folder holds more
#: run folders than a file browser or sweep.html can show, and Tune's driver slows down. A
#: larger search is narrowed, or sampled (--search random/optuna --trials N).
MAX_TRIALS = 10_000

# Integer ranges with up to this many points are counted exactly (by making them); beyond it,
# min(points, whole numbers in the range) bounds the count without building a huge list.
_EXACT_COUNT = 100_000


@dataclass(frozen=True)
class Range:
    """A numeric interval [low, high]; `log` samples/spreads on a log scale; `points` for grids."""

    low: float
    high: float
    log: bool = False
    integer: bool = False
    points: int | None = None

    def grid(self) -> list[float] | list[int]:
        """The values a grid search tries (ConfigError when no number of points is given)."""
        if self.integer and not self.log and self.points is None:
            return list(range(int(self.low), int(self.high) + 1))
        if self.points is None:
            raise ConfigError(
                f"a range needs a number of points for a grid search, e.g. "
                f"{self.low:g}..{self.high:g}{':log' if self.log else ''}:5, or use "
                "--search random / --search optuna"
            )
        n = self.points
        if n == 1:
            values = [self.low]
        elif self.log:
            a, b = math.log(self.low), math.log(self.high)
            values = [math.exp(a + (b - a) * i / (n - 1)) for i in range(n)]
        else:
            values = [self.low + (self.high - self.low) * i / (n - 1) for i in range(n)]
        if self.integer:
            return sorted({round(v) for v in values})
        return [float(f"{v:.6g}") for v in values]  # 6 significant digits: readable names

    def size(self) -> int:
        """How many values `grid()` gives, counted without making a huge list (ConfigError as
        `grid()` when a grid needs a number of points)."""
        span = int(self.high) - int(self.low) + 1 if self.integer else None
        if self.points is None:
            if span is not None and not self.log:
                return span
            return len(self.grid())  # raises: a grid search needs a number of points
        if span is not None:
            return len(self.grid()) if self.points <= _EXACT_COUNT else min(self.points, span)
        return self.points


@dataclass
class SearchSpace:
    """What a sweep varies: grid values, ranges, and the seeds every configuration runs on."""

    grid: dict[str, list] = field(default_factory=dict)
    ranges: dict[str, Range] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])

    @property
    def keys(self) -> list[str]:
        """The swept settings, in the order they were given (seeds not included)."""
        return [*self.grid, *self.ranges]

    def grid_points(self) -> Iterator[dict[str, object]]:
        """Every configuration of a full grid (ranges spread into their points), seeds aside."""
        axes = {**self.grid, **{k: r.grid() for k, r in self.ranges.items()}}
        for combo in itertools.product(*axes.values()):
            yield dict(zip(axes, combo, strict=True))

    def n_grid(self) -> int:
        """The number of configurations of a full grid (seeds aside), counted, not made."""
        return math.prod(len(v) for v in self.grid.values()) * math.prod(
            r.size() for r in self.ranges.values()
        )

    def as_dict(self) -> dict:
        return {
            "grid": self.grid,
            "ranges": {
                k: {
                    "low": r.low,
                    "high": r.high,
                    "log": r.log,
                    "integer": r.integer,
                    "points": r.points,
                }
                for k, r in self.ranges.items()
            },
            "seeds": self.seeds,
        }


def _named_seeds(text: str) -> int:
    """How many seeds `text` names ('0-3000000' -> 3000001; repeats counted), worked out
    without listing them; 0 where it cannot be read (int_ranges then says why)."""
    n = 0
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:  # the grammar of validation.int_ranges
                lo, _, rest = part.partition("-")
                hi, _, step = rest.partition(":")
                n += max(0, (int(hi) - int(lo)) // max(1, int(step or 1)) + 1)
            else:
                n += 1
        except ValueError:
            return 0
    return n


def _too_many_seeds(what: str, n: int) -> None:
    if n > MAX_TRIALS:
        raise ConfigError(
            f"{what} names {n:,} seeds, and every configuration runs on each; a sweep "
            f"runs at most {MAX_TRIALS:,} trials: narrow --seeds (e.g. 0-11)"
        )


def parse_seeds(text: str | int | Sequence[int]) -> list[int]:
    """'0-11' -> [0..11]; '0,3,7' -> [0, 3, 7]; '5' -> [5]; a list of ints is kept.

    Raises ConfigError for unreadable or negative seeds, and for more than MAX_TRIALS of them
    (counted before they are listed: '0-3000000000' is refused at once).
    """
    if isinstance(text, int):
        return [text]
    if not isinstance(text, str):
        seeds = list(text)
        if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
            raise ConfigError(f"seeds must be whole numbers >= 0, got {seeds!r}")
        _too_many_seeds("the seed list", len(set(seeds)))
        return sorted(set(seeds))
    _too_many_seeds(f"--seeds {text}", _named_seeds(text))
    try:
        seeds = int_ranges(text)
    except ValueError:
        raise ConfigError(f"cannot read seeds {text!r}; write e.g. 0-11 or 0,3,7") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"seeds must be whole numbers >= 0, got {text!r}")
    return sorted(set(seeds))


def _number(text: str, key: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"cannot read {text!r} in the range of {key}: not a number") from None


def parse_range(key: str, spec: str, integer: bool) -> Range:
    """`LOW..HIGH[:log][:POINTS]` -> Range, checked (low < high, positive for log)."""
    head, *opts = spec.split(":")
    lo_text, _, hi_text = head.partition("..")
    low, high = _number(lo_text, key), _number(hi_text, key)
    log, points = False, None
    for opt in opts:
        if opt == "log":
            log = True
        elif opt.isdigit() and int(opt) >= 1:
            points = int(opt)
        else:
            raise ConfigError(
                f"cannot read {opt!r} in {key}={spec}; a range is LOW..HIGH[:log][:POINTS]"
            )
    if not low < high:
        raise ConfigError(f"the range of {key} is empty: {spec} (low must be below high)")
    if log and low <= 0:
        raise ConfigError(f"a log range needs positive bounds, got {key}={spec}")
    if integer and (low != int(low) or high != int(high)):
        raise ConfigError(f"{key} is a whole number; its range needs whole bounds, got {spec}")
    return Range(low, high, log, integer, points)


def parse_space(
    words: Sequence[str] | Mapping[str, object],
    seeds: str | int | Sequence[int] = "0",
    setting_type: Callable[[str], type] | None = None,
    coerce: Callable[[str, object], object] | None = None,
) -> SearchSpace:
    """Parse `KEY=SPEC` words (or a mapping KEY -> list of values / range text) and the seeds.

    `setting_type(key)` names the setting's numeric type (int or float; anything else for
    non-numeric settings) and raises ConfigError for an unknown key; `coerce(key, value)` types
    one grid value (e.g. 'none' -> None, '5' -> 5) or raises ConfigError. Raises ConfigError
    for an empty grid, a repeated key, a malformed range, the seed key swept directly, or more
    seeds than MAX_TRIALS.
    """
    items: list[tuple[str, object]]
    if isinstance(words, Mapping):
        items = list(words.items())
    else:
        items = []
        for word in words:
            key, sep, spec = str(word).partition("=")
            if not sep or not key.strip():
                raise ConfigError(
                    f"search space word {word!r} is not KEY=VALUES (e.g. knn.k=1,3,5 or "
                    "cnn.lr=1e-4..1e-2:log)"
                )
            items.append((key.strip(), spec.strip()))
    space = SearchSpace(seeds=parse_seeds(seeds))
    for key, spec in items:
        if key in space.grid or key in space.ranges:
            raise ConfigError(f"{key} is given twice in the search space")
        if key in (SEED_KEY, "data.seed"):  # data.seed: where configs before 0.2 kept it
            raise ConfigError(f"sweep seeds with --seeds (e.g. --seeds 0-11), not {key}=...")
        kind = setting_type(key) if setting_type else float
        if isinstance(spec, str) and ".." in spec:
            if kind not in (int, float):
                raise ConfigError(f"{key} is not numeric, so it takes a list, not a range")
            space.ranges[key] = parse_range(key, spec, integer=kind is int)
            continue
        if isinstance(spec, str):
            raw = [v.strip() for v in spec.split(",")]
            if not spec.strip() or not all(raw):
                raise ConfigError(
                    f"the grid of {key} is empty or has an empty value: {key}={spec!r}"
                )
            values: list = raw
        elif isinstance(spec, (list, tuple)):
            values = list(spec)
        else:
            values = [spec]
        if not values:
            raise ConfigError(f"the grid of {key} is empty")
        typed = [coerce(key, v) if coerce else v for v in values]
        unique = []
        for v in typed:
            if v not in unique:
                unique.append(v)
        space.grid[key] = unique
    return space
