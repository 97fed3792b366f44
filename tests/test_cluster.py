import json
import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKLearnKMeans
from sklearn.datasets import make_blobs

from conftest import write_fake_idx
from digitlab.cli import main
from digitlab.cluster_experiment import ClusterConfig, run_clustering
from digitlab.data import load_dataset, random_subset
from digitlab.errors import ConfigError, NotFittedError
from digitlab.kmeans import KMeans
from digitlab.metrics import (
    clustering_report,
    consistency,
    contingency,
    matched_accuracy,
    purity,
)


def test_course_consistency_and_purity_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    c = np.array([5, 5, 1, 1, 1, 1])
    # digit 0: largest cluster holds 2; digit 1: 2; digit 2: 1 -> 5/6
    assert consistency(y, c) == pytest.approx(5 / 6)
    # cluster 5: majority 2 of digit 0; cluster 1: majority 2 of digit 1 -> 4/6
    assert purity(y, c) == pytest.approx(4 / 6)
    # one giant cluster: consistency 1.0 (why the course's score is not enough alone)
    assert consistency(y, np.zeros(6, int)) == 1.0
    assert contingency(y, c).sum() == 6


def test_matched_accuracy_is_label_permutation_invariant():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 1000)
    perm = rng.permutation(10)
    acc, mapping = matched_accuracy(y, perm[y])
    assert acc == 1.0 and all(mapping[perm[d]] == d for d in range(10))
    rep = clustering_report(y, perm[y])
    assert rep["ari"] == pytest.approx(1.0) and rep["nmi"] == pytest.approx(1.0)
    assert rep["v_measure"] == pytest.approx(1.0)


def test_kmeans_matches_sklearn_on_blobs():
    X, y = make_blobs(3000, n_features=20, centers=10, cluster_std=1.0, random_state=3)
    ours = KMeans(10, n_init=10, random_state=0).fit(X)
    ref = SKLearnKMeans(10, n_init=10, random_state=0).fit(X)
    assert ours.inertia_ <= ref.inertia_ * (1 + 1e-4)
    assert matched_accuracy(y, ours.labels_)[0] == 1.0
    np.testing.assert_array_equal(ours.predict(X), ours.labels_)
    assert ours.transform(X).shape == (3000, 10)
    assert ours.score(X) == pytest.approx(-ours.inertia_, rel=1e-5)


@pytest.mark.parametrize(
    "scale, offset", [(1e-30, 0), (1e-150, 0), (1e20, 0), (1e150, 0), (1, 1e8), (1e-20, 1e6)]
)
def test_kmeans_is_the_same_at_any_scale_and_offset(scale, offset):
    """k-means does not change when the data are scaled or shifted. Its float32 products
    did: data near 1e20 overflowed, near 1e-30 underflowed, values near 1e8 with unit spread
    lost the spread (each gave a clustering no better than chance). The truth: the clusters
    of the unscaled data, the centres, inertia and distances in the caller's units."""
    X, y = make_blobs(1500, n_features=30, centers=5, cluster_std=1.0, random_state=5)
    base = KMeans(5, random_state=0).fit(X)
    Xs = (X + offset) * scale
    model = KMeans(5, random_state=0).fit(Xs)
    assert matched_accuracy(y, model.labels_)[0] == 1.0
    assert model.inertia_ == pytest.approx(base.inertia_ * scale * scale, rel=1e-5)
    np.testing.assert_allclose(
        model.cluster_centers_[np.argsort(model.cluster_centers_[:, 0])],
        (base.cluster_centers_[np.argsort(base.cluster_centers_[:, 0])] + offset) * scale,
        rtol=1e-5,
        atol=1e-5 * scale,
    )
    np.testing.assert_array_equal(model.predict(Xs), model.labels_)
    dist = model.transform(Xs[:50])
    np.testing.assert_allclose(
        np.sort(dist, 1), np.sort(base.transform(X[:50]), 1) * scale, rtol=1e-5
    )
    assert model.score(Xs) == pytest.approx(-model.inertia_, rel=1e-4)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_kmeans_clusters_right_where_even_float64_squares_do_not_fit(scale):
    """Squared distances of 1e-300 (1e300) underflow (overflow) float64: the inertia is then
    0 (inf), as the true value is not representable, but the clusters are right."""
    X, y = make_blobs(600, n_features=10, centers=4, cluster_std=1.0, random_state=6)
    model = KMeans(4, random_state=0).fit(X * scale)
    assert matched_accuracy(y, model.labels_)[0] == 1.0
    np.testing.assert_array_equal(model.predict(X * scale), model.labels_)


