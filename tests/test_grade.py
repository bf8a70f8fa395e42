"""The grader both ways: reference solutions (thin files over the library) get full points; the
skeletons and typical student mistakes fail the check that names the mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ddpm_ref.grade import ASSIGNMENTS, grade, main

ROOT = Path(__file__).resolve().parents[1]
SKELETONS = ROOT / "notebooks" / "assignments"

REFERENCE = {
    "forward": """
        import numpy as np
        from ddpm_ref import diffusion

        def alpha_bar(beta):
            return np.concatenate([[1.0], np.cumprod(1.0 - beta[1:])])

        q_step = diffusion.q_step
        q_sample = diffusion.q_sample
    """,
    "posterior": """
        from ddpm_ref.diffusion import q_posterior
    """,
    "bound": """
        from ddpm_ref import elbo

        normal_kl = elbo.normal_kl
        discretized_gaussian_log_likelihood = elbo.discretized_gaussian_log_likelihood

        def vlb_term(sched, x0, xt, t, eps_theta):
            return elbo.vlb_term(sched, x0, xt, t, eps_theta, variance="fixedlarge")
    """,
    "algorithms": """
        import numpy as np
        from ddpm_ref import diffusion, elbo, sampling

        def draw_t(rng, T, B):
            return rng.integers(1, T + 1, size=B)

        def l_simple_loss(sched, model_fn, x0, t, eps):
            return elbo.l_simple(eps, model_fn(diffusion.q_sample(sched, x0, t, eps), t))[0]

        def reverse_step(sched, model_fn, xt, t, z):
            tt = np.full(len(xt), t)
            mu, _, log_sigma2 = diffusion.p_mean_var(sched, xt, tt, model_fn(xt, tt),
                                                     mean_type="eps", variance="fixedlarge")
            return mu + (np.exp(0.5 * log_sigma2) * z if t > 1 else 0.0)

        def sample(sched, model_fn, xT, rng):
            return sampling.sample_from(sched, model_fn, xT, sched.T, rng)
    """,
    "backward": """
        from ddpm_ref.nn.layers import linear_backward, linear_forward, silu_backward, silu_forward

        def residual_forward(x, w, b):
            h, c1 = silu_forward(x)
            y, c2 = linear_forward(h, w, b)
            return x + y, (c1, c2)

        def residual_backward(dout, cache):
            c1, c2 = cache
            dh, dw, db = linear_backward(dout, c2)
            return dout + silu_backward(dh, c1), dw, db
    """,
}

# A NumPy-only solution of "bound", as a student writes it: the tolerances must let it pass.
BOUND_FROM_SCRATCH = """
    import numpy as np
    from scipy import special

    def normal_kl(mean1, logvar1, mean2, logvar2):
        return 0.5 * (logvar2 - logvar1 + np.exp(logvar1 - logvar2) - 1.0
                      + (mean1 - mean2) ** 2 * np.exp(-logvar2))

    def vlb_term(sched, x0, xt, t, eps_theta):
        r = (-1,) + (1,) * (x0.ndim - 1)
        ab, abp = sched.alpha_bar[t].reshape(r), sched.alpha_bar[t - 1].reshape(r)
        a, b = sched.alpha[t].reshape(r), sched.beta[t].reshape(r)
        mu = np.sqrt(abp) * b / (1 - ab) * x0 + np.sqrt(a) * (1 - abp) / (1 - ab) * xt
        var = (1 - abp) / (1 - ab) * b
        mu_theta = (xt - b / np.sqrt(1 - ab) * eps_theta) / np.sqrt(a)
        kl = normal_kl(mu, np.log(var), mu_theta, np.log(b))
        return kl.reshape(len(x0), -1).sum(axis=1)

    def discretized_gaussian_log_likelihood(x, mean, log_scale):
        s = np.exp(log_scale)
        hi = np.where(x > 0.999, 1.0, special.ndtr((x + 1 / 255 - mean) / s))
        lo = np.where(x < -0.999, 0.0, special.ndtr((x - 1 / 255 - mean) / s))
        return np.log(hi - lo)
