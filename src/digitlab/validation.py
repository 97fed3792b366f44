"""Checks every module makes on its inputs, written once, with messages that name the value."""

from __future__ import annotations

import math
import numbers
import sys

import numpy as np

from digitlab.errors import ConfigError


def shown_value(value) -> str:
    """`value` as a message names it: its repr, but a whole number of more than 15 digits in
    short form (`1e+300`, `2**64`, `2**63 - 1`) and long text cut short. A seed of 1e300
    from the web app's number box once came back as a message with a 301-digit number."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, (bool, np.bool_)):
        return _short_int(int(value))
    if isinstance(value, np.floating):
        value = float(value)
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:56]}...{text[-1]}"


def _short_int(n: int) -> str:
    size = abs(n)
    if size < 10**15:
        return str(n)
    sign = "-" if n < 0 else ""
    if size & (size - 1) == 0:  # a power of two, as limits are written
        return f"{sign}2**{size.bit_length() - 1}"
    if (size + 1) & size == 0:
        return f"{sign}(2**{size.bit_length()} - 1)" if sign else f"2**{size.bit_length()} - 1"
    # Digits by logarithm and integer division: str() of an int of over 4,300 digits raises,
    # and float() of one beyond 1e308 overflows.
    exponent = int(math.log10(size))
    mantissa = size / 10**exponent
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    elif mantissa < 1:
        mantissa, exponent = mantissa * 10, exponent - 1
    return f"{sign}{mantissa:.6g}e+{exponent}"


def is_whole(value, minimum: int = 1) -> bool:
    """True for an int (numpy's too, never a bool) of at least `minimum`."""
    return (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, (int, np.integer))
        and value >= minimum
    )


def whole_number(name: str, value, minimum: int = 1, error: type[Exception] = ConfigError):
    """Raise `error` unless `value` is a whole number >= minimum; return it as an int."""
    if not is_whole(value, minimum):
        raise error(f"{name} must be a whole number >= {minimum}, got {shown_value(value)}")
    return int(value)


MAX_SEED = 2**63 - 1  # PyTorch's generators take a signed 64-bit seed (NumPy's take any size)


def check_seed(value, name: str = "seed") -> int:
    """`value` as an int if it is a whole number in 0..2**63 - 1, the seeds both NumPy's and
    PyTorch's generators accept; ConfigError otherwise (a negative seed made NumPy raise a bare
    ValueError, and a huge one PyTorch's "Overflow when unpacking long long")."""
    if not is_whole(value, 0) or value > MAX_SEED:
        raise ConfigError(
            f"{name} must be a whole number >= 0 and <= 2**63 - 1, got {shown_value(value)}"
        )
    return int(value)


def feature_array(X, what: str = "X") -> np.ndarray:
    """A numeric, finite, non-empty 2-D array; images (n, h, w) are flattened to (n, h*w)."""
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise ValueError(f"{what} must be numeric, got dtype {X.dtype}")
    if X.ndim == 3:
        X = X.reshape(len(X), -1)
    if X.ndim != 2:
        raise ValueError(
            f"{what} must be 2-D (n_samples, n_features) or images (n, h, w), got shape {X.shape}"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {X.shape}); need at least one sample")
    if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
        raise ValueError(f"{what} contains NaN or infinity")
    return X


def images_as_rows(X, estimator=None, *, reset: bool = True):
    """Images (n, h, w) as rows (n, h*w), a view, not a copy; anything else unchanged.

    For estimators that take MNIST images as they are stored; scikit-learn's `validate_data`
    then checks the result like any X. With `estimator`, its fit (`reset=True`) remembers the
    images' (h, w) and later calls refuse images of another shape with ValueError: (n, 14, 56)
    after fitting (n, 28, 28) has the same 784 values per row and was silently compared pixel
    by pixel with the wrong places. Rows (n, h*w) are always taken.
    """
    # A sparse X can only exist once scipy.sparse is imported: no import cost otherwise.
    sparse = sys.modules.get("scipy.sparse")
    images = getattr(X, "ndim", None) == 3 and not (sparse and sparse.issparse(X))
    shape = tuple(np.shape(X)[1:]) if images else None
    if estimator is not None and reset:
        estimator._image_shape = shape
    elif estimator is not None and images:
        fitted = getattr(estimator, "_image_shape", None)
        if fitted is not None and fitted != shape:
            raise ValueError(
                f"X holds images of {shape[0]}x{shape[1]} pixels, but "
                f"{type(estimator).__name__} was fitted on images of {fitted[0]}x{fitted[1]}"
            )
    if images:
        X = np.asarray(X)
        return X.reshape(len(X), -1)
    return X


def subset_size(value, available: int, name: str = "train_size") -> int | None:
    """None (all) or a whole number of samples in 1..available; "all" is taken as None."""
    if isinstance(value, str) and value == "all":
        return None
    if value is not None and not (is_whole(value) and value <= available):
        raise ConfigError(f"{name} must be in 1..{available} (or all), got {shown_value(value)}")
    return value


def unit_fraction(name: str, value) -> float:
    """`value` as a float if it is a real number (never a bool) in [0, 1): a dropout rate, a
    LeakyReLU slope. ConfigError otherwise (NaN included)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number in [0, 1), got {shown_value(value)}")
    if not 0 <= value < 1:
        raise ConfigError(f"{name} must be in [0, 1), got {shown_value(value)}")
    return float(value)


def positive_number(name: str, value, error: type[Exception] = ConfigError) -> float:
    """Raise `error` unless `value` is a finite number > 0; return it as a float."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not np.isfinite(value)
        or value <= 0
    ):
        raise error(f"{name} must be a number > 0, got {shown_value(value)}")
    return float(value)


MAX_LIST = 100_000  # values one list on the command line may name (k values, seeds)


class TooManyValues(ValueError):
    """A list on the command line names more than MAX_LIST values (its message says so)."""


def int_ranges(text: str) -> list[int]:
    """'1-7' -> [1..7]; '1,3,5' -> [1, 3, 5]; '1-9:2' -> [1, 3, 5, 7, 9] (in the order given).

    The one reader of integer lists on the command line (k values, seeds). Raises
    TooManyValues (a ValueError) past MAX_LIST values and ValueError for anything else, a
    reversed range ('7-1') or a step below 1 included; callers turn it into their own one-line
    ConfigError.
    """
    values: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if "-" in part[1:]:
            lo, _, rest = part.partition("-")
            hi, _, step = rest.partition(":")
            if int(hi) < int(lo) or int(step or 1) < 1:
                raise ValueError(part)
            # Counted before it is listed: '1-1000000000' once took 100 GB to refuse.
            if (int(hi) - int(lo)) // int(step or 1) + 1 + len(values) > MAX_LIST:
                raise TooManyValues(f"{part} names more than {MAX_LIST:,} values")
            values.extend(range(int(lo), int(hi) + 1, int(step or 1)))
        else:
            values.append(int(part))
    return values
