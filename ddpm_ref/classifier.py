r"""A small digit classifier with hand-written backprop, to judge the quality of generated digits.

Paper: Ho, Jain, Abbeel (2020), §4.1 (sample quality). The paper scores CIFAR10 samples with the
Inception score and FID, both computed from a pretrained classifier: the labels it gives
(confident and balanced means good) and the Fréchet distance between Gaussians fitted to its
hidden features of samples and of real data. On digits we do the same with a classifier small
enough to train in seconds on the 4,500 bundled training digits:

    h = SiLU(x W1 + b1)        # (N, hidden): the "features" of the Fréchet distance
    logits = h W2 + b2         # (N, 10)
    p = softmax(logits)        # trained with cross-entropy, Adam, a fixed number of epochs

Besides the classifier: :func:`frechet_distance` (the formula of FID, Heusel et al. 2017) and
:func:`nearest_neighbour_distance` (to check that samples are not copies of training digits).
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import chisquare

from ddpm_ref.nn.fast import silu_backward, silu_forward  # the SiLU kernels (float32 as before)
from ddpm_ref.nn.layers import linear_backward, linear_forward
from ddpm_ref.optim import adam_init, adam_update

__all__ = ["DigitClassifier", "train_classifier", "softmax_cross_entropy", "frechet_distance",
           "sample_quality", "main",
           "nearest_neighbour_distance", "default_classifier", "cache_dir"]

N_CLASSES = 10
N_REAL_DRAWS = 5  # draws of real training digits for the Fréchet distance's reference spread


def softmax_cross_entropy(logits, labels):
    r"""Mean cross-entropy -log softmax(logits)[label] and its gradient: (loss, dlogits).

    Args:
        logits: (N, K) float. labels: (N,) integers in 0..K-1.
    Returns:
        loss (float), dlogits (N, K) = (softmax(logits) - onehot(labels)) / N.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"logits: expected shape (N, K), got {logits.shape}")
    if labels.shape != (logits.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integers of shape ({logits.shape[0]},), "
                         f"got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels: expected values in 0..{logits.shape[1] - 1}")
    N = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)  # (N, K) shifted: exp cannot overflow
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # (N, K) log softmax
    loss = -log_p[np.arange(N), labels].mean()
    d = np.exp(log_p)  # (N, K) softmax
    d[np.arange(N), labels] -= 1.0
    return float(loss), d / N


