"""scikit-learn's own conformance suite (`check_estimator`) on our estimators.

Every check runs; the one marked as an expected failure is the one scikit-learn marks for its
own KMeans (xfail_strict makes a listed check that starts passing fail the suite). Sparse input
is refused with the message scikit-learn asks for (the `input_tags.sparse = False` tag), which the
`check_estimator_sparse_*` checks test. The array-API check needs SCIPY_ARRAY_API=1 before
scipy is imported, so it runs in a fresh interpreter (test_array_api_check_in_a_subprocess).
"""

import os
import subprocess
import sys

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from digitlab.kmeans import KMeans
from digitlab.neighbors import KNeighborsClassifier

# {estimator class name: {check name: one-line reason}}: scikit-learn 1.9's way to declare an
# expected failure (its former `_xfail_checks` tag is gone). KMeans' one is the one scikit-learn
# declares for its own KMeans (a seeded random start on repeated rows draws differently);
# tests/test_cluster.py checks weights against repetition where the answer is unambiguous.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "KNeighborsClassifier": {},
    "KMeans": {
        "check_sample_weight_equivalence_on_dense_data": (
            "sample_weight is not equivalent to removing/repeating samples (as sklearn's KMeans)"
        ),
    },
}

ESTIMATORS = [KNeighborsClassifier(), KMeans(n_init=2, device="cpu")]


def _expected_failures(estimator) -> dict[str, str]:
    return EXPECTED_FAILED_CHECKS[type(estimator).__name__]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures, xfail_strict=True)
def test_sklearn_check_estimator(estimator, check):
    check(estimator)


def test_array_api_check_in_a_subprocess():
    """check_array_api_input with NumPy inputs and array-API dispatch on (its default skip)."""
    code = (
        "from functools import partial\n"
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        "from digitlab.kmeans import KMeans\n"
        "from digitlab.neighbors import KNeighborsClassifier\n"
        "for est in (KNeighborsClassifier(), KMeans(n_init=2, device='cpu')):\n"
        "    check_array_api_input(type(est).__name__, est, array_namespace='numpy',\n"
        "                          expect_only_array_outputs=False)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_sparse_input_fails_with_sklearn_message(estimator):
    import numpy as np
    from scipy import sparse

    X = sparse.csr_matrix(np.eye(12))
    y = np.arange(12) % 3
    with pytest.raises(TypeError, match="Sparse data was passed.*but dense data is required"):
        estimator.fit(X, y)


# The same bad parameter, ours and scikit-learn's estimator of the same name: both raise
# scikit-learn's InvalidParameterError in fit (ours raised a plain ValueError).
BAD_PARAMETERS = [
    ("KNeighborsClassifier", {"n_neighbors": 0}),
    ("KNeighborsClassifier", {"n_neighbors": 2.5}),
    ("KNeighborsClassifier", {"weights": "nearest"}),
    ("KNeighborsClassifier", {"algorithm": "ball"}),
    ("KNeighborsClassifier", {"leaf_size": 0}),
    ("KNeighborsClassifier", {"metric": "cosine_ish"}),
    ("KMeans", {"n_clusters": 0}),
    ("KMeans", {"max_iter": -1}),
    ("KMeans", {"init": "centres"}),
    ("KMeans", {"n_init": 0}),
    ("KMeans", {"algorithm": "fastest"}),
    ("KMeans", {"random_state": "a"}),
]


@pytest.mark.parametrize("name, params", BAD_PARAMETERS)
def test_bad_parameters_raise_sklearns_invalid_parameter_error(name, params):
    import numpy as np
    import sklearn.cluster
    import sklearn.neighbors
    from sklearn.utils._param_validation import InvalidParameterError

    from digitlab import errors

    X = np.random.default_rng(0).random((30, 4))
    y = np.arange(30) % 3
    theirs = {"KNeighborsClassifier": sklearn.neighbors, "KMeans": sklearn.cluster}[name]
    with pytest.raises(InvalidParameterError):
        getattr(theirs, name)(**params).fit(X, y)
    ours = {"KNeighborsClassifier": KNeighborsClassifier, "KMeans": KMeans}[name]
    with pytest.raises(InvalidParameterError) as raised:
        ours(**params).fit(X, y)
    assert isinstance(raised.value, (errors.ConfigError, ValueError, TypeError))
    assert next(iter(params)) in str(raised.value)  # the message names the parameter