@pytest.mark.parametrize("kwargs", [{}, {"projection": None}, {"algorithm": "lloyd"}])
def test_kmeans_sample_weight_as_repetition_and_as_sklearn(kwargs):
    """Whole-number weights are repeated samples: the same clusters, centres and inertia as
    the repeated data (and as scikit-learn with the weights); weight 0 removes a sample."""
    X, y = make_blobs(2000, n_features=60, centers=6, cluster_std=1.5, random_state=7)
    w = np.random.default_rng(0).integers(0, 4, len(X))
    X = np.concatenate([X, np.full((5, 60), 500.0)])  # far outliers, weight 0
    y, w = np.concatenate([y, np.full(5, 6)]), np.concatenate([w, np.zeros(5, int)])
    weighted = KMeans(6, random_state=0, **kwargs).fit(X, sample_weight=w)
    repeated = KMeans(6, random_state=0, **kwargs).fit(np.repeat(X, w, axis=0))
    ref = SKLearnKMeans(6, n_init=10, random_state=0).fit(X, sample_weight=w)
    assert matched_accuracy(y[w > 0], weighted.labels_[w > 0])[0] == 1.0
    order = lambda c: c[np.lexsort(c[:, :3].T)]  # noqa: E731
    np.testing.assert_allclose(
        order(weighted.cluster_centers_), order(repeated.cluster_centers_), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        order(weighted.cluster_centers_), order(ref.cluster_centers_), rtol=1e-5, atol=1e-5
    )
    assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-6)
    assert weighted.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)
    assert weighted.score(X, sample_weight=w) == pytest.approx(-weighted.inertia_, rel=1e-6)
    # All ones is the unweighted fit, bit for bit.
    plain = KMeans(6, random_state=0, **kwargs).fit(X)
    ones = KMeans(6, random_state=0, **kwargs).fit(X, sample_weight=np.ones(len(X)))
    np.testing.assert_array_equal(plain.cluster_centers_, ones.cluster_centers_)


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1.0, -1.0, 1.0, 1.0], "Negative values"),
        ([0.0] * 4, "at least one non-zero"),
        ([1.0] * 3, r"expected \(4,\)"),
        ([1.0, np.nan, 1.0, 1.0], "NaN"),
    ],
)
def test_kmeans_bad_sample_weight(weights, message):
    with pytest.raises(ValueError, match=message):
        KMeans(2).fit(np.arange(8.0).reshape(4, 2), sample_weight=weights)


@pytest.mark.parametrize("scale", [1.0, 1e20, 1e-30])
def test_kmeans_transform_counts_features_constant_in_the_training_data(scale):
    """The scale-aware transform once measured only the features that vary in the training
    data; a query differing in a constant one (MNIST's border, inked) got too short a distance."""
    rng = np.random.default_rng(9)
    X = rng.normal(size=(200, 5))
    X[:, 0] = 3.0
    model = KMeans(3, random_state=0).fit(X * scale)
    Q = rng.normal(size=(6, 5))
    direct = np.sqrt(((Q[:, None, :] - model.cluster_centers_[None] / scale) ** 2).sum(2))
    np.testing.assert_allclose(model.transform(Q * scale), direct * scale, rtol=1e-12)