def _flatten(x) -> np.ndarray:
    """Images in model scale (N, 1, H, W), (N, H, W) or flat (N, D), or uint8 -> (N, D) float."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x: expected uint8 or float images, got dtype {x.dtype}")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 2:  # already flat
        return x
    if x.ndim != 3:
        raise ValueError(f"x: expected shape (N, 1, H, W), (N, H, W) or (N, D), got {x.shape}")
    return x.reshape(x.shape[0], -1)  # (N, H*W)


@dataclass
class DigitClassifier:
    """A one-hidden-layer MLP on pixels; ``params`` = {w1 (D, hidden), b1, w2 (hidden, 10), b2}."""

    params: dict
    image_size: int = 28

    def forward(self, x):
        """(logits (N, 10), features (N, hidden), cache) for images in model scale or uint8."""
        x = _flatten(x).astype(self.params["w1"].dtype, copy=False)  # (N, D)
        if x.shape[1] != self.params["w1"].shape[0]:
            raise ValueError(f"x: expected {self.image_size}x{self.image_size} images "
                             f"({self.params['w1'].shape[0]} pixels), got {x.shape[1]} pixels")
        a, c1 = linear_forward(x, self.params["w1"], self.params["b1"])  # (N, hidden)
        h, c2 = silu_forward(a)  # (N, hidden)
        logits, c3 = linear_forward(h, self.params["w2"], self.params["b2"])  # (N, 10)
        return logits, h, (c1, c2, c3)

    def backward(self, dlogits, cache):
        """Gradients of a loss w.r.t. params given dL/dlogits."""
        c1, c2, c3 = cache
        dh, dw2, db2 = linear_backward(dlogits, c3)
        da = silu_backward(dh, c2)
        _, dw1, db1 = linear_backward(da, c1)
        return {"w1": dw1, "b1": db1, "w2": dw2, "b2": db2}

    def predict_proba(self, x, chunk=1000) -> np.ndarray:
        """Class probabilities (N, 10), float64."""
        outs = []
        for i in range(0, len(x), chunk):
            logits = self.forward(x[i:i + chunk])[0].astype(np.float64)
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            outs.append(z / z.sum(axis=1, keepdims=True))
        return np.concatenate(outs, axis=0)

    def features(self, x, chunk=1000) -> np.ndarray:
        """Hidden features (N, hidden), float64: what the Fréchet distance compares."""
        return np.concatenate([self.forward(x[i:i + chunk])[1].astype(np.float64)
                               for i in range(0, len(x), chunk)], axis=0)

    def accuracy(self, x, labels) -> float:
        return float(np.mean(self.predict_proba(x).argmax(axis=1) == np.asarray(labels)))


def train_classifier(x, labels, rng, hidden=128, epochs=20, batch=128, lr=2e-3,
                     weight_decay=1e-4, dtype=np.float32, noise=0.1) -> DigitClassifier:
    """Train :class:`DigitClassifier` with cross-entropy and Adam.

    Args:
        x: training images, model scale (N, 1, H, W) or uint8 (N, H, W). labels: (N,) in 0..9.
        rng: np.random.Generator (initialisation, shuffling, input noise).
        hidden, epochs, batch, lr: the MLP width and the schedule of Adam.
        weight_decay: L2 penalty on the weights (added to the gradient).
        noise: std of Gaussian noise added to the inputs during training (model scale), so that
            the classifier does not rely on exact pixel values a sampler might miss slightly.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a np.random.Generator, got {type(rng).__name__}")
    xf = _flatten(x).astype(dtype)  # (N, D)
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (xf.shape[0],):
        raise ValueError(f"labels: expected shape ({xf.shape[0]},), got {labels.shape}")
    N, D = xf.shape
    size = int(round(np.sqrt(D)))
    params = {
        "w1": (rng.standard_normal((D, hidden)) * np.sqrt(2.0 / D)).astype(dtype),
        "b1": np.zeros(hidden, dtype),
        "w2": (rng.standard_normal((hidden, N_CLASSES)) * np.sqrt(1.0 / hidden)).astype(dtype),
        "b2": np.zeros(N_CLASSES, dtype),
    }
    clf = DigitClassifier(params, image_size=size)
    opt = adam_init(params)
    for _ in range(epochs):
        order = rng.permutation(N)
        for i in range(0, N, batch):
            idx = order[i:i + batch]
            xb = xf[idx] + (noise * rng.standard_normal((len(idx), D))).astype(dtype)
            logits, _, cache = clf.forward(xb)
            _, dlogits = softmax_cross_entropy(logits.astype(np.float64), labels[idx])
            grads = clf.backward(dlogits.astype(dtype), cache)
            for k in ("w1", "w2"):
                grads[k] = grads[k] + dtype(weight_decay) * clf.params[k]
            clf.params, opt = adam_update(clf.params, grads, opt, lr)
    return clf


_DEFAULT = {}
_CACHE_VERSION = 1  # bump when train_classifier's recipe changes: old cache files are not read


