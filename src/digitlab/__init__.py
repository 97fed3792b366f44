"""digitlab: the classic MNIST machine-learning course as fast, correct, reproducible software."""

from digitlab.data import Dataset, load_data, load_dataset
from digitlab.errors import ConfigError, DataError, DigitlabError

__version__ = "0.1.0"


def __getattr__(name: str):
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
