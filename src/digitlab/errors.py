"""digitlab's own exception types.

Each one carries a message meant for a person: what went wrong, with which file or value, and
what to do about it. The CLI prints that message on one line and exits non-zero.
"""

from __future__ import annotations


class DigitlabError(Exception):
    """Base class of every error digitlab raises on purpose."""


class DataError(DigitlabError):
    """A data file or folder is missing, corrupt, or not what it claims to be."""


class ConfigError(DigitlabError, ValueError):
    """An option or configuration value is unknown or out of range."""


class CheckpointMismatch(ConfigError):
    """A training checkpoint cannot be continued with these settings or this data: made on
    another dataset, with other settings, or already further than asked for."""


def _not_fitted_error() -> type:
    # Built on first use: subclassing scikit-learn's class needs `import sklearn` (about half a
    # second), which commands that never touch an estimator should not pay at start-up.
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    class NotFittedError(DigitlabError, SklearnNotFittedError):
        """An estimator was used before `fit`.

        A subclass of `sklearn.exceptions.NotFittedError` (and so of ValueError and
        AttributeError): code that catches scikit-learn's error catches ours.
        """

    NotFittedError.__module__ = __name__
    NotFittedError.__qualname__ = "NotFittedError"
    return NotFittedError


def _invalid_parameter_error() -> type:
    # scikit-learn's estimators raise InvalidParameterError (a ValueError and a TypeError) for a
    # bad constructor parameter; it lives in a private module, so a version that moves it
    # gets a class of the same two bases instead.
    try:
        from sklearn.utils._param_validation import InvalidParameterError as Sklearn
    except ImportError:  # pragma: no cover - depends on the installed scikit-learn
        Sklearn = type("InvalidParameterError", (ValueError, TypeError), {})

    class InvalidParameterError(ConfigError, Sklearn):
        """An estimator's parameter has the wrong type or value (raised in `fit`, as
        scikit-learn does). A subclass of scikit-learn's InvalidParameterError, ValueError,
        TypeError and ConfigError: code that catches any of them catches ours."""

    InvalidParameterError.__module__ = __name__
    InvalidParameterError.__qualname__ = "InvalidParameterError"
    return InvalidParameterError


_LAZY = {"NotFittedError": _not_fitted_error, "InvalidParameterError": _invalid_parameter_error}


def __getattr__(name: str):
    if name in _LAZY:
        cls = _LAZY[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ImageError(DataError, ValueError):
    """A picture cannot be read as one digit: not an image, truncated, too small or too large,
    or blank. The message names the file when there is one. (A ValueError too, so callers
    that caught the old ValueError of `to_mnist` keep working.)

    `reason` says which, for a caller that answers each in its own words (the app):
    "blank" (an empty canvas, plain paper), "no_digit" (a busy picture in which nothing
    stands out as a digit) or "unreadable" (everything else: the message says what).
    """

    REASONS = ("blank", "no_digit", "unreadable")

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        if reason not in self.REASONS:
            raise ValueError(f"reason must be one of {self.REASONS}, got {reason!r}")
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # pickled (a worker process) with its reason
        return type(self), (str(self), self.reason)
