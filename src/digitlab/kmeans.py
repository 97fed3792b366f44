"""k-means (fast, seeded, scikit-learn's algorithm) and PCA for pictures of the clusters.

`KMeans` runs its `n_init` restarts *together*: each Lloyd step is one matrix product of the
data with all restarts' centres (n_init * k columns), which a CPU multiplies far more
efficiently than n_init products of k columns each. On wide data (MNIST's 784 pixels) the
restarts run on the top 50 principal components, and only the best two continue in full
space, with Hamerly's bounds, which skip the samples whose centre cannot change. Initialisation
is scikit-learn's greedy k-means++; convergence uses its tolerance (a fraction of the mean
feature variance); the best restart by full-space inertia wins. Distances are float32
products, on data scaled (and, far from the origin, shifted) to where float32 holds them;
inertia is reported in float64, in the caller's units.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from digitlab import errors
from digitlab.device import requested_threads, resolve_device, threads
from digitlab.validation import MAX_SEED, check_seed, images_as_rows, is_whole, whole_number

INITS = ("k-means++", "random")
# scikit-learn's "elkan" is Lloyd's algorithm with distance bounds, as Hamerly's is.
ALGORITHMS = ("hamerly", "lloyd", "elkan")
WARM_STEPS = 12  # lockstep steps before Hamerly: by then ~20% of samples still need distances
REFINE = 2  # projected restarts refined in full space (best first by full-space inertia)


def _conditioning(X: np.ndarray) -> tuple[np.ndarray | float, float]:
    """(offset, scale) that bring X (n, d) to where float32 holds it: (X - offset) * scale.

    k-means' answer does not change when the data are shifted or scaled, so the products run
    on conditioned values and the centres and inertia are mapped back (scikit-learn, in
    float64, centres its data for the same reason). The scale is a power of two, which is
    exact, and taken only when the largest |value| is outside 2**-32..2**32 (squares of data
    near 1e20 overflow float32, of data near 1e-30 underflow); the offset (the feature means,
    float64) only when the data sit far from the origin for their spread (values near 1e8 with
    unit spread keep nothing of it in float32). MNIST's pixels get neither: whole numbers stay
    whole and the clustering is what it was.
    """
    if X.size == 0:
        return 0.0, 1.0
    # Column extremes, not |X - mean|: no n-by-d temporary for 20,000 MNIST rows.
    low, high = X.min(0).astype(np.float64), X.max(0).astype(np.float64)
    peak = float(np.maximum(-low, high).max())
    offset: np.ndarray | float = 0.0
    mean = X.mean(0, dtype=np.float64)
    spread = float(np.maximum(mean - low, high - mean).max())
    if peak > 16 * spread:
        offset, peak = mean, spread
    if not (peak > 0 and math.isfinite(peak)) or 2.0**-32 <= peak <= 2.0**32:
        return offset, 1.0
    return offset, 2.0 ** -math.frexp(peak)[1]


def _conditioned(X: np.ndarray, offset, scale: float, dtype=np.float32) -> np.ndarray:
    """(X - offset) * scale as a C-contiguous `dtype` array; X itself is never changed."""
    if isinstance(offset, float) and offset == 0.0 and scale == 1.0:
        return np.ascontiguousarray(X, dtype=dtype)
    return np.ascontiguousarray((np.asarray(X, np.float64) - offset) * scale, dtype=dtype)


def _float_of(X: np.ndarray) -> type:
    """The float dtype scikit-learn keeps for X's results: float32 stays, others float64."""
    return np.float32 if X.dtype == np.float32 else np.float64


def _weights(sample_weight, X: np.ndarray) -> np.ndarray | None:
    """sample_weight checked as scikit-learn checks it: (n,) float64, finite, >= 0, not all
    zero; None when it is None or all ones (the unweighted path, bit for bit)."""
    if sample_weight is None:
        return None
    w = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    return None if (w == 1).all() else w


