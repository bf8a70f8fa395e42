"""Tests for ddpm_ref.classifier: cross-entropy, hand-written backprop, Fréchet distance, NN."""

from __future__ import annotations

import numpy as np
import pytest

from ddpm_ref.classifier import (
    DigitClassifier,
    frechet_distance,
    nearest_neighbour_distance,
    softmax_cross_entropy,
    train_classifier,
)
from ddpm_ref.data.mnist import load_digits
from ddpm_ref.nn.gradcheck import grad_check, numerical_grad, rel_error


def test_cross_entropy_matches_its_definition_and_gradient():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 10)) * 3
    labels = rng.integers(0, 10, 5)
    loss, d = softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), labels])), rel=1e-12)
    num = numerical_grad(lambda x: softmax_cross_entropy(x, labels)[0], logits)
    assert rel_error(d, num, normwise=True) < 1e-7  # elementwise is noise-bound on tiny entries
    # huge logits do not overflow
    loss, _ = softmax_cross_entropy(np.array([[1e4, 0.0]]), np.array([1]))
    assert loss == pytest.approx(1e4, rel=1e-12)


def test_classifier_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    params = {"w1": rng.standard_normal((16, 7)) * 0.5, "b1": rng.standard_normal(7) * 0.1,
              "w2": rng.standard_normal((7, 10)) * 0.5, "b2": rng.standard_normal(10) * 0.1}
    clf = DigitClassifier(params, image_size=4)
    x = rng.uniform(-1, 1, (6, 1, 4, 4))
    labels = rng.integers(0, 10, 6)

    def loss(_p):
        return softmax_cross_entropy(clf.forward(x)[0], labels)[0]

    logits, _, cache = clf.forward(x)
    grads = clf.backward(softmax_cross_entropy(logits, labels)[1], cache)
    errors = grad_check(loss, clf.params, grads)
    assert max(errors.values()) < 1e-6, errors


def test_trained_classifier_beats_chance_by_far_on_held_out_digits():
    x, y = load_digits("train", 14)
    xt, yt = load_digits("test", 14)
    clf = train_classifier(x, y, np.random.default_rng(0), hidden=32, epochs=4)
    # 10 classes: chance is 10 %; a small MLP on 4,500 digits gets well above 70 %
    assert clf.accuracy(xt, yt) > 0.7
    p = clf.predict_proba(xt[:20])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    assert clf.features(xt[:20]).shape == (20, 32)


def test_frechet_distance_of_a_shift_is_its_squared_length():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((200, 3))
    shift = np.array([1.0, -2.0, 0.5])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a + shift) == pytest.approx(np.sum(shift**2), rel=1e-8)


def test_frechet_distance_of_a_scaling_in_1d():
    # b = 2a: d^2 = (mean_a - 2 mean_a)^2 + s^2 + 4 s^2 - 2 sqrt(4 s^4) = mean_a^2 + s^2
    a = np.random.default_rng(3).standard_normal((50, 1)) + 0.7
    s2 = np.var(a, ddof=1)
    assert frechet_distance(a, 2 * a) == pytest.approx(a.mean() ** 2 + s2, rel=1e-8)


def test_nearest_neighbour_distance_by_brute_force():
    rng = np.random.default_rng(4)
    ref = rng.integers(0, 256, (7, 5, 5)).astype(np.uint8)
    x = np.concatenate([ref[2:3], rng.integers(0, 256, (3, 5, 5)).astype(np.uint8)])
    d = nearest_neighbour_distance(x, ref)
    assert d[0] == 0.0  # a copy of a reference image
    want = [min(np.sqrt(np.sum((xi.astype(float) - r.astype(float)) ** 2)) for r in ref)
            for xi in x]
    np.testing.assert_allclose(d, want, rtol=1e-9)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="^labels:"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="^feat_b:"):
        frechet_distance(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="^rng:"):
        train_classifier(np.zeros((2, 4, 4), np.uint8), np.array([0, 1]), 0)


def test_sample_quality_flags_copies_of_training_digits():
    from ddpm_ref.classifier import sample_quality

    x_tr, _ = load_digits("train", 14)
    x_te, _ = load_digits("test", 14)
    rep = sample_quality(x_tr[:10])
    assert rep["copies"] == 10 and rep["nn_sample_min"] == 0.0
    rep = sample_quality(x_te[::50])  # real held-out digits: never nearer than the nearest
    assert rep["copies"] == 0
    assert rep["classifier_test_accuracy"] > 0.8
    assert sum(rep["class_counts"]) == 10
    with pytest.raises(ValueError, match="^images:"):
        sample_quality(x_te[:5].astype(np.float32))


def test_frechet_distance_with_fewer_examples_than_features_matches_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((6, 10)), rng.standard_normal((7, 10)) + 0.2
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # singular (rank 5 and 6)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root = np.real(linalg.sqrtm(s_a @ s_b))
    want = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a) + np.trace(s_b)
            - 2 * np.trace(root))
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-6)


def test_default_classifier_is_trained_once_then_read_from_the_cache(tmp_path, monkeypatch):
    import ddpm_ref.classifier as clf_mod

    real, calls = clf_mod.train_classifier, []

    def quick(x, labels, rng, **kw):  # one epoch: the cache, not the recipe, is under test
        calls.append(1)
        return real(x, labels, rng, epochs=1)

    monkeypatch.setenv("DDPM_REF_CACHE", str(tmp_path))
    monkeypatch.setattr(clf_mod, "train_classifier", quick)
    monkeypatch.setattr(clf_mod, "_DEFAULT", {})
    messages = []
    first = clf_mod.default_classifier(14, seed=3, log=messages.append)
    assert calls == [1] and len(messages) == 1 and str(tmp_path) in messages[0]
    assert len(list(tmp_path.glob("digit_classifier_14_*.npz"))) == 1
    monkeypatch.setattr(clf_mod, "_DEFAULT", {})  # a new process: memory empty, disk not
    again = clf_mod.default_classifier(14, seed=3, log=messages.append)
    assert calls == [1] and len(messages) == 1  # not trained again
    for k in first.params:
        np.testing.assert_array_equal(again.params[k], first.params[k])
    clf_mod.default_classifier(14, seed=4, log=messages.append)
    assert calls == [1, 1]  # another seed is another classifier


def test_the_calibrated_numbers_put_real_digits_at_one_and_noise_below():
    from ddpm_ref.classifier import sample_quality

    x_tr, y_tr = load_digits("train", 14)
    real = x_tr[np.random.default_rng(1).choice(len(x_tr), 200, replace=False)]
    rep = sample_quality(real)  # real digits: as confident as held-out ones, within sampling
    assert 0.85 < rep["confident_ratio"] < 1.15 and rep["class_chi2_p"] > 0.01
    # real digits sit inside the real-vs-real Fréchet spread; noisy ones far outside it
    assert rep["frechet"] < rep["frechet_real_max"] + 3 * rep["frechet_real_sd"]
    noisy = np.clip(real + np.random.default_rng(0).normal(0, 100, real.shape), 0, 255)
    bad = sample_quality(noisy.astype(np.uint8))
    assert bad["confident_ratio"] < 0.8 * rep["confident_ratio"]
    assert bad["frechet"] > rep["frechet_real"] + 5 * rep["frechet_real_sd"]
    ones = x_tr[np.flatnonzero(y_tr == 1)[:200]]  # one class only
    assert sample_quality(ones)["class_chi2_p"] < 1e-10
