"""Tests for ddpm_ref.experiments.table2 with a tiny budget (the real run takes hours)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ddpm_ref.classifier import train_classifier
from ddpm_ref.data.mnist import load_digits
from ddpm_ref.experiments.table2 import ROWS, Table2Config, main, markdown_table, run_table2

TINY = dict(ch=8, ch_mult=(1, 2), groups=4, temb_dim=16, mid_attention=False)


@pytest.fixture(scope="module")
def classifier():
    x, y = load_digits("train", 14)
    return train_classifier(x[::10], y[::10], np.random.default_rng(0), hidden=16, epochs=1)


def test_every_row_trains_and_is_measured_with_a_tiny_budget(classifier):
    cfg = Table2Config(steps=2, batch=4, warmup=1, T=4, n_samples=4, n_eval=2, net=TINY)
    results = run_table2(cfg, classifier=classifier, log=lambda s: None)
    assert [r["name"] for r in results] == [r["name"] for r in ROWS]
    for r in results:
        assert not r["diverged"]
        assert r["frechet"] >= 0 and 0 <= r["confident"] <= 1
        assert sum(r["class_counts"]) == 4
        # an untrained model's bound is far above the 8 bits/dim of a uniform code, yet finite
        assert 0 < r["bits_per_dim"] < math.inf
    table = markdown_table(results)
    assert table.count("\n") == len(ROWS) + 1  # header, rule, one line per row
    assert "3.17" in table  # the paper's FID for L_simple stands next to ours


def test_main_rejects_an_unknown_row(capsys):
    with pytest.raises(SystemExit):
        main(["--rows", "eps_simple,nope"])
    assert "--rows" in capsys.readouterr().err


def test_config_defaults_are_serialisable():
    json.dumps(Table2Config().__dict__)


def test_markdown_table_escapes_the_pipes_of_norm_bars():
    r = dict(label="||a - b||^2", paper_fid=None, frechet=1.0, confident=0.5,
             bits_per_dim=2.0, train_s=3.0)
    line = markdown_table([r]).splitlines()[-1]
    assert line.replace("\\|", "").count("|") == 7  # 6 cells, 7 separators
