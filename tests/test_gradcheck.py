"""Tests for ddpm_ref.nn.gradcheck: the checker finds correct gradients correct and wrong ones
wrong, and its finite differences reach the accuracy the layer tests rely on."""

import numpy as np
import pytest

from ddpm_ref.nn.gradcheck import check_layer, grad_check, numerical_grad, rel_error


@pytest.fixture
def rng():
    return np.random.default_rng(2)


def test_rel_error_values():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 6.0])) == pytest.approx(0.5)
    # elementwise: a tiny entry with a tiny absolute error is a large relative error...
    a, b = np.array([1.0, 1e-6]), np.array([1.0, 2e-6])
    assert rel_error(a, b) == pytest.approx(1 / 3)
    # ...normwise it is measured against the array's scale
    assert rel_error(a, b, normwise=True) == pytest.approx(1e-6 / 2)
    # both zero: the 1e-8 floor avoids 0/0
    assert rel_error(np.zeros(3), np.full(3, 1e-12)) == pytest.approx(1e-4)


def test_numerical_grad_accuracy(rng):
    # d/dx sum(sin x) = cos x; centred differences with h = 1e-5 are accurate to ~1e-10
    x = rng.standard_normal((3, 4))
    x0 = x.copy()
    g = numerical_grad(lambda z: np.sum(np.sin(z)), x)
    assert rel_error(g, np.cos(x)) < 1e-8
    np.testing.assert_array_equal(x, x0)  # perturbations undone


def test_numerical_grad_sparse_coordinates(rng):
    x = rng.standard_normal(10)
    idx = np.array([7, 2])
    g = numerical_grad(lambda z: np.sum(z**3), x, idx=idx)
    assert g.shape == (2,)
    assert rel_error(g, 3 * x[idx] ** 2) < 1e-8


def test_grad_check_passes_correct_and_flags_wrong(rng):
    params = {"a": rng.standard_normal((3, 3)), "b": rng.standard_normal(4)}
    f = lambda p: np.sum(p["a"] ** 2) + np.sum(np.exp(p["b"]))
    good = {"a": 2 * params["a"], "b": np.exp(params["b"])}
    errs = grad_check(f, params, good)
    assert max(errs.values()) < 1e-7
    bad = {"a": 2 * params["a"], "b": 1.01 * np.exp(params["b"])}  # 1% off
    errs = grad_check(f, params, bad, keys=["b"], n_coords=2, rng=rng)
    assert set(errs) == {"b"}
    assert errs["b"] > 1e-3


def test_grad_check_coordinates_without_rng_are_deterministic(rng):
    params = {"w": rng.standard_normal(50)}
    f = lambda p: np.sum(np.tanh(p["w"]))
    wrong = {"w": 1 - np.tanh(params["w"]) ** 2}
    wrong["w"][::7] += 1.0  # wrong on every 7th coordinate, incl. 0 and 49
    errs = [grad_check(f, params, wrong, n_coords=2)["w"] for _ in range(2)]
    # evenly spread coordinates {0, 49}: both wrong, and the same answer twice
    assert errs[0] == errs[1] > 0.1


def test_check_layer_flags_a_wrong_backward(rng):
    fwd = lambda x: (x**2, x)
    good = lambda dout, x: 2 * x * dout
    bad = lambda dout, x: x * dout
    x = rng.standard_normal((2, 3))
    assert check_layer(fwd, good, [x], rng=rng)[0] < 1e-7
    assert check_layer(fwd, bad, [x], rng=rng)[0] > 0.1


def test_bad_inputs_raise(rng):
    with pytest.raises(ValueError, match="^x: expected a float64"):
        numerical_grad(lambda z: z.sum(), np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="^b: expected shape"):
        rel_error(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="^keys:"):
        grad_check(lambda p: 0.0, {"a": np.ones(2)}, {"a": np.ones(2)}, keys=["c"])
    with pytest.raises(ValueError, match=r"^grads\['a'\]"):
        grad_check(lambda p: 0.0, {"a": np.ones(2)}, {"a": np.ones(3)})
    with pytest.raises(ValueError, match="^wrt:"):
        check_layer(lambda x: (x, None), lambda d, c: (d, d), [np.ones(2)])