def _seed(random_state) -> int:
    """A torch seed from scikit-learn's random_state: an int (itself), None (fresh entropy) or
    a numpy RandomState / Generator (one draw from it, so repeated fits differ, as there)."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy % 2**63)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    return check_seed(random_state, "random_state")


def _weighted(values: torch.Tensor, w) -> torch.Tensor:
    """values (n, ...) times each sample's weight w (n,); values as they are without weights."""
    if w is None:
        return values
    return values * w.reshape(-1, *([1] * (values.dim() - 1)))


def _sq_dist(x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances (n, m) from rows of x to rows of c, clamped at zero."""
    return (x_sq[:, None] - 2 * (x @ c.T) + (c * c).sum(1)[None, :]).clamp_(min=0)


def _kmeans_plusplus(x, x_sq, k: int, n_init: int, gen: torch.Generator, w=None) -> torch.Tensor:
    """Greedy k-means++ (scikit-learn's), for `n_init` restarts in lockstep: (n_init, k, d).

    Each step draws 2 + ln(k) candidates per restart with probability proportional to the
    squared distance to the nearest chosen centre (times the sample's weight `w`, (n,) float64,
    when given, as scikit-learn >= 1.3) and keeps the one that lowers the potential most. All
    restarts' candidates are measured in one matrix product.
    """
    n = len(x)
    trials = 2 + int(math.log(k))
    if w is None:
        first = torch.randint(n, (n_init,), generator=gen, device=x.device)
    else:
        first = torch.multinomial(w, n_init, replacement=True, generator=gen)
    chosen = [first]
    closest = _sq_dist(x, x_sq, x[first])  # (n, n_init)
    for _ in range(1, k):
        cum = torch.cumsum(_weighted(closest.double(), w), 0)  # (n, n_init)
        u = torch.rand(n_init, trials, generator=gen, device=x.device, dtype=torch.float64)
        u = u * cum[-1][:, None]
        cand = torch.searchsorted(cum.T.contiguous(), u).clamp_(max=n - 1)  # (n_init, trials)
        d = _sq_dist(x, x_sq, x[cand.reshape(-1)]).reshape(n, n_init, trials)
        new_closest = torch.minimum(closest[:, :, None], d)
        best = _weighted(new_closest.double(), w).sum(0).argmin(1)  # (n_init,)
        rows = torch.arange(n_init, device=x.device)
        closest = new_closest[:, rows, best]
        chosen.append(cand[rows, best])
    return x[torch.stack(chosen, 1)]  # (n_init, k, d)


def _top2(x, x_sq, c):
    """Index of the nearest centre and the distances to the nearest and second nearest."""
    d = (torch.addmm((c * c).sum(1)[None, :], x, c.T, alpha=-2) + x_sq[:, None]).clamp_(min=0)
    vals, idx = torch.topk(d, min(2, len(c)), dim=1, largest=False)
    second = vals[:, 1] if len(c) > 1 else torch.full_like(vals[:, 0], float("inf"))
    return idx[:, 0], vals[:, 0].sqrt(), second.sqrt()


def _nonzero(counts: torch.Tensor) -> torch.Tensor:
    """counts with its zeros as ones, to divide by where a `torch.where` keeps the old centre
    (clamping at 1 once turned a cluster's weights summing to 0.3 into a sum, not a mean)."""
    return torch.where(counts > 0, counts, torch.ones_like(counts))


def _relocate(labels, far, x, sums, counts, w=None) -> torch.Tensor:
    """scikit-learn's relocation of empty clusters, in place: each empty cluster of one
    restart takes the sample farthest from its centre (`far` (n,), squared distances), which
    leaves its old cluster (sums (k, d) and counts (k,) as a weighted mean's parts; x (n, d)
    in the sums' dtype; w (n,) the weights or None). Returns the samples moved."""
    empty = torch.nonzero(counts <= 0).flatten()
    moved = torch.argsort(far, descending=True, stable=True)[: len(empty)]
    for e, i in zip(empty.tolist(), moved.tolist(), strict=False):
        weight = 1.0 if w is None else float(w[i])
        row = x[i].to(sums.dtype) * weight
        sums[labels[i]] -= row
        counts[labels[i]] -= weight
        sums[e], counts[e] = row, weight
        labels[i] = e
    return moved


def _hamerly(x, x_sq, x64, c, tol: float, max_iter: int, w=None):
    """Lloyd's algorithm with Hamerly's bounds (one restart); returns (centres, iterations).

    x64 is x in float64; with weights `w` (n,) float64 the cluster sums add weighted rows and
    the counts are sums of weights.

    Each sample keeps an upper bound on the distance to its centre and a lower bound on the
    distance to any other; when the upper bound is below both the lower bound and half the
    distance from its centre to the nearest other centre, its assignment cannot change and its
    distances are not computed. After the first steps that is most samples. Cluster sums are
    updated only for the samples that move (float64, so no drift).
    """
    n, k = len(x), len(c)
    a, u, lo = _top2(x, x_sq, c)
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
    sums.index_add_(0, a, _weighted(x64, w))
    counts = torch.bincount(a, weights=w, minlength=k).double()
    eps = 1e-4  # bounds come from float32 products: keep a small relative safety margin
    n_iter = max_iter
    for it in range(max_iter):
        if bool((counts <= 0).any()):  # scikit-learn's move: the farthest samples start them
            moved = _relocate(a, ((x64 - c.double()[a]) ** 2).sum(1), x64, sums, counts, w)
            u[moved] = float("inf")  # their distances are measured again
        new = torch.where(counts[:, None] > 0, sums / _nonzero(counts)[:, None], c.double())
        new = new.float()
        move = ((new - c) ** 2).sum(1)
        c = new
        if float(move.sum()) <= tol:
            n_iter = it + 1
            break
        move = move.sqrt()
        u += move[a]
        lo -= move.max()
        cc = torch.cdist(c, c)
        cc.fill_diagonal_(float("inf"))
        bound = torch.maximum(0.5 * cc.min(1).values[a], lo) * (1 - eps)
        unsure = u > bound
        n_unsure = int(unsure.sum())
        if n_unsure == 0:
            continue
        if n_unsure > n // 4:  # a gather would cost more than the product it saves
            cand = torch.arange(n, device=x.device)
            na, nu, nl = _top2(x, x_sq, c)
        else:
            cand = torch.nonzero(unsure).flatten()
            na, nu, nl = _top2(x[cand], x_sq[cand], c)
        old = a[cand]
        moved = torch.nonzero(na != old).flatten()
        if len(moved):
            who, to, frm = cand[moved], na[moved], old[moved]
            moved_w = None if w is None else w[who]
            rows = _weighted(x64[who], moved_w)
            sums.index_add_(0, to, rows)
            sums.index_add_(0, frm, -rows)
            counts += torch.bincount(to, weights=moved_w, minlength=k)
            counts -= torch.bincount(frm, weights=moved_w, minlength=k)
        a[cand], u[cand], lo[cand] = na, nu * (1 + eps), nl
    return c, n_iter


class KMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means with scikit-learn's interface: `fit`, `predict`, `transform`, `inertia_`.

    Parameters: n_clusters, init ("k-means++", scikit-learn's greedy one; "random": n_clusters
    distinct samples (drawn by weight with sample_weight); an array (n_clusters, n_features);
    or a callable `init(X, n_clusters, random_state)` returning one), n_init (restarts, best
    inertia kept; "auto": 1, or 10 with init="random" or a callable, as scikit-learn; a
    callable is called once per restart; an array runs once, with scikit-learn's
    RuntimeWarning when n_init asked for more), max_iter,
    tol (relative to the mean feature variance, as scikit-learn), random_state, algorithm
    ("hamerly": Lloyd's iterations, skipping the samples whose distance bounds prove their
    centre unchanged; "lloyd": every distance every step, all restarts in one product),
    projection (run the restarts on this many principal components, then refine the best in
    full space; None: restarts in full space; not used with given starts), device, threads
    (None: $DIGITLAB_THREADS if set, else PyTorch's current setting), and scikit-learn's
    verbose (no effect) and copy_x (no effect: X is never changed). An empty cluster takes
    the sample farthest from its centre, as in scikit-learn. The centres returned are float64
    means of their clusters' samples; the steps that found them ran in float32.

    Input: X is (n_samples, n_features) numeric, any dtype (uint8 pixels are converted to
    float32 once, inside `fit`), or images (n, h, w), flattened to h*w features. Dense only:
    a scipy sparse X raises scikit-learn's TypeError ("Sparse data was passed ..."). Errors:
    `digitlab.errors.InvalidParameterError` for a bad parameter (a subclass of scikit-learn's,
    so of ValueError and TypeError), ValueError for bad data, and
    `digitlab.errors.NotFittedError`, a subclass of `sklearn.exceptions.NotFittedError`, when
    used before `fit`. It passes scikit-learn's
    `check_estimator` (tests/test_sklearn_contract.py), sample-weight checks included.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init="k-means++",
        n_init: int | str = 10,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | None = 0,
        algorithm: str = "hamerly",
        projection: int | None = 50,
        device: str = "auto",
        threads: int | None = None,
        verbose: int = 0,
        copy_x: bool = True,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.algorithm = algorithm
        self.projection = projection
        self.device = device
        self.threads = threads
        self.verbose = verbose
        self.copy_x = copy_x

    def _check_params(self, n: int) -> None:
        for name in ("n_clusters", "max_iter"):
            whole_number(name, getattr(self, name), error=errors.InvalidParameterError)
        if not (isinstance(self.n_init, str) and self.n_init == "auto"):
            whole_number("n_init", self.n_init, error=errors.InvalidParameterError)
        if isinstance(self.init, str) and self.init not in INITS:
            raise errors.InvalidParameterError(
                f"init must be 'k-means++', 'random', an array of shape (n_clusters, "
                f"n_features) or a callable, got {self.init!r}"
            )
        if self.n_clusters > n:  # the data's fault, not the parameter's: scikit-learn's ValueError
            raise ValueError(
                f"n_samples={n} should be >= n_clusters={self.n_clusters}: cannot make "
                f"{self.n_clusters} clusters from {n} samples"
            )
        if self.algorithm not in ALGORITHMS:
            raise errors.InvalidParameterError(
                f"algorithm must be 'hamerly' ('elkan' is taken as it) or 'lloyd', got "
                f"{self.algorithm!r}"
            )
        real = isinstance(self.tol, numbers.Real) and not isinstance(self.tol, (bool, np.bool_))
        if not (real and self.tol >= 0):  # tol="a" was Python's bare "'>=' not supported"
            raise errors.InvalidParameterError(f"tol must be a number >= 0, got {self.tol!r}")
        # Checked here, with the other parameters, so a bad one is scikit-learn's
        # InvalidParameterError (`_seed` in fit raised a plain ConfigError for it).
        if not (
            self.random_state is None
            or isinstance(self.random_state, (np.random.RandomState, np.random.Generator))
            or (is_whole(self.random_state, 0) and self.random_state <= MAX_SEED)
        ):
            raise errors.InvalidParameterError(
                "random_state must be None, a whole number in 0..2**63 - 1 or a numpy "
                f"RandomState or Generator, got {self.random_state!r}"
            )
        if self.projection is not None:
            whole_number("projection", self.projection, error=errors.InvalidParameterError)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # MNIST pixels are dense; sparse X is refused in fit
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]  # as scikit-learn's
        return tags

    def _restarts_and_start(self, X: np.ndarray) -> tuple[int, np.ndarray | None]:
        """(restarts, the given initial centres (restarts, n_clusters, n_features) float64 or
        None). A callable init is called once per restart with one RandomState (so each call
        differs), as scikit-learn calls it; an array runs once."""
        init = self.init
        if isinstance(init, str):
            auto = 10 if init == "random" else 1
            return (auto if self.n_init == "auto" else int(self.n_init)), None
        if callable(init):
            restarts = 10 if self.n_init == "auto" else int(self.n_init)
            rs = np.random.RandomState(self._fit_seed % 2**32)
            starts = [init(X, self.n_clusters, random_state=rs) for _ in range(restarts)]
        else:
            restarts, starts = 1, [init]
            if self.n_init != "auto" and self.n_init != 1:
                warnings.warn(  # scikit-learn's warning, in its words
                    "Explicit initial center position passed: performing only one init in "
                    f"{type(self).__name__} instead of n_init={self.n_init}.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        starts = [np.asarray(one, dtype=np.float64) for one in starts]
        for start in starts:
            if start.shape != (self.n_clusters, X.shape[1]):
                raise ValueError(
                    f"The shape of the initial centers {start.shape} does not match the "
                    f"number of clusters {self.n_clusters} and features {X.shape[1]}: init "
                    f"must be (n_clusters, n_features)"
                )
            if not np.isfinite(start).all():
                raise ValueError("init holds NaN or infinity")
        return restarts, np.stack(starts)

    def _start(self, x, x_sq, r: int, gen: torch.Generator, w, given) -> torch.Tensor:
        """The restarts' first centres (r, k, d) in x's space: `given` (r, k, d), n_clusters
        distinct rows for "random", else greedy k-means++."""
        k = self.n_clusters
        if given is not None:
            return given.clone()
        if isinstance(self.init, str) and self.init == "random":
            if w is not None and int((w > 0).sum()) < k:
                raise ValueError(
                    f"init='random' draws {k} distinct samples by weight, but only "
                    f"{int((w > 0).sum())} have a weight above 0"
                )
            if w is None:
                rows = [
                    torch.randperm(len(x), generator=gen, device=x.device)[:k] for _ in range(r)
                ]
            else:
                rows = [torch.multinomial(w, k, replacement=False, generator=gen) for _ in range(r)]
            return x[torch.stack(rows)].clone()
        return _kmeans_plusplus(x, x_sq, k, r, gen, w)

    def fit(self, X, y=None, sample_weight=None) -> KMeans:
        """Cluster X (n_samples, n_features); y is ignored. Returns self.

        sample_weight (n_samples,), non-negative, not all zero (default: all 1): each
        sample's weight in the k-means++ draws, the centres (weighted means) and the inertia,
        as scikit-learn's; the tolerance stays unweighted, as there. Learns cluster_centers_
        (n_clusters, n_features) (float32 for float32 X, else float64), labels_ (n_samples,)
        int32, inertia_ (float, the (weighted) sum of squared distances to the nearest
        centre), inertias_ (restarts,), n_iter_ (at most max_iter) and n_features_in_. Raises
        ValueError for bad parameters, data, weights or initial centres."""
        X = validate_data(self, images_as_rows(X, self), dtype="numeric")
        self._check_params(len(X))
        w = _weights(sample_weight, X)
        # Weights scaled by a power of two to a largest of [0.5, 1) (exact; the centres do
        # not change): weights near 1e-50 vanished in the float32 sums and 1e40 overflowed.
        w_unit = 1.0 if w is None else 2.0 ** math.frexp(float(w.max()))[1]
        w = None if w is None else w / w_unit
        device = resolve_device(self.device)
        self._fit_seed = _seed(self.random_state)
        restarts, start = self._restarts_and_start(X)
        gen = torch.Generator(device=device).manual_seed(self._fit_seed)
        with threads(requested_threads(self.threads)):
            # A feature equal in every sample (MNIST's blank border) adds the same to every
            # distance and stays at that value in every centre: leave it out of the products.
            varying = ~(X[:1] == X).all(0)
            offset, scale = _conditioning(X[:, varying])
            x = torch.from_numpy(_conditioned(X[:, varying], offset, scale)).to(device)
            x_sq = (x * x).sum(1)
            x64 = x.double()  # cluster sums and the inertia, without drift
            total_sq = float(torch.dot(x64.flatten(), x64.flatten()))
            mean = x64.mean(0)
            # scikit-learn's tolerance: a fraction of the mean variance (np.var) over *all*
            # features; the constant ones have none. Unweighted, as there.
            variance = total_sq / len(x) - float(mean @ mean)
            if w is not None:
                w = torch.from_numpy(w).to(device)
            tol = float(self.tol * variance / X.shape[1])
            r = restarts
            if start is not None:  # in the conditioned units of x, as the data
                start = _conditioned(start[:, :, varying], offset, scale)
                start = torch.from_numpy(start).to(device)
            # Given starts run where they were given (scikit-learn's answer from them); the
            # projection only speeds up many restarts from k-means++ or random ones.
            project = start is None and self.projection is not None
            if project and min(len(x), x.shape[1]) > self.projection:
                centres, n_iter = self._fit_projected(x, x_sq, x64, tol, gen, w, r)
            elif self.algorithm == "lloyd":
                centres = self._start(x, x_sq, r, gen, w, start)  # (r, k, d)
                centres, n_iter, _ = self._lloyd(x, x_sq, centres, tol, self.max_iter, w)
            else:
                centres = self._start(x, x_sq, r, gen, w, start)  # (r, k, d)
                # The first steps move most samples, so bounds save nothing yet: take them in
                # lockstep (one wide product for all restarts is several times faster than
                # n_init narrow ones), then let Hamerly's bounds skip the settled samples.
                warm = min(self.max_iter, WARM_STEPS)
                centres, n_iter, active = self._lloyd(x, x_sq, centres, tol, warm, w)
                unfinished = active.cpu().numpy() & (self.max_iter > warm)
                left = self.max_iter - warm
                for j in np.flatnonzero(unfinished):
                    centres[j], more = _hamerly(x, x_sq, x64, centres[j], tol, left, w)
                    n_iter[j] += more
            labels, dist = self._assign(x, x_sq, centres, with_dist=True)
            inertias = _weighted(dist.double(), w).sum(0)  # to rank the restarts
            best = int(torch.argmin(inertias))
            # The winner's centres as float64 means of its clusters (float32 sums carried
            # only float32's 7 digits into float64 centres), from X itself where float32
            # rounded it; then its labels under them.
            data = x64
            if X.dtype == np.float64:
                data = torch.from_numpy(_conditioned(X[:, varying], offset, scale, np.float64)).to(
                    device
                )
            centre = self._means64(data, labels[:, best], centres[best], w)
            label = self._assign(x, x_sq, centre.float()[None])[:, 0]
            inertia = self._inertia(data, centre, label, w) * w_unit
        full = np.repeat(np.asarray(X[:1], np.float64), self.n_clusters, axis=0)
        full[:, varying] = centre.cpu().numpy() / scale + offset
        # scikit-learn's dtypes: float32 data keep float32 centres (others float64); int32
        # labels.
        self.cluster_centers_ = full.astype(_float_of(X), copy=False)
        self._units = (offset, scale, varying)
        self.labels_ = label.cpu().numpy().astype(np.int32)
        # Back to the caller's units (two divisions: scale**2 itself may overflow). Data near
        # 1e300 have an inertia float64 cannot hold: inf, as it is, without a warning.
        self.inertia_ = float(inertia) / scale / scale
        with np.errstate(over="ignore"):
            self.inertias_ = inertias.cpu().double().numpy() * w_unit / scale / scale
        self.n_iter_ = int(n_iter[best])
        found = len(np.unique(self.labels_))
        if found < self.n_clusters:  # scikit-learn's warning, in its words
            warnings.warn(
                f"Number of distinct clusters ({found}) found smaller than n_clusters "
                f"({self.n_clusters}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    @property
    def _n_features_out(self) -> int:
        """Output columns of `transform` (for get_feature_names_out: kmeans0, kmeans1, ...)."""
        return self.cluster_centers_.shape[0]

    def _fit_projected(self, x, x_sq, x64, tol: float, gen: torch.Generator, w, r: int):
        """Restarts on the top principal components, the best refined in full space.

        k-means++ and Lloyd's steps for all restarts run on a `projection`-dimensional PCA of
        the data (MNIST: 50 of 717 varying pixels, 14x fewer flops per step, same basins). Each
        restart's clusters then give full-space means, ranked by their full-space inertia, and
        the best REFINE continue in full space with Hamerly's bounds until they converge there.
        """
        k = self.n_clusters
        sample = x[torch.randperm(len(x), generator=gen, device=x.device)[:4096]]
        mu = sample.mean(0)
        centred = sample - mu
        _, vecs = torch.linalg.eigh(centred.T @ centred)
        p = (x - mu) @ vecs[:, -self.projection :]
        p_sq = (p * p).sum(1)
        centres = self._start(p, p_sq, r, gen, w, None)
        centres, n_iter, _ = self._lloyd(p, p_sq, centres, tol, self.max_iter, w)
        labels = self._assign(p, p_sq, centres)  # (n, r)
        full = self._centres(x, labels, mu.expand(r, k, -1), w)  # an empty cluster: the mean
        _, dist = self._assign(x, x_sq, full, with_dist=True)
        for j in torch.argsort(_weighted(dist.double(), w).sum(0))[:REFINE].tolist():
            left = self.max_iter - int(n_iter[j])  # both phases count against max_iter
            if left > 0:
                full[j], more = _hamerly(x, x_sq, x64, full[j].clone(), tol, left, w)
                n_iter[j] += more
        return full, n_iter

    @staticmethod
    def _lloyd(x, x_sq, centres, tol, max_iter, w=None):
        """Plain Lloyd steps for all restarts at once (one product per step).

        Returns the centres, each restart's step count and which restarts have not converged.
        """
        r = len(centres)
        active = torch.ones(r, dtype=torch.bool, device=x.device)
        n_iter = np.zeros(r, dtype=int)
        for it in range(max_iter):
            idx = torch.nonzero(active).flatten()
            labels = KMeans._assign(x, x_sq, centres[idx])  # (n, active restarts)
            new = KMeans._centres(x, labels, centres[idx], w)
            shift = ((new - centres[idx]) ** 2).sum((1, 2))
            centres[idx] = new
            n_iter[idx.cpu().numpy()] = it + 1
            active[idx[shift <= tol]] = False
            if not active.any():
                break
        return centres, n_iter, active

    @staticmethod
    def _assign(x, x_sq, centres, with_dist: bool = False):
        """Nearest centre of each sample, for every restart at once: (n, restarts).

        Ranking needs only |c|^2 - 2 x.c (|x|^2 is the same for every centre of a row), which
        is one fused multiply-add; with `with_dist`, also the squared distance to it.
        """
        r, k, d = centres.shape
        flat = centres.reshape(r * k, d)
        # Centres by samples, so the minimum runs over k slices of n contiguous values (a
        # minimum over an innermost axis of 10 measured several times slower).
        score = torch.addmm((flat * flat).sum(1)[:, None], flat, x.T, alpha=-2)
        best, labels = score.view(r, k, len(x)).min(1)  # (r, n)
        if with_dist:
            return labels.T, (best + x_sq[None, :]).clamp_(min=0).T
        return labels.T

    @staticmethod
    def _centres(x, labels, old, w=None) -> torch.Tensor:
        """(Weighted) means of each restart's clusters; an empty cluster (or one of weight 0)
        takes the sample farthest from its centre, as scikit-learn's (`_relocate`; `labels`
        changes with it).

        The sums are one product with a one-hot membership matrix (exact for pixel data:
        20,000 values of at most 255 stay below 2**24 in float32), its ones the weights `w`
        (n,) when given.
        """
        r, k, d = old.shape
        cols = labels + torch.arange(r, device=x.device) * k  # (n, r): column per restart
        onehot = torch.zeros(len(x), r * k, device=x.device)
        if w is None:
            onehot.scatter_(1, cols, 1.0)
        else:
            onehot.scatter_(1, cols, w.float()[:, None].expand(-1, r).contiguous())
        sums = (onehot.T @ x).view(r, k, d)
        counts = onehot.sum(0).view(r, k)
        for j in torch.nonzero((counts <= 0).any(1)).flatten().tolist():
            far = ((x - old[j][labels[:, j]]) ** 2).sum(1)
            column = labels[:, j].clone()
            _relocate(column, far, x, sums[j], counts[j], w)
            labels[:, j] = column
        means = sums / _nonzero(counts)[..., None]
        return torch.where(counts[..., None] > 0, means, old)

    @staticmethod
    def _means64(x64, labels, centres, w=None) -> torch.Tensor:
        """(k, d) float64: each cluster's (weighted) mean of x64 under `labels`; an empty
        cluster keeps its centre from `centres` (k, d)."""
        k = len(centres)
        sums = torch.zeros(k, x64.shape[1], dtype=torch.float64, device=x64.device)
        sums.index_add_(0, labels, _weighted(x64, w))
        counts = torch.bincount(labels, weights=w, minlength=k).double()
        means = sums / _nonzero(counts)[:, None]
        return torch.where(counts[:, None] > 0, means, centres.double())

    @staticmethod
    def _inertia(x64, centres, labels, w=None) -> float:
        """sum_i w_i |x_i - c(i)|^2 in float64, from the differences themselves (no
        cancellation: ten samples in ten clusters give 0, not 1.8e-15), in blocks of rows so
        that no n-by-d temporary is made."""
        c = centres.double()
        total = 0.0
        for s in range(0, len(x64), 4096):
            diff = x64[s : s + 4096] - c[labels[s : s + 4096]]
            sq = (diff * diff).sum(1)
            total += float(sq.sum() if w is None else (sq * w[s : s + 4096]).sum())
        return total

    def _check_query(self, X) -> np.ndarray:
        """X checked as scikit-learn checks it (fitted, dense, finite, same features)."""
        try:
            check_is_fitted(self)
        except SklearnNotFittedError as exc:
            raise errors.NotFittedError(str(exc)) from None
        return validate_data(
            self, images_as_rows(X, self, reset=False), dtype="numeric", reset=False
        )

    def transform(self, X) -> np.ndarray:
        """Euclidean distances (n_samples, n_clusters) to every centre: float32 for float32
        X, else float64 (scikit-learn's dtypes)."""
        X = self._check_query(X)
        offset, scale, varying = self._fitted_conditioning()
        # In the fit's units: distances of data near 1e-160 or 1e200 neither under- nor
        # overflow, and data far from the origin keeps its spread. Every feature counts: a
        # query differs from the centres in the features constant in the training data too
        # (shifted there by their constant, which changes no distance).
        shift = self.cluster_centers_[0].copy()
        shift[varying] = offset
        x = torch.from_numpy(_conditioned(X, shift, scale, np.float64))
        c = torch.from_numpy(_conditioned(self.cluster_centers_, shift, scale, np.float64))
        return (torch.cdist(x, c).numpy() / scale).astype(_float_of(X), copy=False)

    def predict(self, X) -> np.ndarray:
        """Index of the nearest centre (n_samples,) int32 (scikit-learn's dtype)."""
        X = self._check_query(X)
        device = resolve_device(self.device)
        offset, scale, varying = self._fitted_conditioning()
        with threads(requested_threads(self.threads)):
            # The fit's float32 values: predict(X) on the training data gives labels_.
            x = torch.from_numpy(_conditioned(X[:, varying], offset, scale)).to(device)
            centres = _conditioned(self.cluster_centers_[:, varying], offset, scale)
            c = torch.from_numpy(centres).to(device)
            labels = self._assign(x, (x * x).sum(1), c[None])[:, 0]
            return labels.cpu().numpy().astype(np.int32)

    def _fitted_conditioning(self):
        """(offset, scale, varying columns) of the fit; set by `fit`, or for centres set by
        hand, worked out from them."""
        if not hasattr(self, "_units"):
            centres = self.cluster_centers_
            varying = np.ones(centres.shape[1], bool)
            return (*_conditioning(centres), varying)
        return self._units

    def score(self, X, y=None, sample_weight=None) -> float:
        """Minus the inertia of X under the fitted centres (scikit-learn's convention).

        sample_weight (n_samples,) weights each sample's squared distance (default: all 1).
        """
        X = self._check_query(X)
        weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        labels = self.predict(X)
        diff = np.asarray(X, np.float64) - self.cluster_centers_[labels]
        return -float(weight @ (diff * diff).sum(1))