def cache_dir() -> Path:
    """Where :func:`default_classifier` keeps its trained weights between runs.

    ``$DDPM_REF_CACHE`` if set, else ``$XDG_CACHE_HOME/ddpm_ref`` (default ``~/.cache/ddpm_ref``):
    a user cache folder, not the package's, which may be read-only once installed.
    """
    if os.environ.get("DDPM_REF_CACHE"):
        return Path(os.environ["DDPM_REF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ddpm_ref"


def default_classifier(size=28, seed=0, log=None) -> DigitClassifier:
    """The classifier every report uses: trained on the bundled training digits.

    Trained once (about a minute on two cores) and then read back from :func:`cache_dir`: the
    file name carries a hash of the training digits, the recipe and the seed, so a change of
    any of them trains afresh. Kept in memory too. ``log``: called with a message before
    training (default: print to stderr).
    """
    key = (size, seed)
    if key in _DEFAULT:
        return _DEFAULT[key]
    from ddpm_ref.data.mnist import load_digits

    images, labels = load_digits("train", size)
    h = hashlib.sha256(images.tobytes() + labels.astype(np.int64).tobytes())
    h.update(f"v{_CACHE_VERSION} seed {seed} float32 numpy {np.__version__}".encode())
    path = cache_dir() / f"digit_classifier_{size}_{h.hexdigest()[:16]}.npz"
    clf = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                params = {k: z[k] for k in ("w1", "b1", "w2", "b2")}
            clf = DigitClassifier(params, image_size=size)
        except Exception:  # unreadable cache file: train again and replace it
            clf = None
    if clf is None:
        (log or (lambda m: print(m, file=sys.stderr)))(
            f"training the digit classifier on {len(images)} digits (about a minute, once; "
            f"cached in {path.parent})")
        clf = train_classifier(images, labels, np.random.default_rng(seed))
        try:
            from ddpm_ref._io import atomic_write

            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: np.savez(f, **clf.params))
        except OSError:  # no writable cache: it is only a cache
            pass
    _DEFAULT[key] = clf
    return clf


def frechet_distance(feat_a, feat_b) -> float:
    r"""Fréchet distance between Gaussians fitted to two feature sets (the formula of FID).

    d^2 = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})  (Heusel et al. 2017, Eq. 6)

    Args:
        feat_a: (n, d), feat_b: (m, d) with n, m >= 2.
    """
    a = np.asarray(feat_a, dtype=np.float64)
    b = np.asarray(feat_b, dtype=np.float64)
    for name, f in (("feat_a", a), ("feat_b", b)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"{name}: expected shape (n, d) with n >= 2, got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise ValueError(f"{name}: expected finite values")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feat_b: expected {a.shape[1]} features like feat_a, got {b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))  # (d, d), also for d = 1
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    # tr (S_a S_b)^{1/2} = sum_i sqrt(lambda_i), lambda_i the eigenvalues of the symmetric PSD
    # matrix S_a^{1/2} S_b S_a^{1/2} (similar to S_a S_b); stays exact when fewer examples than
    # features make the covariances singular (where a general matrix square root struggles)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # S_a^{1/2}
    lam = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    tr_covmean = np.sum(np.sqrt(np.clip(lam, 0.0, None)))
    d2 = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_covmean
    return float(max(d2, 0.0))


def _grey_levels(x) -> np.ndarray:
    """(N, D) float64 on the 0..255 scale (uint8 exactly; model scale via (x + 1) 127.5)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.reshape(x.shape[0], -1).astype(np.float64)
    return (_flatten(x).astype(np.float64) + 1.0) * 127.5


def nearest_neighbour_distance(x, reference, chunk=500) -> np.ndarray:
    """For each image of ``x``, the L2 distance (0-255 scale) to its nearest image in ``reference``.

    Args:
        x: (N, H, W) uint8 or model-scale images. reference: (M, H, W) likewise.
    Returns:
        (N,) float64 distances in grey levels (sqrt of the summed squared 0..255 differences).
    """
    a, r = _grey_levels(x), _grey_levels(reference)  # (N, D), (M, D) on 0..255
    if a.shape[1] != r.shape[1]:
        raise ValueError(f"reference: expected {a.shape[1]} pixels like x, got {r.shape[1]}")
    r2 = (r ** 2).sum(axis=1)  # (M,)
    out = np.empty(a.shape[0])
    for i in range(0, a.shape[0], chunk):
        ab = a[i:i + chunk]
        d2 = (ab ** 2).sum(axis=1)[:, None] + r2[None, :] - 2.0 * ab @ r.T  # (n, M)
        out[i:i + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def sample_quality(images, seed=0) -> dict:
    """Sample-quality numbers for generated digits uint8 (N, H, W) (H = 28 or 14).

    Returns a dict: classifier_test_accuracy (on the 500 test digits); confident (share of
    samples labelled with probability > 0.9), the same share for the 500 real test digits
    (confident_test) and their ratio (confident_ratio: the calibrated number, 1 = as confident
    as real held-out digits); class_counts (argmax labels of the samples) and class_chi2_p (the
    chi-square test of equal class frequencies); frechet (samples vs the 500 test digits,
    classifier features) and frechet_real / frechet_real_sd / frechet_real_max (N training
    digits vs the test digits over 5 draws: what perfect samples get at this N);
    nn_sample_median / nn_sample_min (L2 distance, 0-255 scale, from each sample to its nearest
    training digit) next to nn_test_median / nn_test_min (the same for the test digits); copies
    (samples nearer a training digit than the nearest test digit ever is).
    """
    from ddpm_ref.data.mnist import load_digits

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[0] < 2:
        raise ValueError(f"images: expected uint8 (N, H, W) with N >= 2, got "
                         f"{images.dtype} {images.shape}")
    size = images.shape[1]
    clf = default_classifier(size, seed)
    x_tr, _ = load_digits("train", size)
    x_te, y_te = load_digits("test", size)
    n = images.shape[0]
    draws = [x_tr[np.random.default_rng([seed, 4, k]).choice(len(x_tr), min(n, len(x_tr)),
                                                             replace=False)]
             for k in range(N_REAL_DRAWS)]
    p = clf.predict_proba(images)
    p_test = clf.predict_proba(x_te)
    f_test = clf.features(x_te)
    nn_s = nearest_neighbour_distance(images, x_tr)
    nn_t = nearest_neighbour_distance(x_te, x_tr)
    confident, confident_test = np.mean(p.max(axis=1) > 0.9), np.mean(p_test.max(axis=1) > 0.9)
    counts = np.bincount(p.argmax(axis=1), minlength=N_CLASSES)
    fr_real = [frechet_distance(clf.features(r), f_test) for r in draws]
    return {
        "n": int(n),
        "classifier_test_accuracy": float(np.mean(p_test.argmax(axis=1) == y_te)),
        "confident": float(confident),
        "confident_test": float(confident_test),
        # the calibration: the samples' share relative to real held-out digits' (1 = as real)
        "confident_ratio": float(confident / confident_test),
        "class_counts": counts.tolist(),
        "class_chi2_p": float(chisquare(counts).pvalue),  # H0: the ten classes equally likely
        "frechet": frechet_distance(clf.features(images), f_test),
        # N training digits against the test digits, N_REAL_DRAWS draws: the value (and its
        # spread) that perfect samples would get at this N
        "frechet_real": float(np.mean(fr_real)),
        "frechet_real_sd": float(np.std(fr_real, ddof=1)),
        "frechet_real_max": float(np.max(fr_real)),
        "nn_sample_median": float(np.median(nn_s)), "nn_sample_min": float(nn_s.min()),
        "nn_test_median": float(np.median(nn_t)), "nn_test_min": float(nn_t.min()),
        "copies": int(np.sum(nn_s < nn_t.min())),
    }


def main(argv=None, prog="python -m ddpm_ref.classifier") -> int:
    """``ddpm-ref classifier SAMPLES.npy``: sample-quality numbers as JSON."""
    import json

    from ddpm_ref._cli_args import Parser, int_at_least

    p = Parser(prog=prog, description=(
        "Judge generated digits (uint8 (N, H, W) .npy, as `ddpm-ref sample --out FILE.npy` "
        "writes) with the digit classifier: confidence, class balance, Fréchet distance, "
        "nearest training digits."))
    p.add_argument("samples", help="a .npy file of uint8 images (N, H, W), as `ddpm-ref sample "
                   "--out FILE.npy` (or FILE.png, which writes FILE.npy too) writes")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="seed of the classifier's training (default: %(default)s)")
    args = p.parse_args(argv)
    path = Path(args.samples)
    if not path.is_file():
        raise ValueError(f"SAMPLES: no such file: {path}")
    try:
        images = np.load(path, allow_pickle=False)
    except Exception as e:
        why = "pickled data" if "pickle" in str(e) else type(e).__name__
        raise ValueError(f"SAMPLES: {path} is not a readable .npy file ({why})") from None
    print(json.dumps(sample_quality(images, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