"""

# (assignment, a line of the reference to replace, the mistake, the check that must fail,
#  checks that must still pass)
MISTAKES = [
    ("forward", "np.concatenate([[1.0], np.cumprod(1.0 - beta[1:])])",
     "np.concatenate([np.cumprod(1.0 - beta[1:]), [0.0]])", "alpha_bar", ["q_step"]),
    ("forward", "q_sample = diffusion.q_sample",  # off-by-one t: alpha_bar_{t-1} for alpha_bar_t
     "def q_sample(sched, x0, t, eps):\n"
     "    ab = sched.alpha_bar[t - 1][:, None]\n"
     "    return np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps", "q_sample", ["q_step", "alpha_bar"]),
    ("forward", "q_sample = diffusion.q_sample",  # a missing square root
     "def q_sample(sched, x0, t, eps):\n"
     "    ab = sched.alpha_bar[t][:, None]\n"
     "    return ab * x0 + np.sqrt(1 - ab) * eps", "q_sample", ["q_step"]),
    ("posterior", "from ddpm_ref.diffusion import q_posterior",  # beta for beta_tilde
     "from ddpm_ref import diffusion\n"
     "def q_posterior(sched, x0, xt, t):\n"
     "    return diffusion.q_posterior(sched, x0, xt, t)[0], sched.beta[t][:, None]",
     "beta_tilde", ["mu_tilde"]),
    ("posterior", "from ddpm_ref.diffusion import q_posterior",  # alpha_bar_t for alpha_bar_{t-1}
     "import numpy as np\n"
     "def q_posterior(sched, x0, xt, t):\n"
     "    ab, abp = sched.alpha_bar[t][:, None], sched.alpha_bar[t][:, None]\n"
     "    a, b = sched.alpha[t][:, None], sched.beta[t][:, None]\n"
     "    return (np.sqrt(abp) * b / (1 - ab) * x0 + np.sqrt(a) * (1 - abp) / (1 - ab) * xt,\n"
     "            sched.beta_tilde[t][:, None])", "mu_tilde", ["beta_tilde"]),
    ("bound", 'variance="fixedlarge")', 'variance="fixedsmall")',  # sigma^2 = beta_tilde
     "vlb_term", ["normal_kl", "Eq. (13) on interior"]),
    ("algorithms", "rng.integers(1, T + 1, size=B)", "rng.integers(0, T, size=B)",
     "draw_t", ["l_simple_loss", "sample"]),
    ("algorithms", "(np.exp(0.5 * log_sigma2) * z if t > 1 else 0.0)",
     "np.exp(0.5 * log_sigma2) * z", "reverse_step: sigma", ["draw_t", "reverse_step: the mean"]),
    ("backward", "from ddpm_ref.nn.layers import linear_backward, linear_forward, silu_backward, "
     "silu_forward",
     "from ddpm_ref.nn.layers import linear_forward, silu_backward, silu_forward\n"
     "from ddpm_ref.nn.layers import linear_backward as _lb\n"
     "def linear_backward(dout, cache):\n"
     "    dx, dw, db = _lb(dout, cache)\n"
     "    return -dx, dw, db", "linear_backward", ["linear_forward", "silu_backward"]),
    ("backward", "return dout + silu_backward(dh, c1), dw, db",  # the skip's gradient forgotten
     "return silu_backward(dh, c1), dw, db", "residual", ["linear_backward", "silu_backward"]),
]


def _write(tmp_path, name, body) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def _by_name(results, fragment):
    hits = [r for r in results if r.check.name.startswith(fragment)]
    assert len(hits) == 1, f"{fragment!r} names {len(hits)} checks"
    return hits[0]


def test_every_assignment_has_a_reference_and_a_skeleton():
    assert set(REFERENCE) == set(ASSIGNMENTS)
    assert len(ASSIGNMENTS) >= 5
    for a in ASSIGNMENTS.values():
        assert (SKELETONS / a.skeleton).is_file()


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_solution_gets_full_points(tmp_path, name, capsys):
    path = _write(tmp_path, name, REFERENCE[name])
    assert main([name, str(path)]) == 0
    out = capsys.readouterr().out
    total = sum(c.points for c in ASSIGNMENTS[name].checks)
    assert f"total: {total}/{total} points" in out
    assert "FAIL" not in out


def test_bound_from_scratch_passes(tmp_path):
    results = grade(ASSIGNMENTS["bound"], _write(tmp_path, "bound", BOUND_FROM_SCRATCH))
    assert [r.status for r in results] == ["pass"] * len(results), [r.detail for r in results]


def test_bound_from_scratch_without_open_edge_bins_fails_only_the_sum(tmp_path):
    body = BOUND_FROM_SCRATCH.replace("np.where(x > 0.999, 1.0, ", "(").replace(
        "np.where(x < -0.999, 0.0, ", "(")
    results = grade(ASSIGNMENTS["bound"], _write(tmp_path, "bound", body))
    assert _by_name(results, "Eq. (13): the 256").status == "FAIL"
    assert _by_name(results, "Eq. (13) on interior").status == "pass"


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_skeleton_is_not_implemented_everywhere(name, capsys):
    assert main([name, str(SKELETONS / ASSIGNMENTS[name].skeleton)]) == 1
    out = capsys.readouterr().out
    results = grade(ASSIGNMENTS[name], SKELETONS / ASSIGNMENTS[name].skeleton)
    assert {r.status for r in results} == {"not implemented"}
    assert f"total: 0/{sum(c.points for c in ASSIGNMENTS[name].checks)} points" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("name, old, new, fails, passes", MISTAKES,
                         ids=[f"{m[0]}-{m[3]}-{i}" for i, m in enumerate(MISTAKES)])
def test_mistake_fails_the_right_check(tmp_path, name, old, new, fails, passes):
    body = textwrap.dedent(REFERENCE[name])
    assert old in body
    results = grade(ASSIGNMENTS[name], _write(tmp_path, name, body.replace(old, new)))
    assert _by_name(results, fails).status == "FAIL", _by_name(results, fails)
    for ok in passes:
        assert _by_name(results, ok).status == "pass", _by_name(results, ok)


def test_missing_function_and_crash_are_one_line(tmp_path, capsys):
    body = textwrap.dedent(REFERENCE["forward"]).replace("q_step = diffusion.q_step", "") + (
        "\ndef q_sample(sched, x0, t, eps):\n    return x0[None] @ eps\n")
    assert main(["forward", str(_write(tmp_path, "forward", body))]) == 1
    out = capsys.readouterr().out
    assert "[missing]" in out and "no function q_step()" in out
    assert "[error]" in out and "Traceback" not in out


def test_usage_errors(tmp_path, capsys):
    assert main(["nope", "x.py"]) == 2
    assert "assignment: expected one of" in capsys.readouterr().err
    assert main(["forward", str(tmp_path / "absent.py")]) == 2
    assert "expected an existing .py file" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    assert main(["forward", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "could not be imported (line 1): SyntaxError" in captured.err
    assert "total: 0/10 points" in captured.out
    assert main(["--list"]) == 0
    assert "forward" in capsys.readouterr().out
