"""digitlab: the classic MNIST machine-learning course as fast, correct, reproducible software."""

from digitlab.data import Dataset, load_data, load_dataset
from digitlab.errors import ConfigError, DataError, DigitlabError, NotFittedError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "Dataset",
    "DigitlabError",
    "NotFittedError",
    "__version__",
    "load_data",
    "load_dataset",
]
