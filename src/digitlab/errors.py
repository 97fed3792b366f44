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


class NotFittedError(DigitlabError, ValueError, AttributeError):
    """An estimator was used before `fit` (same bases as scikit-learn's NotFittedError)."""


class ImageError(DataError, ValueError):
    """A picture cannot be read as one digit: not an image, truncated, too small or too large,
    or blank. The message names the file when there is one. (A ValueError too, so callers
    that caught the old ValueError of `to_mnist` keep working.)"""
