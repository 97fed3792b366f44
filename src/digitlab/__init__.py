"""digitlab: the classic MNIST machine-learning course as fast, correct, reproducible software."""

from digitlab.errors import ConfigError, DataError, DigitlabError

# Imported on first use: `digitlab` (the command) imports this package before its Ctrl-C
# guard (`__main__.entry`) runs, and NumPy's import here (0.3 s) was a window where Ctrl-C
# printed a traceback.
_LAZY = {"Dataset": "digitlab.data", "load_data": "digitlab.data", "load_dataset": "digitlab.data"}

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "sweep":  # `digitlab.sweep(...)`; imported on first use (Ray only when it runs)
        import importlib

        return importlib.import_module("digitlab.sweep")
    if name == "NotFittedError":  # built on first use: it subclasses scikit-learn's
        from digitlab import errors

        return errors.NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DataError",
    "Dataset",
    "DigitlabError",
    "NotFittedError",
    "__version__",
    "load_data",
    "load_dataset",
    "sweep",
]