def test_kmeans_random_state_names_and_warnings_as_sklearn():
    """A RandomState raised TypeError; get_feature_names_out was missing; duplicate points
    gave duplicate centres silently; an exact fit had inertia 1.8e-15 (or -1.8e-15)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    X, _ = make_blobs(300, n_features=4, centers=3, random_state=8)
    a = KMeans(3, random_state=np.random.RandomState(0)).fit(X)
    b = KMeans(3, random_state=np.random.default_rng(0)).fit(X)
    assert a.inertia_ == pytest.approx(b.inertia_)
    assert list(a.get_feature_names_out()) == ["kmeans0", "kmeans1", "kmeans2"]
    with pytest.raises(ValueError, match="random_state"):
        KMeans(3, random_state=-1).fit(X)
    with pytest.warns(ConvergenceWarning, match="distinct clusters"):
        KMeans(3).fit(np.ones((10, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert KMeans(10).fit(X[:10]).inertia_ == 0.0


def test_projected_restarts_match_full_space_restarts_and_sklearn():
    """On wide data the restarts run on 50 principal components, then refine in full space:
    the same clustering quality as restarts in full space (and scikit-learn)."""
    X, y = make_blobs(3000, n_features=120, centers=10, cluster_std=4.0, random_state=4)
    projected = KMeans(10, n_init=10, random_state=0).fit(X)
    full = KMeans(10, n_init=10, random_state=0, projection=None).fit(X)
    ref = SKLearnKMeans(10, n_init=10, random_state=0).fit(X)
    assert projected.inertia_ <= ref.inertia_ * (1 + 1e-4)
    assert projected.inertia_ <= full.inertia_ * (1 + 1e-4)
    assert matched_accuracy(y, projected.labels_)[0] == 1.0
    diff = X - projected.cluster_centers_[projected.labels_]
    assert projected.inertia_ == pytest.approx(float((diff * diff).sum()), rel=1e-9)
    with pytest.raises(ValueError, match="projection must be"):
        KMeans(3, projection=0).fit(X)


def test_constant_features_change_nothing():
    """A feature equal in every sample is left out of the products: same clustering, and the
    centres still carry its value (so transform and predict see every feature)."""
    X, _ = make_blobs(600, n_features=6, centers=5, random_state=2)
    padded = np.hstack([np.full((600, 1), 7.0), X, np.zeros((600, 2))])
    a = KMeans(5, random_state=0, max_iter=30).fit(X)
    b = KMeans(5, random_state=0, max_iter=30).fit(padded)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert b.cluster_centers_.shape == (5, 9)
    np.testing.assert_array_equal(b.cluster_centers_[:, 0], 7.0)
    np.testing.assert_allclose(b.cluster_centers_[:, 1:7], a.cluster_centers_, rtol=1e-6)
    assert b.inertia_ == pytest.approx(a.inertia_, rel=1e-9)
    moved = padded.copy()
    moved[:, 0] = 100.0  # new data may differ there: the same shift for every centre
    np.testing.assert_array_equal(b.predict(moved), b.labels_)
    np.testing.assert_allclose(b.transform(padded), a.transform(X), rtol=1e-6)


def test_kmeans_is_seeded():
    X, _ = make_blobs(500, n_features=5, centers=4, random_state=1)
    a = KMeans(4, random_state=7).fit(X)
    b = KMeans(4, random_state=7).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


@pytest.mark.real_data
def test_kmeans_on_mnist_close_to_sklearn(mnist):
    x, _ = random_subset(mnist.x_train, mnist.y_train, 4000, seed=0)
    X = x.reshape(len(x), -1)
    ours = KMeans(10, n_init=4, random_state=0).fit(X)
    ref = SKLearnKMeans(10, n_init=4, random_state=0).fit(X)
    assert ours.inertia_ <= ref.inertia_ * 1.005
    # inertia_ is the real float64 inertia of the returned centres and labels
    diff = X - ours.cluster_centers_[ours.labels_]
    assert ours.inertia_ == pytest.approx(float((diff * diff).sum()), rel=1e-9)


@pytest.mark.parametrize(
    "X, kwargs, message",
    [
        (np.zeros((5, 3)), {"n_clusters": 10}, "n_samples=5 should be >= n_clusters=10"),
        (np.full((20, 3), np.nan), {}, "NaN"),
        (np.zeros(20), {}, "Expected 2D array"),
        (np.zeros((0, 3)), {}, "0 sample"),
        (np.zeros((4, 3), complex), {}, "Complex data not supported"),
        (np.zeros((20, 3)), {"n_init": 0}, "n_init must be"),
    ],
)
def test_kmeans_bad_input(X, kwargs, message):
    with pytest.raises(ValueError, match=message):
        KMeans(**{"n_clusters": 3, **kwargs}).fit(X)


def test_kmeans_predict_errors():
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    for method in ("predict", "transform", "score"):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            getattr(KMeans(2), method)(np.zeros((2, 2)))
    assert issubclass(NotFittedError, SklearnNotFittedError)
    model = KMeans(2).fit(np.random.default_rng(0).random((20, 3)))
    with pytest.raises(ValueError, match="KMeans is expecting 3 features"):
        model.predict(np.zeros((2, 4)))


def test_kmeans_score_with_sample_weight():
    X = np.random.default_rng(0).random((30, 3))
    w = np.linspace(0, 2, 30)
    model = KMeans(3, random_state=0).fit(X)
    d2 = ((X - model.cluster_centers_[model.predict(X)]) ** 2).sum(1)
    assert model.score(X) == pytest.approx(-d2.sum())
    assert model.score(X, sample_weight=w) == pytest.approx(-(w * d2).sum())
    with pytest.raises(ValueError, match="sample_weight"):
        model.score(X, sample_weight=w[:-1])
    before = dict(vars(model))
    model.predict(X), model.transform(X), model.score(X)
    assert vars(model).keys() == before.keys()


@pytest.fixture
def fake(tmp_path):
    return write_fake_idx(tmp_path / "d", n_train=400, n_test=100)


def test_run_clustering_raw_and_pca(fake):
    ds = load_dataset("mnist", fake)
    for emb in ("raw", "pca"):
        r = run_clustering(ds, ClusterConfig(embedding=emb, train_size=300, pca_components=10))
        assert r["accuracy"] > 0.8  # the fake digits are easy to separate
        assert r["centre_images"].shape == (10, 28, 28)


def test_run_clustering_on_deskewed_digits(fake):
    ds = load_dataset("mnist", fake)
    plain = run_clustering(ds, ClusterConfig(train_size=300))
    straight = run_clustering(ds, ClusterConfig(train_size=300, deskew=True))
    assert straight["config"]["deskew"] and straight["accuracy"] > 0.8
    # The clusters were made of other (straightened) pictures.
    assert not np.allclose(plain["centre_images"], straight["centre_images"])


@pytest.mark.parametrize(
    "cfg, message",
    [
        (ClusterConfig(embedding="tsne", train_size=300), "embedding must be one of"),
        (ClusterConfig(n_clusters=0, train_size=300), "n_clusters must be"),
        (ClusterConfig(n_clusters=301, train_size=300), "more than the 300 samples"),
        (ClusterConfig(train_size=-1), "train_size must be"),
    ],
)
def test_bad_cluster_config(fake, cfg, message):
    with pytest.raises(ConfigError, match=message):
        run_clustering(load_dataset("mnist", fake), cfg)


def test_cli_cluster(fake, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["cluster", "--train-size", "300", "--data-dir", str(fake), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("consistency", "purity", "accuracy", "ari", "nmi"):
        assert 0 <= metrics[key] <= 1
    assert (out / "cluster_pca_scatter.png").is_file() and (out / "cluster_centres.png").is_file()
    assert "consistency (the course's score)" in capsys.readouterr().out


def test_cli_cluster_error_is_one_line(fake, tmp_path, capsys):
    assert (
        main(
            [
                "cluster",
                "--n-clusters",
                "0",
                "--train-size",
                "300",
                "--data-dir",
                str(fake),
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.count("\n") == 1


def _blobs(dtype=np.float64):
    X, _ = make_blobs(n_samples=600, centers=5, n_features=6, cluster_std=2.5, random_state=3)
    return X.astype(dtype)


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
def test_given_initial_centres_give_scikit_learns_clustering(algorithm):
    """`init` was not a parameter: KMeans(init=centres) raised TypeError. From the same start
    Lloyd's steps are deterministic, so the result is scikit-learn's."""
    X = _blobs()
    start = X[[0, 1, 2, 3, 4]]  # five samples, not one per blob: several steps to converge
    ours = KMeans(5, init=start, n_init=1, algorithm=algorithm, projection=None).fit(X)
    ref = SKLearnKMeans(5, init=start, n_init=1, algorithm="lloyd").fit(X)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-5)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)
    # A callable init is called as scikit-learn calls it, and its centres used the same way.
    seen = {}

    def chooser(data, n_clusters, random_state):
        seen.update(n=n_clusters, rs=type(random_state), rows=len(data))
        return start

    again = KMeans(5, init=chooser, n_init="auto", algorithm=algorithm, projection=None).fit(X)
    np.testing.assert_array_equal(again.labels_, ours.labels_)
    assert seen == {"n": 5, "rs": np.random.RandomState, "rows": 600}


def test_init_and_n_init_auto_as_scikit_learn():
    X = _blobs()
    start = X[:5]
    with pytest.warns(
        RuntimeWarning, match="performing only one init in KMeans instead of n_init=10"
    ):
        assert len(KMeans(5, init=start, n_init=10).fit(X).inertias_) == 1
    assert len(KMeans(5, n_init="auto").fit(X).inertias_) == 1
    random = KMeans(5, init="random", n_init="auto", random_state=0).fit(X)
    assert len(random.inertias_) == 10
    ref = SKLearnKMeans(5, init="random", n_init=10, random_state=0).fit(X)
    assert random.inertia_ == pytest.approx(ref.inertia_, rel=1e-3)
    # Weighted random starts draw only samples of weight > 0.
    w = np.zeros(len(X))
    w[:50] = 1.0
    weighted = KMeans(5, init="random", n_init=3, max_iter=1, projection=None)
    weighted.fit(X, sample_weight=w)
    assert np.isfinite(weighted.inertia_)
    for bad, message in [
        (X[:4], r"shape of the initial centers \(4, 6\)"),
        (X[:5, :3], r"shape of the initial centers \(5, 3\)"),
        ("forgy", "init must be 'k-means\\+\\+', 'random'"),
    ]:
        with pytest.raises(ValueError, match=message):
            KMeans(5, init=bad).fit(X)
    with pytest.raises(ValueError, match="n_init"):
        KMeans(5, n_init="sometimes").fit(X)


def test_dtypes_are_scikit_learns():
    """float32 data gave float64 centres and distances, and labels were int64."""
    for dtype in (np.float32, np.float64, np.uint8):
        X = _blobs(dtype) if dtype != np.uint8 else np.abs(_blobs()).astype(np.uint8)
        ours = KMeans(5, n_init=2, random_state=0).fit(X)
        ref = SKLearnKMeans(5, n_init=2, random_state=0).fit(X)
        assert ours.cluster_centers_.dtype == ref.cluster_centers_.dtype
        assert ours.transform(X).dtype == ref.transform(X).dtype
        assert ours.labels_.dtype == ref.labels_.dtype == ours.predict(X).dtype
        np.testing.assert_array_equal(ours.predict(X), ours.labels_)


@pytest.mark.real_data
def test_given_centres_on_wide_pixel_data(mnist):
    """The projected restarts (784 pixels -> 50 components) start from given centres too."""
    x, y = random_subset(mnist.x_train, mnist.y_train, 3000, 0)
    X = x.reshape(len(x), -1)
    start = np.stack([X[y == d][0] for d in range(10)]).astype(np.float64)
    ours = KMeans(10, init=start, n_init=1).fit(X)
    ref = SKLearnKMeans(10, init=start, n_init=1).fit(X.astype(np.float64))
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=0.01)


def _three_blobs():
    rng = np.random.RandomState(0)
    return np.r_[rng.randn(40, 2), rng.randn(40, 2) + 6, rng.randn(40, 2) - 6]


@pytest.mark.parametrize("scale", [1 / 120, 1e-50, 1.0, 1e40])
def test_weights_at_any_scale_give_scikit_learns_centres(scale):
    """Weights summing to under 1 in a cluster gave their sum as its centre, not their mean
    (normalised weights: inertia 23.8 against 1.93); 1e-50 vanished in float32, 1e40 gave
    nan."""
    X = _three_blobs()
    w = np.full(len(X), scale)
    init = X[[0, 40, 80]]
    ours = KMeans(3, init=init, n_init=1, projection=None).fit(X, sample_weight=w)
    ref = SKLearnKMeans(3, init=init, n_init=1).fit(X, sample_weight=w)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-9)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
    seeded = KMeans(3, n_init=10, random_state=0).fit(X, sample_weight=w)
    assert seeded.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
def test_an_empty_cluster_takes_the_farthest_sample(algorithm):
    """Empty clusters stayed empty: fewer clusters than asked and a far higher inertia (and
    the warning blamed duplicate points)."""
    rng = np.random.RandomState(0)
    X = np.r_[np.zeros((300, 2)), rng.randn(100, 2) * 3 + 8]
    init = np.array([[0.0, 0], [8, 8], [1000, 1000]])
    ours = KMeans(3, init=init, n_init=1, algorithm=algorithm, projection=None).fit(X)
    ref = SKLearnKMeans(3, init=init, n_init=1).fit(X)
    np.testing.assert_array_equal(np.bincount(ours.labels_), np.bincount(ref.labels_))
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
    for seed in range(10):
        model = KMeans(5, init="random", n_init=1, random_state=seed, algorithm=algorithm)
        assert len(np.unique(model.fit(X).labels_)) == 5


def test_max_iter_bounds_every_phase_and_given_starts_run_in_full_space():
    X = np.random.RandomState(0).rand(3000, 100)  # wider than the 50-component projection
    for max_iter in (1, 2, 5):
        assert KMeans(10, max_iter=max_iter, n_init=3).fit(X).n_iter_ <= max_iter
    init = X[:10]
    ours = KMeans(10, init=init, n_init=1).fit(X)
    ref = SKLearnKMeans(10, init=init, n_init=1).fit(X)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.n_iter_ == ref.n_iter_


def test_a_callable_init_is_called_once_per_restart():
    X = np.random.RandomState(0).rand(200, 2)
    for n_init, calls_expected in ((5, 5), ("auto", 10)):
        calls = []

        def init(data, k, random_state, calls=calls):
            calls.append(1)
            return data[random_state.choice(len(data), k, replace=False)]

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model = KMeans(4, init=init, n_init=n_init, random_state=0).fit(X)
        assert len(calls) == calls_expected == len(model.inertias_)


def test_centres_are_float64_means_of_their_clusters():
    X = _blobs()
    model = KMeans(5, init=X[:5], n_init=1, projection=None).fit(X)
    for j in range(5):
        mean = X[model.labels_ == j].mean(0)
        np.testing.assert_allclose(model.cluster_centers_[j], mean, rtol=0, atol=1e-12)


def test_random_starts_need_enough_weighted_samples():
    X = _three_blobs()
    w = np.zeros(len(X))
    w[:2] = 1
    with pytest.raises(ValueError, match="only 2 have a weight above 0"):
        KMeans(3, init="random", n_init=1).fit(X, sample_weight=w)


def test_scikit_learns_other_parameters_are_taken():
    assert set(SKLearnKMeans().get_params()) <= set(KMeans().get_params())
    X = _blobs()
    elkan = KMeans(5, algorithm="elkan", verbose=0, copy_x=False, random_state=0).fit(X)
    assert elkan.inertia_ == KMeans(5, algorithm="hamerly", random_state=0).fit(X).inertia_


@pytest.mark.parametrize(
    "params",
    [
        {"random_state": "a"},
        {"random_state": -1},
        {"random_state": 2**63},
        {"random_state": 1.5},
        {"random_state": True},
        {"tol": "a"},
    ],
)
def test_kmeans_bad_seed_or_tol_is_sklearns_invalid_parameter_error(params):
    """random_state="a" raised a plain ConfigError (scikit-learn raises InvalidParameterError)
    and tol="a" Python's bare "'>=' not supported"; both are now the parameter error, which
    is still a ValueError, a TypeError and a ConfigError."""
    from sklearn.utils._param_validation import InvalidParameterError

    X, _ = make_blobs(60, n_features=4, centers=3, random_state=8)
    with pytest.raises(InvalidParameterError) as raised:
        KMeans(3, **params).fit(X)
    assert isinstance(raised.value, ConfigError)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, TypeError)
    name = next(iter(params))
    assert str(raised.value).startswith(f"{name} must be")


@pytest.mark.parametrize(
    "seed", [None, 0, np.int64(3), 2**63 - 1, np.random.RandomState(1), np.random.default_rng(1)]
)
def test_kmeans_takes_every_seed_it_documents(seed):
    X, _ = make_blobs(60, n_features=4, centers=3, random_state=8)
    assert KMeans(3, random_state=seed, n_init=1).fit(X).cluster_centers_.shape == (3, 4)
