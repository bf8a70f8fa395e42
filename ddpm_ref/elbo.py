r"""The variational bound on the negative log-likelihood, term by term, with exact gradients.

Paper: Ho, Jain, Abbeel (2020), §2 (Eqs. 3, 5), §3.2 (Eqs. 8, 12), §3.3 (Eq. 13, the discretized
decoder) and §3.4 (Eq. 14, L_simple); the hybrid objective of Nichol & Dhariwal (2021), §3.1.

  L = L_T + sum_{t>1} L_{t-1} + L_0                                           (Eq. 5)
  L_T = KL(q(x_T | x_0) || N(0, I))                    -> prior_kl
  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))  -> vlb_term (t >= 2)
  L_0 = -log p(x_0 | x_1)                              -> decoder_nll, vlb_term (t = 1)

  L = sum of all terms over t, exactly                 -> bound_terms
  L_T + T L_{t-1}, t ~ U{1..T} (unbiased)              -> bound_estimate
  small t exactly, strata of the rest (unbiased)       -> bound_stratified

All values are nats per example (summed over data dimensions) unless stated; ``bits_per_dim``
converts. The elementwise distributions (the Gaussian KL, the discretized decoder of Eq. 13) are in
``ddpm_ref/distributions.py``; ``normal_kl`` and ``discretized_gaussian_log_likelihood`` are
re-exported here. ``ddpm_ref.bound`` is an alias of the last two functions.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref._checks import check_choice, check_param, check_rng, check_t, check_x, extract
from ddpm_ref.diffusion import (
    FIXED_VARIANCES,
    MEAN_TYPES,
    VARIANCE_TABLE,
    VARIANCES,
    _eps_hat,
    _p_mean_var,
    _posterior_mean,
    _predict_x0,
    _q_sample,
    _split_output,
    _x0_gain,
    fixed_variance,
)
from ddpm_ref.distributions import (  # noqa: F401 (normal_kl, the decoder: re-exported)
    DECODERS,
    _check_on_grid,
    _disc_loglik,
    _gauss_nll,
    _u_minus_log1p,
    discretized_gaussian_log_likelihood,
    normal_kl,
)


def decoder_nll(x0, mean, log_scale, decoder="discretized", cdf="exact"):
    r"""L_0 = -log p_theta(x_0 | x_1) summed over dimensions, in nats per example, shape (B,).

    Paper: Eq. (13) for ``decoder="discretized"`` (image data on the 256-level grid);
    ``decoder="gaussian"`` is the continuous N(mean, e^{2 log_scale}) density, for real-valued
    data such as 2-D points (its "NLL" is then a differential entropy, not a code length).
    """
    x0 = check_x("x0", x0)
    mean = check_param("mean", mean, "x0", x0.shape)
    log_scale = check_param("log_scale", log_scale, "x0", x0.shape)
    check_choice("decoder", decoder, DECODERS)
    if decoder == "gaussian":
        nll = _gauss_nll(x0, mean, log_scale)[0]
    else:
        nll = -discretized_gaussian_log_likelihood(x0, mean, log_scale, cdf=cdf)
    return np.broadcast_to(nll, x0.shape).reshape(x0.shape[0], -1).sum(axis=1)


def prior_kl(sched, x0):
    r"""L_T = KL(q(x_T | x_0) || N(0, I)) summed over dimensions, nats, shape (B,).

    Paper: Eq. (5), with q(x_T | x_0) from Eq. (4). It has no parameters; for the paper's
    schedule it is ~1e-5 bits/dim (§4).
    """
    x0 = check_x("x0", x0)
    T = sched.T
    mean = np.sqrt(sched.alpha_bar[T]) * x0
    kl = normal_kl(mean, np.log(sched.one_minus_alpha_bar[T]), 0.0, 0.0)
    return kl.reshape(x0.shape[0], -1).sum(axis=1)


def _sum_dims(a, shape):
    return np.broadcast_to(a, shape).reshape(shape[0], -1).sum(axis=1)


def _vlb(sched, x0, xt, t, model_output, mean_type, variance, clip_x0, decoder, cdf, want_grad,
         stop_grad_mean=False):
    """vlb_term and (optionally) its gradient w.r.t. model_output; see vlb_term."""
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    x0 = check_x("x0", x0, shape=xt.shape)
    check_choice("decoder", decoder, DECODERS)
    check_choice("mean_type", mean_type, MEAN_TYPES)
    check_choice("variance", variance, VARIANCES)
    return _vlb_core(sched, x0, xt, t, model_output, mean_type, variance, clip_x0, decoder, cdf,
                     want_grad, stop_grad_mean)


def _vlb_core(sched, x0, xt, t, model_output, mean_type, variance, clip_x0, decoder, cdf,
              want_grad, stop_grad_mean=False):
    """_vlb on checked inputs (float64 arrays, t int64 in 1..T, known option names)."""
    mu, _, log_var = _p_mean_var(sched, xt, t, model_output, mean_type, variance, clip_x0)
    learned = VARIANCE_TABLE[variance].learned  # log_var (B, ...) if learned, else (B, 1, ..., 1)
    nats = np.empty(xt.shape[0])
    g_mu = np.zeros(xt.shape)  # d nats / d mu_theta
    g_lv = np.zeros(xt.shape) if learned else None  # d nats / d log sigma^2

    kl = t >= 2  # L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)), Eqs. (5)-(7)
    if kl.any():
        mu_tilde = _posterior_mean(sched, x0[kl], xt[kl], t[kl])
        log_bt = extract(sched.log_beta_tilde_clipped, t[kl], xt.ndim)  # (b, 1, ..., 1)
        mu_k, lv_k = mu[kl], log_var[kl]
        nats[kl] = _sum_dims(normal_kl(mu_tilde, log_bt, mu_k, lv_k), mu_k.shape)
        if want_grad:
            inv_var = np.exp(-lv_k)
            g_mu[kl] = (mu_k - mu_tilde) * inv_var
            if learned:
                g_lv[kl] = 0.5 * (1.0 - np.exp(log_bt - lv_k) - (mu_tilde - mu_k) ** 2 * inv_var)

    dec = ~kl  # L_0 = -log p(x_0 | x_1), Eq. (13), with log_scale = 0.5 log sigma_1^2
    if dec.any():
        x, m, log_scale = x0[dec], mu[dec], 0.5 * log_var[dec]
        if decoder == "gaussian":
            nll, d_m, d_ls = _gauss_nll(x, m, log_scale)
        elif want_grad:
            _check_on_grid(x)
            logp, d_m, d_ls = _disc_loglik(x, m, log_scale, want_grad=True)
            nll, d_m, d_ls = -logp, -d_m, -d_ls
        else:
            nll = -discretized_gaussian_log_likelihood(x, m, log_scale, cdf=cdf)
        nats[dec] = _sum_dims(nll, x.shape)
        if want_grad:
            g_mu[dec] = d_m
            if learned:
                g_lv[dec] = 0.5 * d_ls
    if not want_grad:
        return nats, None

    # chain rule to the network output: mu_theta = coef1 x0_hat(out) + coef2 xt for every
    # mean type (Eq. 11 is this with x0_hat(eps)), x0_hat linear in out (clipping gates it)
    gain = extract(sched.posterior_mean_coef1, t, xt.ndim) * _x0_gain(sched, t, xt.ndim, mean_type)
    out_mean, v = _split_output(sched, xt, model_output, variance)
    if clip_x0:
        x0_hat = _predict_x0(sched, xt, t, out_mean, mean_type)
        gain = gain * (np.abs(x0_hat) <= 1.0)
    d_mean = np.zeros(xt.shape) if stop_grad_mean else g_mu * gain  # (B, C, ...)
    if not learned:
        return nats, d_mean
    dlog_dv = VARIANCE_TABLE[variance].dlog_dv  # d log sigma^2 / dv; None: log sigma^2 = v
    g_v = g_lv if dlog_dv is None else g_lv * dlog_dv(sched, t, xt.ndim)
    return nats, np.concatenate([d_mean, g_v], axis=1)  # (B, 2C, ...)


def vlb_term(sched, x0, xt, t, eps_theta, *, variance="fixedlarge", clip_x0=False,
             decoder="discretized", mean_type="eps", cdf="exact"):
    r"""The bound's term at each example's t, nats per example, shape (B,).

    Paper: Eq. (5). For t >= 2, L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))
    summed over dimensions (posterior from Eqs. 6-7, reverse step from :func:`p_mean_var`);
    for t = 1, L_0 = -log p_theta(x_0 | x_1) (:func:`decoder_nll` with mean mu_theta and
    log_scale = 0.5 log sigma_1^2).

    Args:
        x0: (B, ...) data. xt: (B, ...) a draw of q(x_t | x_0). t: int (B,) in 1..T.
        eps_theta: the network output (B, ...) or (B, 2C, ...) for a learned variance; with
            mean_type "x0"/"mu" it is that prediction instead of eps.
    """
    return _vlb(sched, x0, xt, t, eps_theta, mean_type, variance, clip_x0, decoder, cdf, False)[0]


def vlb_term_and_grad(sched, x0, xt, t, eps_theta, *, variance="fixedlarge", clip_x0=False,
                      decoder="discretized", mean_type="eps", stop_grad_mean=False):
    r"""vlb_term and its exact gradient w.r.t. the network output: (nats (B,), d_eps_theta).

    d_eps_theta is d(sum_b nats_b) / d(eps_theta), same shape as eps_theta. stop_grad_mean=True
    zeroes the mean part (the L_vlb half of Nichol & Dhariwal's hybrid loss trains only the
    variance). The decoder gradient uses the exact CDF.
    """
    return _vlb(sched, x0, xt, t, eps_theta, mean_type, variance, clip_x0, decoder, "exact",
                True, stop_grad_mean)


def vlb_weight(sched, t, variance="fixedlarge"):
    r"""Eq. (12)'s weight lambda_t and the per-dimension constant C_t, each shape (B,), t >= 2.

    L_{t-1} = lambda_t ||eps - eps_theta||^2 + D C_t with
    lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) and
    C_t = 0.5 (log(sigma_t^2 / beta_tilde_t) + beta_tilde_t / sigma_t^2 - 1), the KL between the
    two variances (0 for fixedsmall). C_t is computed as 0.5 (u - log(1 + u)),
    u = beta_tilde_t / sigma_t^2 - 1 (= -alpha_bar_{t-1} beta_t / (1 - alpha_bar_t) for
    fixedlarge), which keeps full relative accuracy when beta_tilde_t ~ beta_t (large t).
    """
    t = check_t(sched, t, t_min=2)
    check_choice("variance", variance, FIXED_VARIANCES)
    sigma2 = fixed_variance(sched, variance)[0][t]  # (B,)
    omab = sched.one_minus_alpha_bar[t]
    lam = sched.beta[t] ** 2 / (2.0 * sigma2 * sched.alpha[t] * omab)
    if variance == "fixedlarge":  # closed form: beta_tilde_t / beta_t - 1 cancels at large t
        u = -sched.alpha_bar[t - 1] * sched.beta[t] / omab
    else:
        u = sched.beta_tilde[t] / sigma2 - 1.0  # exactly 0 for fixedsmall
    return lam, 0.5 * _u_minus_log1p(u)


def bits_per_dim(nats, D):
    """nats / (D ln 2): a code length per data dimension in bits."""
    return np.asarray(nats) / (D * np.log(2.0))


def l_simple(eps, eps_theta):
    r"""Eq. (14): L_simple = mean over all elements of (eps - eps_theta)^2, and d/d eps_theta.

    Returns:
        (loss: float, d_eps_theta: same shape as eps_theta).
    """
    eps = check_x("eps", eps)
    eps_theta = check_x("eps_theta", eps_theta, shape=eps.shape)
    return _l_simple(eps, eps_theta)


def _l_simple(eps, eps_theta):
    diff = eps_theta - eps
    return float(np.mean(diff**2)), 2.0 * diff / diff.size


# ---- the whole bound: the sum over t, and its one-t estimate ----
# ``model_fn(xt, t) -> model_output`` follows docs/architecture.md; it receives
# ``sched.timesteps[t]`` (the original schedule's step).

def _default_chunk(sched, x0):
    # about 2**16 input elements per model call (at least one timestep)
    return int(max(1, min(sched.T, 2**16 // max(1, x0.size))))


def _split_variance(variants):
    """The variance whose output layout the network has: a learned one if any variant learns
    (the network then outputs mean and v; a fixed-variance variant reads the mean half)."""
    learned = [v for v, _ in variants.values() if VARIANCE_TABLE[v].learned]
    return learned[0] if learned else next(iter(variants.values()))[0]


def _variant_output(out, mean_out, variance):
    """What a variant's reverse process reads: the whole output if it learns its variance,
    else only the mean part (a fixed sigma^2 scored on a learned-variance network)."""
    return out if VARIANCE_TABLE[variance].learned else mean_out


def _terms_over_t(sched, model_fn, x0, rng, variants, decoder, mean_type, chunk, cdf, bar):
    """L[name] (B, T+1) for each (variance, clip_x0) of ``variants`` from ONE model call per
    (t, example), plus the eps-MSE and the clipped-x0 MSE (B, T+1); inputs already checked."""
    T, B = sched.T, x0.shape[0]
    split_as = _split_variance(variants)
    L = {name: np.full((B, T + 1), np.nan) for name in variants}
    mse, x0_mse = np.full((B, T + 1), np.nan), np.full((B, T + 1), np.nan)
    starts = range(1, T + 1, chunk)
    if bar is not None:
        from tqdm import tqdm

        starts = tqdm(starts, desc=bar, unit=" network call")  # each call: chunk steps x B
    for start in starts:
        ts = np.arange(start, min(start + chunk, T + 1))  # (k,)
        k = ts.shape[0]
        t = np.repeat(ts, B)  # (k*B,) timestep-major
        x0_k = np.broadcast_to(x0, (k,) + x0.shape).reshape((k * B,) + x0.shape[1:])
        eps = rng.standard_normal((k * B,) + x0.shape[1:])  # (k*B, ...)
        xt = _q_sample(sched, x0_k, t, eps)  # Eq. (4)
        out = np.asarray(model_fn(xt, sched.timesteps[t]), dtype=np.float64)  # ONE call
        mean_out, _ = _split_output(sched, xt, out, split_as)
        for name, (variance, clip_x0) in variants.items():
            nats, _ = _vlb_core(sched, x0_k, xt, t, _variant_output(out, mean_out, variance),
                                mean_type, variance, clip_x0, decoder, cdf, False)
            L[name][:, ts] = nats.reshape(k, B).T
        x0_hat = _predict_x0(sched, xt, t, mean_out, mean_type)  # (k*B, ...), unclipped
        eps_hat = _eps_hat(sched, xt, t, mean_out, mean_type)
        mse[:, ts] = ((eps - eps_hat) ** 2).reshape(k, B, -1).mean(axis=2).T
        x0_clip = np.clip(x0_hat, -1.0, 1.0)
        x0_mse[:, ts] = ((x0_k - x0_clip) ** 2).reshape(k, B, -1).mean(axis=2).T
    return L, mse, x0_mse


def bound_terms(sched, model_fn, x0, rng, *, variance="fixedlarge", clip_x0=False,
                decoder="discretized", mean_type="eps", t_chunk=None, progress=False,
                cdf="exact", variants=None):
    r"""Every term of the bound Eq. (5) for each example: the exact sum over t = 1..T.

    One x_t ~ q(x_t | x_0) (Eq. 4) is drawn per t and example; ``t_chunk`` timesteps x B
    examples are stacked into one model call. The noise stream does not depend on t_chunk.

    Args:
        x0: (B, ...) data (on the 256-level grid for decoder="discretized").
        rng: np.random.Generator for the eps draws.
        t_chunk: timesteps per model call (default: about 65k input elements per call).
        progress: show a tqdm bar over the model calls.
        variants: optional {name: (variance, clip_x0)}: several reverse processes scored on the
            same draws from one model call per (t, example) (``variance``/``clip_x0`` unused);
            "L", "L_0", "L_sum" and "total" are then dicts keyed by name.
    Returns:
        dict of float64 arrays, nats per example:
        "L_T" (B,): prior_kl; "L" (B, T+1): L[:, t] = vlb_term at t (L[:, 1] = L_0, L[:, 0] NaN);
        "L_0" (B,); "L_sum" (B,) = sum_{t>=2} L_{t-1}; "total" (B,) = L_T + L_sum + L_0;
        "l_simple" (B, T+1): ||eps - eps_hat||^2 averaged over dimensions (eps_hat the noise the
        output implies, Eq. 4 inverted at x0_hat for mean types "x0"/"mu", unclipped), col 0 NaN;
        "x0_mse" (B, T+1): the mean over dimensions of (x0 - clip(x0_hat, -1, 1))^2, col 0 NaN.
    """
    x0 = check_x("x0", x0)
    check_choice("decoder", decoder, DECODERS)
    if decoder == "discretized":
        _check_on_grid(x0)
    check_rng(rng)
    chunk = _default_chunk(sched, x0) if t_chunk is None else int(t_chunk)
    if chunk < 1:
        raise ValueError(f"t_chunk: expected an integer >= 1, got {t_chunk}")
    one = variants is None
    if one:
        variants = {None: (variance, clip_x0)}
    check_choice("mean_type", mean_type, MEAN_TYPES)
    for v, _ in variants.values():
        check_choice("variance", v, VARIANCES)
    bar = None if not progress else ("bound_terms" if one else f"bound ({len(variants)} variants)")
    L, mse, x0_mse = _terms_over_t(sched, model_fn, x0, rng, variants, decoder, mean_type, chunk,
                                   cdf, bar)
    L_T = prior_kl(sched, x0)
    L_0 = {name: L[name][:, 1].copy() for name in L}
    L_sum = {name: L[name][:, 2:].sum(axis=1) for name in L}
    total = {name: L_T + L_sum[name] + L[name][:, 1] for name in L}
    if one:
        L, L_0, L_sum, total = L[None], L_0[None], L_sum[None], total[None]
    return {"L_T": L_T, "L": L, "L_0": L_0, "L_sum": L_sum, "total": total, "l_simple": mse,
            "x0_mse": x0_mse}


def stratified_timesteps(T, exact_upto, stride, B, rng):
    r"""The timesteps and weights of :func:`bound_stratified`: every t <= exact_upto (weight 1),
    then the blocks [a, a + stride) of the rest, one t drawn uniformly per block and example
    (weight: the block's length), so that sum_j w_j L_{t_j - 1} is unbiased for sum_t L_{t-1}.

    Returns:
        t (B, n) int64 in 1..T, w (B, n) float64; every row's weights sum to T.
    """
    if not (1 <= int(exact_upto) <= T):
        raise ValueError(f"exact_upto: expected an integer in 1..{T}, got {exact_upto}")
    if int(stride) < 1:
        raise ValueError(f"stride: expected an integer >= 1, got {stride}")
    exact = np.arange(1, int(exact_upto) + 1)
    starts = np.arange(int(exact_upto) + 1, T + 1, int(stride))
    lengths = np.minimum(starts + int(stride), T + 1) - starts  # the last block may be shorter
    drawn = starts + np.floor(rng.random((B, starts.size)) * lengths).astype(np.int64)
    t = np.concatenate([np.broadcast_to(exact, (B, exact.size)), drawn], axis=1)
    w = np.concatenate([np.ones((B, exact.size)), np.broadcast_to(lengths, drawn.shape)], axis=1)
    return t, w


def bound_stratified(sched, model_fn, x0, rng, *, exact_upto=100, stride=10,
                     decoder="discretized", mean_type="eps", t_chunk=None, progress=False,
                     cdf="exact", variants=None):
    r"""An unbiased estimate of the bound Eq. (5) at a fraction of :func:`bound_terms`' cost.

    The terms of small t carry most of the bound and vary fastest with t, so they are summed
    exactly; above ``exact_upto`` the timesteps are split into blocks of ``stride`` and each
    example draws one t per block, weighted by the block's length (stratified sampling):

        L ~= L_T + sum_{t <= exact_upto} L_{t-1} + sum_blocks |block| L_{t_b - 1},  t_b ~ U(block)

    Each example's estimate is unbiased for its own bound and independent of the others', so the
    standard error over examples includes the t sampling. ``stride=1`` is the exact sum (as
    bound_terms, with other draws). One x_t ~ q(x_t | x_0) per (t, example), as bound_terms.

    Args:
        variants: {name: (variance, clip_x0)} scored from one network call per (t, example)
            (default: {"fixedlarge": ("fixedlarge", False)}).
        t_chunk: columns of timesteps per network call (default: about 128 images per call).
    Returns:
        dict: "L_T" (B,), and per variant name: {"L_0", "L_sum", "total"} (B,) nats; "t", "w"
        the timesteps and weights used (B, n).
    """
    x0 = check_x("x0", x0)
    check_choice("decoder", decoder, DECODERS)
    if decoder == "discretized":
        _check_on_grid(x0)
    check_rng(rng)
    check_choice("mean_type", mean_type, MEAN_TYPES)
    variants = {"fixedlarge": ("fixedlarge", False)} if variants is None else variants
    for v, _ in variants.values():
        check_choice("variance", v, VARIANCES)
    B = x0.shape[0]
    t_all, w_all = stratified_timesteps(sched.T, exact_upto, stride, B, rng)
    chunk = max(1, 128 // B) if t_chunk is None else int(t_chunk)
    if chunk < 1:
        raise ValueError(f"t_chunk: expected an integer >= 1, got {t_chunk}")
    split_as = _split_variance(variants)
    L_0 = {name: np.zeros(B) for name in variants}
    L_sum = {name: np.zeros(B) for name in variants}
    starts = range(0, t_all.shape[1], chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="bound (stratified)", unit=" network call")
    for j0 in starts:
        t = t_all[:, j0:j0 + chunk].T.reshape(-1)  # (k*B,) column-major: column, then example
        w = w_all[:, j0:j0 + chunk].T.reshape(-1)
        k = t.shape[0] // B
        x0_k = np.broadcast_to(x0, (k,) + x0.shape).reshape((k * B,) + x0.shape[1:])
        eps = rng.standard_normal(x0_k.shape)
        xt = _q_sample(sched, x0_k, t, eps)  # Eq. (4)
        out = np.asarray(model_fn(xt, sched.timesteps[t]), dtype=np.float64)  # ONE call
        mean_out, _ = _split_output(sched, xt, out, split_as)
        for name, (variance, clip_x0) in variants.items():
            nats, _ = _vlb_core(sched, x0_k, xt, t, _variant_output(out, mean_out, variance),
                                mean_type, variance, clip_x0, decoder, cdf, False)
            per = (w * nats).reshape(k, B)
            is_dec = (t == 1).reshape(k, B)
            L_0[name] += np.where(is_dec, per, 0.0).sum(axis=0)
            L_sum[name] += np.where(is_dec, 0.0, per).sum(axis=0)
    L_T = prior_kl(sched, x0)
    out = {"L_T": L_T, "t": t_all, "w": w_all}
    for name in variants:
        out[name] = {"L_0": L_0[name], "L_sum": L_sum[name],
                     "total": L_T + L_sum[name] + L_0[name]}
    return out


def bound_estimate(sched, model_fn, x0, rng, *, variance="fixedlarge", clip_x0=False,
                   decoder="discretized", mean_type="eps"):
    r"""An unbiased one-sample estimate of the bound Eq. (5), nats per example, shape (B,).

    L_T + T L_{t-1} with t ~ Uniform({1..T}) per example (as Algorithm 1, line 3 draws t) and
    one x_t ~ q(x_t | x_0): E_t[T L_{t-1}] = sum_t L_{t-1}.
    """
    x0 = check_x("x0", x0)
    check_rng(rng)
    check_choice("decoder", decoder, DECODERS)
    check_choice("mean_type", mean_type, MEAN_TYPES)
    check_choice("variance", variance, VARIANCES)
    B = x0.shape[0]
    t = rng.integers(1, sched.T + 1, size=B)  # (B,)
    eps = rng.standard_normal(x0.shape)
    xt = _q_sample(sched, x0, t, eps)  # Eq. (4)
    out = np.asarray(model_fn(xt, sched.timesteps[t]), dtype=np.float64)
    terms, _ = _vlb_core(sched, x0, xt, t, out, mean_type, variance, clip_x0, decoder, "exact",
                         False)
    return prior_kl(sched, x0) + sched.T * terms
