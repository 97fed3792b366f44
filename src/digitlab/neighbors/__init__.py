"""Exact k-nearest-neighbour classification, a drop-in for scikit-learn's brute-force kNN.

How it stays exact and fast on pixels (integers 0..255):
- Shifting every pixel by -128 leaves distances unchanged and bounds each dot product by
  784 * 128 * 128 < 2**24, so a float32 matrix multiply computes it *exactly*, whatever the
  summation order of the BLAS. No float64 is needed, and that is most of the speed.
- The ranking key `dot - |t|^2 / 2` (larger is closer) is rounded once to float32, and rounding
  is monotone, so the exact top k+1 always lies among the top `k + margin` rounded keys unless
  the rounded keys themselves tie across that margin. Those candidates get their exact integer
  distances; rows where the margin is not proven safe, or whose k+1 nearest distances tie,
  are re-ranked from the full exact distance row with the very operations scikit-learn uses
  (`np.argpartition`, then `np.argsort`), so even tied neighbours match it.
- Queries are processed in chunks sized by a memory bound; the full test x train distance
  matrix is never built.
Float features (after PCA, say) are shortlisted with a float32 product and ranked by float64
distances; there, as in any floating-point kNN, exact ties are not promised.

Which of two tied neighbours scikit-learn keeps depends on the input dtype: for uint8 (and any
non-float) data it ranks with `np.argpartition`; when the training and query arrays are both
float32 or both float64 it uses its `ArgKmin` heaps, which keep the lower training index. Rows
with tied distances are re-ranked the way scikit-learn would rank that dtype (see
`_rank_ties_like_sklearn`), so whole-number pixels match it whatever their dtype.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import csr_matrix
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    _num_samples,
    check_is_fitted,
    validate_data,
)

from digitlab import errors
from digitlab.device import (
    ThreadPicker,
    available_cpus,
    check_threads,
    probe_threads,
    requested_threads,
    resolve_device,
    run_in_threads,
    threads,
)
from digitlab.neighbors.bounds import (
    BoundIndex,
    compiled_top_keys,
    nearest,
    preload_scan,
    warm_scan,
)
from digitlab.validation import images_as_rows, whole_number

_SHIFT = 128.0
_EXACT_WIDTH = 1024  # pixel columns whose float32 dot products stay exact
_MARGIN = 8  # extra candidates per row; proven enough row by row, or the row falls back
KERNELS = ("auto", "float32", "int8")
# "brute" is scikit-learn's name for the exact search over every training sample: our "full".
ALGORITHMS = ("auto", "brute", "full", "pruned")
# minkowski only with p=2, which is the euclidean metric; "l2" is scikit-learn's other name.
METRICS = ("euclidean", "minkowski", "l2")


def _as_pixels(X: np.ndarray) -> np.ndarray | None:
    """X as uint8 when every value is an integer in 0..255 (exact path), else None."""
    if X.dtype == np.uint8:
        return X
    if X.dtype == bool:
        return X.astype(np.uint8)
    lo, hi = X.min(), X.max()
    if lo < 0 or hi > 255:
        return None
    if np.issubdtype(X.dtype, np.floating) and not np.array_equal(X, np.round(X)):
        return None
    return X.astype(np.uint8)


@dataclass
class _Neighbors:
    """Squared distances (float64, exact on pixels) and indices, nearest first, for one k."""

    sq_dist: np.ndarray
    ind: np.ndarray
    fallback: np.ndarray | None = None  # query rows re-ranked from full distance rows (ties)


class KNeighborsClassifier(ClassifierMixin, BaseEstimator):
    """k-nearest-neighbour classifier with scikit-learn's interface and its exact answers.

    A drop-in for `sklearn.neighbors.KNeighborsClassifier` on the parameters it shares with it
    (it passes scikit-learn's `check_estimator`; tests/test_sklearn_contract.py).

    Parameters
    ----------
    n_neighbors : number of neighbours that vote (scikit-learn's default, 5).
    weights : "uniform" or None (each neighbour one vote), "distance" (votes weighted
        1/distance) or a callable taking the distances (n_queries, n_neighbors) and returning
        the votes of that shape, as in scikit-learn.
    algorithm : "full" (one product with every training image), "brute" (scikit-learn's name
        for the same exact search; an alias of "full"), "pruned" (PCA lower bounds rule out
        most training images before any exact distance; same exact answer) or "auto" (pruned
        for 4,096+ training images and k < 64 with the float32 kernel). All are exact.
    metric : "euclidean", or "minkowski" with p=2 (scikit-learn's defaults: the same metric).
    p : Minkowski power; only 2 is supported.
    leaf_size, metric_params, n_jobs : scikit-learn's, accepted so that its code runs
        unchanged: leaf_size (a whole number >= 1) tunes only tree searches, which this exact
        search does not use; metric_params must be None; n_jobs sets the search's threads when
        `threads` is None (-1: every CPU this process may use).
    device : "auto", "cpu" or "cuda".
    max_memory_mb : bound on the distance block held at once (queries are chunked to fit).
    threads : PyTorch CPU threads for the search (None: $DIGITLAB_THREADS if set, else chosen
        between PyTorch's current setting and one by timing the search's own chunks).
    kernel : product used on pixel data: "float32", "int8" (torch._int_mm, fast on CPUs with
        VNNI/AMX and on GPUs) or "auto" (whichever a small timed trial finds faster here).
        Both are exact.

    Input: X is (n_samples, n_features) numeric (any dtype; uint8 pixels are not copied) or
    images (n, h, w), flattened to h*w features. Dense only: a scipy sparse X raises
    scikit-learn's TypeError ("Sparse data was passed ..., but dense data is required").
    y is (n_samples,) class labels of any kind (a column (n, 1) is raveled with a warning).
    Errors: `digitlab.errors.InvalidParameterError` for a bad parameter (a subclass of
    scikit-learn's InvalidParameterError, so of ValueError and TypeError; raised in `fit`, as
    scikit-learn does), ValueError for bad data, and
    `digitlab.errors.NotFittedError`, a subclass of `sklearn.exceptions.NotFittedError`, when
    used before `fit`.

    On whole-number pixel data (0..255, any dtype) predictions, probabilities and neighbours
    equal those of `sklearn.neighbors.KNeighborsClassifier(algorithm="brute")` given the same
    arrays, ties included. On other float features the distances are float64 but rounded
    differently from scikit-learn's, so at distances equal to within rounding the two may keep
    different neighbours; exact equality is not promised there.
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        weights: str = "uniform",
        algorithm: str = "auto",
        leaf_size: int = 30,
        p: float = 2,
        metric: str = "euclidean",
        metric_params: dict | None = None,
        n_jobs: int | None = None,
        device: str = "auto",
        max_memory_mb: float = 512,
        threads: int | None = None,
        kernel: str = "auto",
    ):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.p = p
        self.metric = metric
        self.metric_params = metric_params
        self.n_jobs = n_jobs
        self.device = device
        self.max_memory_mb = max_memory_mb
        self.threads = threads
        self.kernel = kernel

    def _check_params(self) -> None:
        whole_number("n_neighbors", self.n_neighbors, error=errors.InvalidParameterError)
        if not (self.weights in (None, "uniform", "distance") or callable(self.weights)):
            raise errors.InvalidParameterError(
                f"weights must be 'uniform', 'distance', None or a callable, got {self.weights!r}"
            )
        if self.metric not in METRICS:
            raise errors.InvalidParameterError(
                f"metric must be 'euclidean' ('l2') or 'minkowski' (with p=2), got "
                f"{self.metric!r}; "
                "no other metric is supported"
            )
        if isinstance(self.p, (bool, np.bool_)) or self.p != 2:
            raise errors.InvalidParameterError(
                f"p must be 2 (the euclidean metric), got {self.p!r}"
            )
        # scikit-learn's own spellings, accepted so that its code runs unchanged: leaf_size
        # tunes only its trees (no tree here), metric_params may only restate p=2, and n_jobs
        # is the search's thread count when `threads` is not set.
        whole_number("leaf_size", self.leaf_size, error=errors.InvalidParameterError)
        if self.metric_params not in (None, {}, {"p": 2}):
            raise errors.InvalidParameterError(
                f"metric_params must be None (the euclidean metric has none), got "
                f"{self.metric_params!r}"
            )
        if self.n_jobs is not None and (
            isinstance(self.n_jobs, bool)
            or not isinstance(self.n_jobs, numbers.Integral)
            or self.n_jobs == 0
        ):
            raise errors.InvalidParameterError(
                f"n_jobs must be None, a positive count or -1 (all CPUs), got {self.n_jobs!r}"
            )
        if self.algorithm not in ALGORITHMS:
            raise errors.InvalidParameterError(
                f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}"
            )
        if self.kernel not in KERNELS:
            raise errors.InvalidParameterError(
                f"kernel must be one of {KERNELS}, got {self.kernel!r}"
            )
        number = isinstance(self.max_memory_mb, numbers.Real) and not isinstance(
            self.max_memory_mb, (bool, np.bool_)
        )
        if not (number and 0 < self.max_memory_mb < math.inf):
            raise errors.InvalidParameterError(
                f"max_memory_mb must be a positive, finite number, got {self.max_memory_mb!r}"
            )
        # Where the search will run and on how many threads: wrong ones fail here, in fit,
        # not at the first predict (ConfigError is a ValueError).
        resolve_device(self.device)
        if self.threads is not None:
            check_threads(self.threads)

    def _threads(self) -> int | None:
        """`threads`, else scikit-learn's `n_jobs` (-1: every CPU, -2: all but one, ...)."""
        if self.threads is not None or self.n_jobs is None:
            return self.threads
        n = int(self.n_jobs)
        return max(1, n if n > 0 else available_cpus() + 1 + n)

    def _check_fitted(self) -> None:
        """NotFittedError before `fit`; then the parameters again, which `set_params` may have
        changed since (n_neighbors=0 once predicted all zeros)."""
        try:
            check_is_fitted(self)
        except SklearnNotFittedError as exc:
            raise errors.NotFittedError(str(exc)) from None
        self._check_params()

    def __getstate__(self):
        # The search's prepared copies of the training data (`_cache`, built by predict) are
        # rebuilt on demand: a pickle holds only what fit stored (it grew 1.6 -> 9.3 MB).
        state = super().__getstate__()
        state = {**state, "_cache": {}} if "_cache" in state else state
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # MNIST pixels are dense; sparse X is refused in fit
        return tags

    # ----- fit ------------------------------------------------------------------------------

    def fit(self, X, y) -> KNeighborsClassifier:
        """Store the training set.

        X: (n_samples, n_features) or images (n, h, w), any numeric dtype; copied once (uint8
        pixels stay uint8), so the model is a snapshot: changing your array afterwards does not
        change its answers (the first `predict` builds an index from it; answers from that
        index beside your changed array matched neither). scikit-learn's brute search keeps
        the caller's array and would read the change. y: (n_samples,) labels. Returns self.
        Raises ValueError for bad parameters, empty, non-finite or mismatched data, or a
        continuous y ("Unknown label type"); TypeError for sparse X.
        """
        self._check_params()
        # copy=True: a snapshot (see above); check_array copies only what still shares the
        # caller's memory, so data it already converted are not copied twice.
        X, y = validate_data(self, images_as_rows(X, self), y, dtype="numeric", copy=True)
        check_classification_targets(y)
        self.classes_, self._y = np.unique(y, return_inverse=True)
        self.n_samples_fit_ = len(X)
        self.effective_metric_ = "euclidean"
        self._pixels = _as_pixels(X)
        self._fit_X = X
        if self._pixels is not None:
            self._const_cols = (self._pixels == self._pixels[0]).all(0)
            self._const_vals = self._pixels[0, self._const_cols]
        self._cache: dict = {}
        return self

    def _float_train(self, device: torch.device) -> dict:
        """Float64 training matrix and squared norms (the float-feature path), once per device."""
        key = ("float", device)
        if key not in self._cache:
            t = torch.from_numpy(np.ascontiguousarray(self._fit_X, np.float64)).to(device)
            # Centred on the training mean (in float64): distances do not change, and the
            # float32 shortlist keeps its precision for data far from the origin (values
            # around 1,000 with unit spread lost it all). Scaled by a power of two (exact) so
            # the largest |value| is about 1: float32 neither underflows (values of 1e-23
            # gave products of 0) nor overflows.
            mu = t.mean(0)
            centred = t - mu
            peak = float(centred.abs().max()) if t.numel() else 0.0
            scale = 2.0 ** -math.frexp(peak)[1] if peak > 0 and math.isfinite(peak) else 1.0
            ts = centred * scale
            del centred
            half = (ts * ts).sum(1) / 2
            self._cache[key] = {
                "t": t,  # as given: distances are direct differences of the caller's values
                "mu": mu,
                "scale": scale,
                "ts": ts,
                "half": half,
                "t32": ts.float(),
                "half32": half.float(),
                "t_norm_max": float(ts.norm(dim=1).max()) if len(ts) else 0.0,
            }
        return self._cache[key]

    def _pixel_index(self, Q: np.ndarray, device: torch.device) -> tuple[_PixelIndex, np.ndarray]:
        """The training pixels on `device`, without the columns that cannot matter for Q.

        A pixel that is the same in every training image and every query adds zero to every
        distance (MNIST has dozens of always-blank border pixels), so it is left out of the
        product: fewer flops, identical distances.
        """
        const = np.flatnonzero(self._const_cols)
        keep = ~self._const_cols
        keep[const[(Q[:, const] != self._const_vals).any(0)]] = True
        cache_key = ("pixels", device, keep.tobytes())
        index = self._cache.get(cache_key)
        if index is None:
            # Emptied in place: predict leaves the estimator's attributes (its __dict__) as
            # they were, as scikit-learn's contract asks; only this private cache changes.
            for stale in [k for k in self._cache if k[0] == "pixels"]:
                del self._cache[stale]
            index = _PixelIndex(self._pixels[:, keep], device, self.kernel)
            self._cache[cache_key] = index
        return index, keep

    # ----- search ---------------------------------------------------------------------------

    def _prepare_queries(self, X) -> np.ndarray:
        """Queries checked as scikit-learn checks them (fitted, dense, finite, same features)."""
        self._check_fitted()
        return validate_data(
            self, images_as_rows(X, self, reset=False), dtype="numeric", reset=False
        )

    def _chunk_rows(self) -> int:
        """Query rows per chunk: each holds 8 bytes per training sample (two float32 rows).

        Past about a thousand rows bigger chunks only thrash the cache (measured), so the
        memory bound caps the chunk but does not inflate it.
        """
        per_row = self.n_samples_fit_ * 8
        return max(1, min(1024, int(self.max_memory_mb * 2**20 // per_row)))

    def _search(self, X: np.ndarray, ks: Sequence[int]) -> dict[int, _Neighbors]:
        """Exact neighbours of every query row for each k in `ks`, from one pass."""
        kmax = max(ks)
        if kmax > self.n_samples_fit_:
            raise ValueError(
                f"n_neighbors = {kmax} is larger than the {self.n_samples_fit_} "
                "training samples; use at most that many"
            )
        device = resolve_device(self.device)
        # Pixels' products are exact in float32 only up to 1,024 columns (|dot| <= d * 128**2
        # <= 2**24); wider whole-number data takes the float path, whose answers are proven.
        pixels = self._pixels is not None and self.n_features_in_ <= _EXACT_WIDTH
        queries = _as_pixels(X) if pixels else None
        asked = requested_threads(self._threads())  # a count asked for is used as it is
        with threads(asked), _exact_float32_matmul():
            if queries is None:  # float features: torch's thread count as it is
                result = self._search_float(X, ks, device)
                cpu = torch.get_num_threads() if device.type == "cpu" else None
                LAST_SEARCH.update(threads=cpu)
            else:
                result = self._search_pixels(queries, ks, device, asked)
        # After the thread setting is restored: scikit-learn's tie order depends on its own
        # OpenMP thread count, which must be the caller's.
        _rank_ties_like_sklearn(result, X, self._fit_X)
        return result

    def _takes_pruned(self, device: torch.device, kmax: int) -> bool:
        """Whether this search runs the pruned path.

        It pays on CPUs without fast int8 products; on a GPU the full product is a few
        milliseconds and the pruned search's per-row scan is launch-bound (H200, 60,000 x
        10,000: pruned 0.22 s, nearly all of it 4,479 small kernel launches).
        """
        kernel = _resolve_kernel(self.kernel, device)
        return self.algorithm == "pruned" or (
            self.algorithm == "auto"
            and device.type == "cpu"
            and self.n_samples_fit_ >= 4096
            and kmax < 64
            and kernel != "int8"
        )

    def _search_pixels(
        self, Q: np.ndarray, ks: Sequence[int], device, asked: int | None = None
    ) -> dict[int, _Neighbors]:
        n_fit, kmax = self.n_samples_fit_, max(ks)
        pruned = self._takes_pruned(device, kmax)
        set_up = busy = asked
        if device.type == "cpu":
            if pruned and asked is None:
                # Busy machine? Then the one-off set-up runs on one thread, and so does the
                # search (no trial chunks at all threads): device.probe_threads. Before numba's
                # load starts, which would itself look like a competing process.
                set_up = probe_threads()
                busy = 1 if set_up == 1 else None  # other processes took the cores
            if pruned or _resolve_kernel(self.kernel, device) == "int8":
                preload_scan()  # numba's load overlaps building the index (and its bounds)
        with threads(set_up):
            index, keep = self._pixel_index(Q, device)
            Q = np.ascontiguousarray(Q[:, keep])
            if pruned:
                index.bounds()
        if pruned:
            return self._search_pruned(index, Q, ks, decided=busy)
        m = min(n_fit, kmax + 1 + _MARGIN)
        out_d = np.empty((len(Q), m), np.float64)
        out_i = np.empty((len(Q), m), np.int64)
        fallback: list[np.ndarray] = []
        step = self._chunk_rows()
        # Reused buffers: fresh 100 MB allocations per chunk cost more in page faults than the
        # subtraction itself.
        rows = min(step, len(Q))
        if index.t8 is not None:  # integer keys 2 q.t - |t|^2: exact, no float conversion
            key_buf = torch.empty((rows, n_fit), dtype=torch.int32, device=device)
            dot_buf = None
        else:
            dot_buf = torch.empty((rows, n_fit), device=device)
            key_buf = torch.empty_like(dot_buf)
        picker = ThreadPicker(decided=asked) if device.type == "cpu" else None
        if picker and index.t8 is not None:
            warm_scan()  # the compiled selection is loaded before any chunk is timed
        for start in range(0, len(Q), step):
            Qc = Q[start : start + step]
            with picker.unit(len(Qc)) if picker else contextlib.nullcontext():
                d, cand, unsure = self._full_chunk(index, Qc, key_buf, dot_buf, m, kmax, n_fit)
            out_d[start : start + len(d)] = d
            out_i[start : start + len(d)] = cand
            fallback.append(start + np.flatnonzero(unsure))
        del key_buf
        redo = np.concatenate(fallback)
        result = {k: _Neighbors(out_d[:, :k].copy(), out_i[:, :k].copy()) for k in ks}
        if len(redo):
            self._rerank_like_sklearn(index, Q[redo], redo, ks, result)
        return _note_fallback(result, redo, picker.current if picker else None)

    def _full_chunk(self, index, Qc, key_buf, dot_buf, m: int, kmax: int, n_fit: int):
        """One chunk of the full product: candidates' exact distances, indices, unsure rows."""
        q = index.queries(Qc)
        qn = (q * q).sum(1, keepdim=True).double()  # exact in float32 too (< 2**24)
        key = key_buf[: len(q)]
        if index.t8 is not None:
            # |q - t|^2 = |q|^2 - (2 q.t - |t|^2), all int32 (|2 q.t| < 2**25): ranking by
            # the key is ranking by distance, and the distances come back exact.
            torch._int_mm(_int8_rows(q), index.t8.T, out=key)
            top_key, cand = _largest_keys(key, index.norms_i32, m)
            d = qn - top_key.double()
        else:
            dot = dot_buf[: len(q)]
            index.dot(q, out=dot)  # exact integer dot products (|dot| < 2**24)
            torch.sub(dot, index.half_norms, out=key)  # rounded once: monotone in the key
            top_key, cand = torch.topk(key, m, dim=1, largest=True, sorted=True)
            # Exact squared distances of the candidates, from their exact dot products.
            d = qn + index.norms[cand] - 2 * torch.gather(dot, 1, cand).double()
        d, order = torch.sort(d, dim=1, stable=True)
        cand = torch.gather(cand, 1, order)
        head = d[:, : min(kmax + 1, m)]
        unsure = (head[:, 1:] == head[:, :-1]).any(1)  # tied distances: rank as sklearn
        if m < n_fit:  # the margin must be proven: rounded keys may not tie across it
            unsure |= top_key[:, m - 1] >= top_key[:, kmax]
        return d.cpu().numpy(), cand.cpu().numpy(), unsure.cpu().numpy()

    def _search_pruned(
        self, index: _PixelIndex, Q: np.ndarray, ks, decided: int | None = None
    ) -> dict[int, _Neighbors]:
        """The same exact neighbours from PCA lower bounds and a few exact distances each.

        decided: a thread count already chosen (by `probe_threads`); else the chunks choose."""
        n_fit, kmax = self.n_samples_fit_, max(ks)
        k1 = min(n_fit, kmax + 1)
        bounds = index.bounds()
        out_d = np.empty((len(Q), k1), np.float64)
        out_i = np.empty((len(Q), k1), np.int64)
        step = self._chunk_rows()
        buf = torch.empty((min(step, len(Q)), n_fit), device=index.device)
        picker = ThreadPicker(decided=decided) if index.device.type == "cpu" else None
        if picker:
            warm_scan()  # the compiled pass is loaded (or compiled) before any chunk is timed
        for start in range(0, len(Q), step):
            Qc = Q[start : start + step]
            with picker.unit(len(Qc)) if picker else contextlib.nullcontext():
                q = index.queries(Qc)
                qn = (q * q).sum(1).double()
                d, i = nearest(q, index.t, qn, index.norms, bounds, k1, buf, index.pixel_rows(Qc))
            out_d[start : start + len(q)] = d
            out_i[start : start + len(q)] = i
        del buf
        redo = np.flatnonzero((out_d[:, 1:] == out_d[:, :-1]).any(1))  # ties: rank as sklearn
        result = {k: _Neighbors(out_d[:, :k].copy(), out_i[:, :k].copy()) for k in ks}
        if len(redo):
            self._rerank_like_sklearn(index, Q[redo], redo, ks, result)
        return _note_fallback(result, redo, picker.current if picker else None)

    def _rerank_like_sklearn(self, index: _PixelIndex, Q, rows, ks, result) -> None:
        step = max(1, self._chunk_rows() // 2)
        for s in range(0, len(rows), step):
            dist = index.full_rows(Q[s : s + step])
            r = np.arange(len(dist))[:, None]
            for k in ks:
                # The same two calls scikit-learn's brute-force search makes, on the same values.
                ind = np.argpartition(dist, k - 1, axis=1)[:, :k]
                ind = ind[r, np.argsort(dist[r, ind])]
                result[k].ind[rows[s : s + step]] = ind
                result[k].sq_dist[rows[s : s + step]] = dist[r, ind]

    def _search_float(self, X: np.ndarray, ks: Sequence[int], device) -> dict[int, _Neighbors]:
        """Float features: a float32 product shortlists, float64 distances rank the list.

        The shortlist (the kmax + 8 largest keys q.t - |t|^2 / 2, on data centred on the
        training mean and scaled by a power of two) is proven row by row: every training row
        left out has a key at most the list's smallest, so its exact key is at most that plus
        the key's rounding bound E, and its squared distance at least |q|^2 - 2 (smallest key +
        E). Rows whose k-th listed distance is below that are exact; the others (data whose
        spread float32 cannot resolve) take the same steps in float64, and any row still
        unproven is ranked from its full row of direct float64 distances. Rows with tied
        distances among their kmax + 1 nearest are ranked as scikit-learn ranks them, from
        full distance rows in its product form (`_rerank_like_sklearn`, then its ArgKmin
        where it uses that): exact for whole numbers, within rounding otherwise.
        `LAST_SEARCH["fallback_rows"]`: rows that needed more than the float32 pass.
        """
        train = self._float_train(device)
        n_fit, kmax = self.n_samples_fit_, max(ks)
        m = min(n_fit, kmax + _MARGIN)
        k1 = min(n_fit, kmax + 1)  # one more, to see a tie across the k-th place
        out_d = np.empty((len(X), k1), np.float64)
        out_i = np.empty((len(X), k1), np.int64)
        step = self._chunk_rows()
        t32, half32 = train["t32"], train["half32"]
        redo = []
        key_buf = torch.empty((min(step, len(X)), n_fit), device=device)
        for start in range(0, len(X), step):
            rows = np.arange(start, min(start + step, len(X)))
            proven = self._float_pass(X, rows, k1, m, train, t32, half32, key_buf, out_d, out_i)
            redo.append(rows[~proven])
        redo = np.concatenate(redo) if redo else np.empty(0, np.int64)
        if len(redo):  # float32 could not prove these rows: the same in float64
            del key_buf
            key64 = torch.empty(
                (min(max(step // 2, 1), len(redo)), n_fit), dtype=torch.float64, device=device
            )
            left = []
            for start in range(0, len(redo), len(key64)):
                rows = redo[start : start + len(key64)]
                proven = self._float_pass(
                    X, rows, k1, m, train, train["ts"], train["half"], key64, out_d, out_i
                )
                left.append(rows[~proven])
            left = np.concatenate(left)
            for start in range(0, len(left), step):  # step rows of n float64 each
                self._rank_full_float(X, left[start : start + step], k1, train, out_d, out_i)
        LAST_SEARCH.update(fallback_rows=len(redo))
        tied = np.flatnonzero((out_d[:, 1:] == out_d[:, :-1]).any(1))
        # out_d holds squared distances in the scaled units (data near 1e-160 or 1e200 keep
        # their order there); back to the caller's units, in two steps (scale**2 may overflow).
        with np.errstate(over="ignore", under="ignore"):  # inf / 0 where float64 cannot hold it
            out_d /= train["scale"]
            out_d /= train["scale"]
        result = {k: _Neighbors(out_d[:, :k].copy(), out_i[:, :k].copy()) for k in ks}
        if len(tied):
            self._rerank_like_sklearn(_FloatRows(train["t"]), X[tied], tied, ks, result)
        for nb in result.values():
            nb.fallback = tied
        return result

    def _float_pass(self, X, rows, k1, m, train, ts, half, key_buf, out_d, out_i) -> np.ndarray:
        """Shortlist query `rows` with the product in ts's dtype, rank the list exactly, write
        it to out_d/out_i; returns which rows the rounding bound proves (bool per row)."""
        n_fit, d = ts.shape
        q = torch.from_numpy(np.asarray(X[rows], np.float64)).to(ts.device)
        qs = (q - train["mu"]) * train["scale"]
        key = key_buf[: len(q)]
        torch.mm(qs.to(ts.dtype), ts.T, out=key)
        key.sub_(half)
        top, cand = torch.topk(key, m, dim=1, largest=True, sorted=False)
        cand, _ = torch.sort(cand, dim=1)  # by index, so that the stable sort below keeps
        # exact ties in index order (scikit-learn's order for ties)
        dist = self._candidate_distances(train["t"], q, cand, train["scale"])
        dist, order = torch.sort(dist, dim=1, stable=True)
        out_d[rows] = dist[:, :k1].cpu().numpy()
        out_i[rows] = torch.gather(cand, 1, order)[:, :k1].cpu().numpy()
        if m == n_fit:
            return np.ones(len(rows), bool)
        # |fl(key) - key| <= (d + 8) u (|q| |t| + |t|^2) + (d + 8) 2**-125 (the rounding of
        # both sides to ts's dtype, a d-term dot product in any summation order, the half
        # norm, the subtraction; the last term for products below the normal range), with u
        # the unit roundoff taken twice over, at the largest training norm, in scaled units.
        u = 2.0**-23 if ts.dtype == torch.float32 else 2.0**-52
        tmax = train["t_norm_max"]
        qn = qs.norm(dim=1)
        bound = (d + 8) * (u * (qn * tmax + tmax * tmax) + 2.0**-125)
        floor = qn * qn - 2 * (top.double().amin(1) + bound)
        kth = dist[:, k1 - 1]  # in scaled units, as the keys
        return (floor > kth * (1 + 1e-12)).cpu().numpy()

    def _candidate_distances(self, t, q, cand, scale: float) -> torch.Tensor:
        """Direct float64 squared distances (rows, m) of each query row to its candidates, in
        blocks of rows that keep the (rows, m, features) differences within max_memory_mb.

        The differences are of the values as given, then scaled by `scale` (a power of two:
        exact), so the squares of data near 1e-160 do not underflow, nor near 1e200 overflow.
        """
        m, d = cand.shape[1], t.shape[1]
        per_row = max(1, m * d * 8 * 2)
        block = max(1, int(self.max_memory_mb * 2**20 // per_row))
        out = torch.empty(cand.shape, dtype=torch.float64, device=t.device)
        for s in range(0, len(q), block):
            diff = t[cand[s : s + block]] - q[s : s + block, None, :]
            if scale != 1.0:
                diff *= scale
            out[s : s + block] = (diff * diff).sum(2)
        return out

    def _rank_full_float(self, X, rows: np.ndarray, k1: int, train: dict, out_d, out_i) -> None:
        """The k1 nearest of query `rows` from their whole rows of direct float64 distances
        (differences of the values as given, not the product form: no cancellation),
        ties by training index."""
        t, scale = train["t"], train["scale"]
        q = torch.from_numpy(np.asarray(X[rows], np.float64)).to(t.device)
        # Scaled (exactly) so that distances neither underflow nor overflow; the order is the
        # order of the direct distances.
        dist = torch.cdist(q * scale, t * scale, compute_mode="donot_use_mm_for_euclid_dist")
        cand = torch.sort(dist, dim=1, stable=True).indices[:, :k1]
        out_d[rows] = self._candidate_distances(t, q, cand, scale).cpu().numpy()
        out_i[rows] = cand.cpu().numpy()

    # ----- public API -----------------------------------------------------------------------

    def kneighbors(self, X=None, n_neighbors: int | None = None, return_distance: bool = True):
        """Distances (euclidean, float64) and indices (int64) of the nearest training samples.

        Both arrays are (n_queries, n_neighbors), nearest first. With X=None the training
        samples are queried and none is its own neighbour (scikit-learn's convention).
        Raises NotFittedError before `fit`, ValueError for a bad X or n_neighbors.
        """
        self._check_fitted()
        k = whole_number(
            "n_neighbors",
            self.n_neighbors if n_neighbors is None else n_neighbors,
            error=ValueError,
        )
        if X is None:
            if k >= self.n_samples_fit_:
                raise ValueError(
                    f"n_neighbors must be < {self.n_samples_fit_} when querying "
                    "the training set itself"
                )
            found = self._search(self._fit_X, [k + 1])[k + 1]
            dist, ind = _drop_self(found.sq_dist, found.ind)
        else:
            found = self._search(self._prepare_queries(X), [k])[k]
            dist, ind = found.sq_dist, found.ind
        if not return_distance:
            return ind
        return np.sqrt(np.maximum(dist, 0)), ind

    def kneighbors_graph(self, X=None, n_neighbors: int | None = None, mode: str = "connectivity"):
        """The k-neighbours graph as a scipy CSR matrix (n_queries, n_samples_fit) float64.

        Row i holds 1 ("connectivity") or the euclidean distance ("distance") at the columns of
        query i's `n_neighbors` nearest training samples, as scikit-learn's
        `KNeighborsMixin.kneighbors_graph`; X=None queries the training set, no sample being
        its own neighbour. Raises ValueError for another mode, and as `kneighbors`.
        """
        if mode not in ("connectivity", "distance"):
            raise ValueError(f'mode must be "connectivity" or "distance", got {mode!r}')
        dist, ind = self.kneighbors(X, n_neighbors, return_distance=True)
        n_queries, k = ind.shape
        values = np.ones(ind.size) if mode == "connectivity" else dist.ravel()
        return csr_matrix(
            (values, ind.ravel(), np.arange(0, n_queries * k + 1, k)),
            shape=(n_queries, self.n_samples_fit_),
        )

    def _votes(self, nb: _Neighbors) -> np.ndarray:
        """(n, n_classes) vote totals exactly as scikit-learn sums them for `predict`.

        Column j belongs to `classes_[j]`; `_y` holds each training label's column.
        """
        labels = self._y[nb.ind]
        n_classes = len(self.classes_)
        w = self._vote_weights(nb)
        if w is None:
            return np.stack([(labels == c).sum(1) for c in range(n_classes)], axis=1)
        # Same template-and-sum as sklearn.utils.extmath.weighted_mode, so sums round alike.
        return np.stack([np.where(labels == c, w, 0.0).sum(1) for c in range(n_classes)], axis=1)

    def _vote_weights(self, nb: _Neighbors) -> np.ndarray | None:
        """Each neighbour's vote (n, k) float64, None for one each ("uniform" or None), as
        scikit-learn's `_get_weights`: 1/distance, or the callable's answer for the distances.
        Raises ValueError when a callable returns another shape, NaN or infinite weights, or
        only zeros for some query (scikit-learn's error)."""
        if self.weights in (None, "uniform"):
            return None
        if self.weights == "distance":
            return _distance_weights(nb.sq_dist)
        dist = np.sqrt(np.maximum(nb.sq_dist, 0))
        w = np.asarray(self.weights(dist), dtype=np.float64)
        if w.shape != dist.shape:
            raise ValueError(
                f"weights callable returned shape {w.shape}, expected {dist.shape} (one "
                "weight per neighbour distance)"
            )
        if not np.isfinite(w).all():  # scikit-learn votes with them and answers class 0
            raise ValueError("weights callable returned NaN or infinite weights")
        if (w.sum(1) == 0).any():  # scikit-learn's check and words
            raise ValueError(
                "All neighbors of some sample is getting zero weights. Please modify "
                "'weights' to avoid this case if you are using a user-defined function."
            )
        return w

    def _neighbors(self, X) -> _Neighbors:
        return self._search(self._prepare_queries(X), [self.n_neighbors])[self.n_neighbors]

    def predict(self, X) -> np.ndarray:
        """Class labels (n_queries,), of `classes_`' dtype: the (weighted) majority vote.

        A tied vote goes to the class that comes first in `classes_`, as in scikit-learn.
        Raises NotFittedError before `fit`; ValueError for a bad X (wrong number of features,
        non-finite, empty, not 2-D); TypeError for sparse X.
        """
        votes = self._votes(self._neighbors(X))  # checks fitted before classes_ is read
        return self.classes_[np.argmax(votes, axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_queries, n_classes) float64; column j is `classes_[j]`."""
        return self._proba(self._neighbors(X))

    def _proba(self, nb: _Neighbors) -> np.ndarray:
        labels = self._y[nb.ind]
        w = self._vote_weights(nb)
        w = np.ones(labels.shape) if w is None else w
        proba = np.zeros((len(labels), len(self.classes_)))
        rows = np.arange(len(labels))
        for i in range(labels.shape[1]):  # neighbour by neighbour, as scikit-learn adds them
            proba[rows, labels[:, i]] += w[:, i]
        return proba / proba.sum(1, keepdims=True)

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of `predict(X)` against y, weighted by `sample_weight` (n_queries,).

        scikit-learn's `ClassifierMixin.score` (`accuracy_score`); the weights are checked
        with `_check_sample_weight` (one finite, non-negative weight per row).
        """
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, np.empty((_num_samples(X), 0)), ensure_non_negative=True
            )
        return float(super().score(X, y, sample_weight=sample_weight))

    def predict_many_k(self, X, ks: Iterable[int]) -> dict[int, np.ndarray]:
        """Predictions (n_queries,) for several k from one neighbour search at the largest k."""
        ks = sorted(set(whole_number("k", k, error=ValueError) for k in ks))
        if not ks:
            raise ValueError("k values must be whole numbers >= 1, got none")
        found = self._search(self._prepare_queries(X), ks)
        return {k: self.classes_[np.argmax(self._votes(found[k]), axis=1)] for k in ks}


class _PixelIndex:
    """Training pixels prepared for exact products: shifted by -128, norms exact."""

    def __init__(self, pixels: np.ndarray, device: torch.device, kernel: str):
        self.device = device
        self.kernel = _resolve_kernel(kernel, device)
        if pixels.shape[1] < 2:
            # One column: a (n, 1) int8 tensor has strides (1, 1), which oneDNN's _int_mm
            # misreads (wrong, run-to-run different products: seen with torch 2.13). The
            # float32 product of these integers is exact too.
            self.kernel = "float32"
        u8 = np.ascontiguousarray(pixels)
        self.t = torch.from_numpy(u8).to(device, torch.float32).sub_(_SHIFT)
        self.t8 = _int8_rows(self.t) if self.kernel == "int8" else None
        norms = (self.t * self.t).sum(1)  # integers below 2**24: exact in float32
        self.norms = norms.double()
        self.half_norms = norms / 2
        self.norms_i32 = norms.to(torch.int32)
        # The compiled scan's exact distances read uint8 rows (a quarter of float32's memory).
        self.u8 = u8 if device.type == "cpu" else None
        self._bounds = None

    def pixel_rows(self, Qc: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(query rows, training rows) as C-contiguous uint8, for the compiled scan (CPU)."""
        if self.u8 is None:
            return None
        return np.ascontiguousarray(Qc, dtype=np.uint8), self.u8

    def bounds(self):
        """PCA lower bounds for the pruned search (built on first use)."""
        if self._bounds is None:
            self._bounds = BoundIndex(self.t)
        return self._bounds

    def queries(self, Q: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(Q).to(self.device, torch.float32).sub_(_SHIFT)

    def dot(self, q: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.t8 is None:
            return torch.mm(q, self.t.T, out=out)
        return out.copy_(torch._int_mm(_int8_rows(q), self.t8.T))

    def full_rows(self, Q: np.ndarray) -> np.ndarray:
        """Exact squared distances of some query rows to every training row (float64)."""
        q = self.queries(Q)
        dots = torch.mm(q, self.t.T).double()
        qn = (q * q).sum(1, keepdim=True).double()
        return (qn + self.norms - 2 * dots).cpu().numpy()


def _largest_keys(dots: torch.Tensor, norms: torch.Tensor, m: int):
    """The m largest keys 2 dots - norms of each row, largest first, and their columns.

    dots: (b, n) int32, overwritten; norms: (n,) int32. Returns (b, m) int32 keys and (b, m)
    int64 columns. On the CPU one compiled pass (`neighbors.top_keys`, rows dealt to as many
    threads as torch may use) replaces a multiply-subtract over the block and a topk:
    1,024 x 20,000 on one thread of an AVX512 EPYC, 11 ms against 35-45 ms.
    """
    select = compiled_top_keys() if dots.device.type == "cpu" else None
    if select is None:
        dots.mul_(2).sub_(norms)
        return torch.topk(dots, m, dim=1, largest=True, sorted=True)
    b = len(dots)
    top_v, top_i = np.empty((b, m), np.int32), np.empty((b, m), np.int64)
    args = (dots.numpy(), norms.numpy(), top_v, top_i)
    n_threads = max(1, min(torch.get_num_threads(), b))
    run_in_threads([(select, (*args, first, n_threads)) for first in range(n_threads)])
    return torch.from_numpy(top_v), torch.from_numpy(top_i)


class _FloatRows:
    """Full float64 distance rows of float features in scikit-learn's product form
    (|q|^2 - 2 q.t + |t|^2), for `_rerank_like_sklearn` (what `_PixelIndex.full_rows` is for
    pixels)."""

    def __init__(self, t: torch.Tensor):
        self.t = t
        self.norms = (t * t).sum(1)

    def full_rows(self, Q: np.ndarray) -> np.ndarray:
        q = torch.from_numpy(np.asarray(Q, np.float64)).to(self.t.device)
        dots = q @ self.t.T
        return ((q * q).sum(1, keepdim=True) - 2 * dots + self.norms).cpu().numpy()


def _int8_rows(x: torch.Tensor) -> torch.Tensor:
    """`x` as int8 with plain row-major strides.

    A one-row tensor made by `.to(torch.int8)` can carry strides (1, 1); oneDNN's `_int_mm`
    then reads every row as zeros (seen with torch 2.13: a lone query got distance 0 to
    arbitrary images). A fresh `empty` always has strides (d, 1).
    """
    out = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    return out.copy_(x)


_KERNEL_CHOICE: dict[str, str] = {}


def _resolve_kernel(kernel: str, device: torch.device) -> str:
    """The product kernel a search on `device` uses: the setting, or the timed choice for "auto"."""
    return _choose_kernel(device) if kernel == "auto" else kernel


def _choose_kernel(device: torch.device) -> str:
    """Time one small block both ways and keep the faster (once per device type)."""
    if device.type in _KERNEL_CHOICE:
        return _KERNEL_CHOICE[device.type]
    if device.type == "cuda":
        # CUDA's _int_mm wants both widths a multiple of 8 and more than 16 rows, which the
        # trimmed pixel columns and the last query chunk rarely are; float32 products of these
        # integers are exact (every sum stays below 2**24) and take ~15 ms for 60,000 x 10,000.
        _KERNEL_CHOICE[device.type] = "float32"
        return "float32"
    if device.type == "cpu" and torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2"):
        # No VNNI/AMX int8 instructions: _int_mm ran at 1.4 GOPS on such a CPU, 60x slower
        # than float32, so the trial (over a second there) is not worth running.
        _KERNEL_CHOICE[device.type] = "float32"
        return "float32"
    a = torch.randint(-128, 128, (128, 784), dtype=torch.int8, device=device)
    b = torch.randint(-128, 128, (2048, 784), dtype=torch.int8, device=device)
    af, bf = a.float(), b.float()
    timings = {}
    for name, fn in (("float32", lambda: af @ bf.T), ("int8", lambda: torch._int_mm(a, b.T))):
        try:
            fn()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings[name] = time.perf_counter() - start
        except RuntimeError:  # no int8 kernel for this device or these shapes
            timings[name] = float("inf")
    _KERNEL_CHOICE[device.type] = min(timings, key=timings.get)
    return _KERNEL_CHOICE[device.type]


#: Diagnostics of the latest search in this process (benchmarks read them): how many query
#: rows were re-ranked from full distance rows, and the CPU thread count the search kept.
#: Kept here, not on the estimator: `predict` must leave the estimator's state alone.
LAST_SEARCH: dict[str, int | None] = {"fallback_rows": None, "threads": None}


def _note_fallback(
    result: dict[int, _Neighbors], rows: np.ndarray, n_threads: int | None = None
) -> dict[int, _Neighbors]:
    """Record which query rows were re-ranked from full distance rows (ties), for every k."""
    for nb in result.values():
        nb.fallback = rows
    LAST_SEARCH.update(fallback_rows=len(rows), threads=n_threads)
    return result


def _rank_ties_like_sklearn(result: dict[int, _Neighbors], X: np.ndarray, fit_X: np.ndarray):
    """Re-rank the tied rows as scikit-learn's brute-force search ranks them for these dtypes.

    The search's fallback ranks tied rows with `np.argpartition`/`np.argsort`, which is what
    scikit-learn does unless the query and training arrays are both float32 or both float64.
    For those it uses its `ArgKmin` heaps instead (`sklearn.neighbors._base.kneighbors`), which
    keep a different member of a tie (the lower training index) and order the tied members
    their own way. On whole-number pixels the distances are exact in both libraries, so
    running that same reduction on just the tied rows gives scikit-learn's answer exactly.
    Its strategy is chosen as scikit-learn chooses it for the whole query (the tie order
    depends on it); each row's result does not depend on the other rows.
    """
    rows = next(iter(result.values())).fallback
    usable = X.dtype == fit_X.dtype and X.dtype in (np.float32, np.float64)
    if rows is None or not len(rows) or not usable:
        return
    from sklearn import get_config
    from sklearn.metrics._pairwise_distances_reduction import ArgKmin
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    chunk = get_config().get("pairwise_dist_chunk_size", 256)
    wide = len(fit_X) < len(X) or 4 * chunk * _openmp_effective_n_threads() < len(X)
    Q = np.ascontiguousarray(X[rows])
    Y = np.ascontiguousarray(fit_X)
    for k, nb in result.items():
        dist, ind = ArgKmin.compute(
            X=Q,
            Y=Y,
            k=k,
            metric="euclidean",
            strategy="parallel_on_X" if wide else "parallel_on_Y",
            return_distance=True,
        )
        nb.ind[rows] = ind
        nb.sq_dist[rows] = dist * dist  # callers take the root again: sqrt(d*d) is d here


def _distance_weights(sq_dist: np.ndarray) -> np.ndarray:
    """1/distance; a row with an exact match gives all its weight to the exact matches."""
    with np.errstate(divide="ignore"):
        w = 1.0 / np.sqrt(np.maximum(sq_dist, 0))
    inf = np.isinf(w)
    rows = inf.any(1)
    w[rows] = inf[rows]
    return w


def _drop_self(sq_dist: np.ndarray, ind: np.ndarray):
    """Remove each query's own index (or, when duplicates crowd it out, the first), as sklearn."""
    n, k1 = ind.shape
    own = ind == np.arange(n)[:, None]
    own[~own.any(1), 0] = True
    keep = ~own
    return sq_dist[keep].reshape(n, k1 - 1), ind[keep].reshape(n, k1 - 1)


class _exact_float32_matmul:
    """On CUDA, forbid TF32 for the duration: our float32 products must be exact."""

    def __enter__(self):
        self._saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self._saved
