"""Table 2 at 2-D scale (experiments/table2_2d.py): the rows, the paired evaluation, the CLI."""

import json

import numpy as np
import pytest

from ddpm_ref.analytic import oracle_model_fn
from ddpm_ref.data import toy2d
from ddpm_ref.diffusion import eps_from_mu, fixed_variance, mu_from_eps
from ddpm_ref.experiments import table2_2d
from ddpm_ref.experiments.table2_2d import (
    ROWS_2D,
    Table2DConfig,
    evaluate_model,
    markdown_table_2d,
    paired_gap,
    run_table2_2d,
)

TINY = dict(steps=20, batch=32, warmup=5, T=50, n_train=500, n_samples=64, n_eval=8)


def test_rows_are_table2s_six_and_the_hybrid():
    combos = [(r["mean_type"], r["objective"], r["variance"]) for r in ROWS_2D]
    assert combos == [
        ("mu", "vlb", "learned"), ("mu", "vlb", "fixedlarge"), ("mu", "simple", "fixedlarge"),
        ("eps", "vlb", "learned"), ("eps", "vlb", "fixedlarge"), ("eps", "simple", "fixedlarge"),
        ("eps", "hybrid", "learned_range"),
    ]
    # the paper's blank (unstable) entries: mu with the MSE, eps with L and a learned Sigma
    assert [r["name"] for r in ROWS_2D if r["paper"] is None] == ["mu_mse", "eps_L_learned"]
    assert ROWS_2D[5]["paper"] == (9.46, 3.17)  # L_simple: IS 9.46, FID 3.17


def _setup(cfg):
    return table2_2d.make_data(cfg)


def test_evaluation_is_paired_across_parametrisations_and_variances():
    # the oracle eps*, written as a mu_tilde predictor, and with a "learned" log-variance output
    # equal to the fixed one, must give the same bound on the same x_t draws (to rounding):
    # the rows' numbers differ only through the models, not through the evaluation's noise
    cfg = Table2DConfig(**{**TINY, "T": 40})
    sched, _, x_eval, x_ref = _setup(cfg)
    eps_fn = oracle_model_fn(sched, toy2d.GMM)
    mu_fn = lambda xt, t: mu_from_eps(sched, xt, t, eps_fn(xt, t))
    log_s2 = np.log(fixed_variance(sched, "fixedlarge")[0])  # (T+1,)
    learned_fn = lambda xt, t: np.concatenate(
        [eps_fn(xt, t), np.broadcast_to(log_s2[t][:, None], xt.shape)], axis=1)
    a = evaluate_model(sched, eps_fn, cfg, x_eval, x_ref)
    b = evaluate_model(sched, mu_fn, cfg, x_eval, x_ref, mean_type="mu")
    c = evaluate_model(sched, learned_fn, cfg, x_eval, x_ref, variance="learned")
    np.testing.assert_allclose(b["per_point"], a["per_point"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(c["per_point"], a["per_point"], rtol=1e-12)
    assert paired_gap(b, a)[0] == pytest.approx(0.0, abs=1e-9)
    # a worse model (eps* shrunk by 10%) has a larger bound, point by point on average
    d = evaluate_model(sched, lambda xt, t: 0.9 * eps_fn(xt, t), cfg, x_eval, x_ref)
    gap, se = paired_gap(d, a)
    assert gap > 0 and np.isfinite(se)
    assert np.allclose(eps_from_mu(sched, x_eval, np.full(len(x_eval), 7),
                                   mu_fn(x_eval, np.full(len(x_eval), 7))),
                       eps_fn(x_eval, np.full(len(x_eval), 7)), rtol=1e-9, atol=1e-12)


def test_every_row_trains_and_is_measured_with_a_tiny_budget():
    res = run_table2_2d(Table2DConfig(**TINY))
    o = res["oracle"]
    assert o["mmd_floor"] > 0 and o["bound"] > o["nll"] - 5 * o["nll_se"] - 5 * o["bound_se"]
    assert [r["name"] for r in res["rows"]] == [r["name"] for r in ROWS_2D]
    for r in res["rows"]:
        if r["diverged_at"] is None:
            assert np.isfinite(r["bound"]) and r["per_point"].shape == (TINY["n_eval"],)
            assert len(r["loss"]) == 20  # log_every = steps // 20
    table = markdown_table_2d(res)
    assert table.count("\n| ") >= len(ROWS_2D) + 1 and "oracle eps*" in table


def test_markdown_marks_a_diverged_row():
    o = {"mmd": 1e-3, "mmd_floor": 1e-3, "bound": 1.0, "bound_se": 0.1, "nll": 0.9, "nll_se": 0.1,
         "per_point": np.ones(3)}
    row = dict(ROWS_2D[3], diverged_at=17, train_s=1.0)
    table = markdown_table_2d({"config": {"n_samples": 10}, "oracle": o, "rows": [row]})
    assert "diverged at step 17" in table


def test_config_rejects_bad_budgets():
    with pytest.raises(ValueError, match="steps"):
        Table2DConfig(steps=0)
    with pytest.raises(ValueError, match="n_eval"):
        Table2DConfig(n_eval=1)


def test_cli_writes_results_and_table(tmp_path, capsys):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert table2_2d.main(args + ["--rows", "eps_simple,eps_hybrid", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in res["rows"]] == ["eps_simple", "eps_hybrid"]
    assert "per_point" not in res["oracle"] and (tmp_path / "table.md").is_file()
    with pytest.raises(SystemExit):
        table2_2d.main(["--rows", "nope", "--out", str(tmp_path)])
    assert "unknown row" in capsys.readouterr().err
