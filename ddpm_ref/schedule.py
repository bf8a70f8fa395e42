r"""Noise schedules: beta_t and every per-timestep quantity derived from it.

Paper: Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", §2 and §4.
The forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (Eq. 2) is fixed by
the variances beta_1..beta_T; everything else here is a closed-form function of them.

Indexing convention (shared by the whole package): every per-timestep array has length T + 1 and
``arr[t]`` is the paper's value at t = 1..T. Entries that do not exist at t = 0 are NaN so that
misuse shows; ``alpha_bar[0] == 1`` (the empty product).

Everything is float64, precomputed once, as in Ho et al.'s ``diffusion_utils_2.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)  # compare and hash by identity: fields are arrays
class Schedule:
    r"""A frozen float64 noise schedule; arrays have shape (T+1,), index = the paper's t.

    Build with :func:`make_schedule` or :meth:`Schedule.from_betas`.

    Attributes (all shape (T+1,) unless noted):
        T: number of diffusion steps.
        beta: beta_t (Eq. 2); beta[0] = NaN.
        alpha: alpha_t = 1 - beta_t (§3.2); alpha[0] = NaN.
        alpha_bar: \bar\alpha_t = prod_{s<=t} alpha_s (Eq. 4); alpha_bar[0] = 1.
        one_minus_alpha_bar: 1 - alpha_bar_t computed without cancellation, as
            -expm1(sum_{s<=t} log1p(-beta_s)) (``1.0 - alpha_bar`` loses ~1e-16 / beta_1 relative
            accuracy at small t); one_minus_alpha_bar[0] = 0.
        beta_tilde: posterior variance (Eq. 7), (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t;
            beta_tilde[1] = 0, beta_tilde[0] = NaN.
        log_beta_tilde_clipped: log beta_tilde_t with the t = 1 entry replaced by log beta_tilde_2
            (beta_tilde_1 = 0 has no log; Ho et al.'s code does the same). NaN at t = 0.
        posterior_mean_coef1: coefficient of x0 in mu_tilde (Eq. 7),
            sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t).
        posterior_mean_coef2: coefficient of xt in mu_tilde (Eq. 7),
            sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t).
        timesteps: int64 (T+1,); the step of the *original* schedule that step t of this one
            stands for (identity unless the schedule was respaced). Networks are conditioned on
            ``timesteps[t]``.
        kind: the name it was made from (``make_schedule``), None for given betas; for its repr.
    """

    beta: np.ndarray
    timesteps: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    kind: str | None = None  # the make_schedule kind it came from (None: given betas)

    # derived in __post_init__
    T: int = field(init=False)
    alpha: np.ndarray = field(init=False, repr=False)
    alpha_bar: np.ndarray = field(init=False, repr=False)
    one_minus_alpha_bar: np.ndarray = field(init=False, repr=False)
    beta_tilde: np.ndarray = field(init=False, repr=False)
    log_beta_tilde_clipped: np.ndarray = field(init=False, repr=False)
    posterior_mean_coef1: np.ndarray = field(init=False, repr=False)
    posterior_mean_coef2: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        beta = np.asarray(self.beta, dtype=np.float64)
        if beta.ndim != 1 or beta.shape[0] < 2:
            raise ValueError(
                f"beta: expected shape (T+1,) with T >= 1 and beta[0] = NaN, got shape {beta.shape}"
            )
        T = beta.shape[0] - 1
        b = beta[1:]
        if not np.all(np.isfinite(b)):
            raise ValueError("beta: expected finite values at t = 1..T")
        if not np.all((b > 0) & (b < 1)):
            raise ValueError(
                f"beta: expected every beta_t in the open interval (0, 1), got min {b.min():.3g}, "
                f"max {b.max():.3g}"
            )
        set_ = lambda name, value: object.__setattr__(self, name, value)  # frozen dataclass
        set_("T", int(T))
        beta = np.concatenate([[np.nan], b])  # (T+1,)
        if self.timesteps is None:
            timesteps = np.arange(T + 1, dtype=np.int64)
        else:
            timesteps = np.asarray(self.timesteps)
            if timesteps.shape != (T + 1,) or not np.issubdtype(timesteps.dtype, np.integer):
                raise ValueError(f"timesteps: expected int array of shape ({T + 1},)")
        ts = np.array(timesteps, dtype=np.int64)
        ts.setflags(write=False)
        set_("timesteps", ts)

        alpha = 1.0 - beta  # (T+1,), alpha[0] = NaN
        # Eq. (4): alpha_bar_t = prod_{s=1}^t alpha_s, alpha_bar_0 = 1
        alpha_bar = np.concatenate([[1.0], np.cumprod(alpha[1:])])
        alpha_bar_prev = np.concatenate([[np.nan], alpha_bar[:-1]])  # alpha_bar_{t-1}
        # 1 - alpha_bar_t = -expm1(log alpha_bar_t): no cancellation when alpha_bar_t ~ 1
        omab = np.concatenate([[0.0], -np.expm1(np.cumsum(np.log1p(-b)))])  # (T+1,)
        omab_prev = np.concatenate([[np.nan], omab[:-1]])  # 1 - alpha_bar_{t-1}
        # Eq. (7): beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t
        with np.errstate(invalid="ignore"):  # 0 / 0 at t = 0 (NaN by convention)
            beta_tilde = omab_prev / omab * beta
        beta_tilde[0] = np.nan
        # beta_tilde_1 = 0 exactly (alpha_bar_0 = 1); its log is clipped to log beta_tilde_2.
        with np.errstate(divide="ignore"):
            log_bt = np.log(beta_tilde)
        log_bt[1] = np.log(beta_tilde[2]) if T >= 2 else np.log(beta[1])
        # Eq. (7): mu_tilde = coef1 x0 + coef2 xt
        with np.errstate(divide="ignore", invalid="ignore"):  # t = 0 entries are NaN
            coef1 = np.sqrt(alpha_bar_prev) * beta / omab
            coef2 = np.sqrt(alpha) * omab_prev / omab

        set_("beta", _readonly(beta))
        set_("alpha", _readonly(alpha))
        set_("alpha_bar", _readonly(alpha_bar))
        set_("one_minus_alpha_bar", _readonly(omab))
        set_("beta_tilde", _readonly(beta_tilde))
        set_("log_beta_tilde_clipped", _readonly(log_bt))
        set_("posterior_mean_coef1", _readonly(coef1))
        set_("posterior_mean_coef2", _readonly(coef2))

    def __repr__(self) -> str:
        # short: kind, T, the beta range and alpha_bar_T (the arrays themselves are T+1 long)
        kind = self.kind or "given betas"
        if self.timesteps[-1] != self.T:
            kind += f", respaced from T = {int(self.timesteps[-1])}"
        b = self.beta[1:]
        return (f"Schedule({kind}, T={self.T}, beta {b.min():.3g}..{b.max():.3g}, "
                f"alpha_bar_T={self.alpha_bar[self.T]:.3g})")

    @classmethod
    def from_betas(cls, betas, kind=None) -> Schedule:
        """A schedule from any user array of beta_1..beta_T (length T, no t = 0 entry)."""
        betas = np.asarray(betas)
        if betas.ndim != 1 or betas.shape[0] < 1:
            raise ValueError(
                f"betas: expected a 1-D array of length T >= 1, got shape {betas.shape}"
            )
        if not np.issubdtype(betas.dtype, np.floating) and not np.issubdtype(
            betas.dtype, np.integer
        ):
            raise ValueError(f"betas: expected real numbers, got dtype {betas.dtype}")
        return cls(np.concatenate([[np.nan], betas.astype(np.float64)]), kind=kind)

    @property
    def alpha_bar_prev(self) -> np.ndarray:
        """alpha_bar_{t-1} at index t (NaN at t = 0)."""
        return np.concatenate([[np.nan], self.alpha_bar[:-1]])

    def respace(self, keep) -> Schedule:
        r"""A schedule on a subset of the steps that keeps alpha_bar at the kept steps.

        With kept steps s_1 < ... < s_K of this schedule, the new schedule has K steps and
        beta'_k = 1 - alpha_bar[s_k] / alpha_bar[s_{k-1}] (s_0 = 0), so that
        alpha_bar'_k = alpha_bar[s_k]: the marginals q(x_{s_k} | x_0) (Eq. 4) are unchanged.
        ``timesteps`` maps each new step to the original one, for conditioning the network.

        Args:
            keep: an int K (K evenly spaced steps, always including T) or an increasing
                array of steps in 1..T.
        """
        T = self.T
        if np.isscalar(keep):
            K = int(keep)
            if K < 1 or K > T:
                raise ValueError(f"keep: expected a number of steps in 1..{T}, got {keep}")
            keep = np.unique(np.round(np.linspace(T / K, T, K)).astype(np.int64))
        keep = np.asarray(keep)
        if keep.ndim != 1 or keep.size < 1 or not np.issubdtype(keep.dtype, np.integer):
            raise ValueError("keep: expected a 1-D int array of steps in 1..T")
        if keep.min() < 1 or keep.max() > T or np.any(np.diff(keep) <= 0):
            raise ValueError(f"keep: expected strictly increasing steps in 1..{T}")
        ab = self.alpha_bar[keep]  # (K,)
        ab_prev = np.concatenate([[1.0], ab[:-1]])
        beta = np.concatenate([[np.nan], 1.0 - ab / ab_prev])
        timesteps = np.concatenate([[0], self.timesteps[keep]])
        return Schedule(beta, timesteps=timesteps, kind=self.kind)


# ---- the named schedules: kind -> (beta_1..beta_T, the parameters that rescale it to any T) ----
# Each betas function takes (T, params) and pops the parameters it knows; adding a schedule is
# one function and one SCHEDULES entry.

def _linear(T, params):
    # Paper §4: beta_1 = 1e-4 rising linearly to beta_T = 0.02 (T = 1000).
    b0, b1 = params.pop("beta_start", 1e-4), params.pop("beta_end", 0.02)
    return np.linspace(b0, b1, T, dtype=np.float64)


def _quadratic(T, params):
    # Ho et al.'s "quad": linear in sqrt(beta).
    b0, b1 = params.pop("beta_start", 1e-4), params.pop("beta_end", 0.02)
    return np.linspace(b0**0.5, b1**0.5, T, dtype=np.float64) ** 2


def _sigmoid(T, params):
    # A sigmoid ramp from beta_start to beta_end over [-6, 6].
    b0, b1 = params.pop("beta_start", 1e-4), params.pop("beta_end", 0.02)
    x = np.linspace(-6.0, 6.0, T)
    return b0 + (b1 - b0) / (1.0 + np.exp(-x))


def _constant(T, params):
    return np.full(T, float(params.pop("beta", 0.02)))


def _cosine(T, params):
    # Nichol & Dhariwal (2021), Eq. (17): alpha_bar(t) = f(t) / f(0),
    # f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2),
    # beta_t = min(1 - abar_t / abar_{t-1}, 0.999)
    t = np.arange(1, T + 1, dtype=np.float64)  # (T,)
    s = float(params.pop("s", 0.008))
    max_beta = float(params.pop("max_beta", 0.999))
    f = lambda u: np.cos((u / T + s) / (1.0 + s) * np.pi / 2.0) ** 2
    return np.minimum(1.0 - f(t) / f(t - 1.0), max_beta)


def _endpoints_scaled(T):
    # the T = 1000 endpoints scaled by 1000 / T (capped at 0.999), as Nichol & Dhariwal do
    end = min(0.02 * 1000 / T, 0.999)
    return {"beta_start": min(1e-4 * 1000 / T, end), "beta_end": end}


def _as_is(T):
    return {}


SCHEDULES = {  # kind -> (betas(T, params), scaled_params(T) for scaled_schedule)
    "linear": (_linear, _endpoints_scaled),
    "cosine": (_cosine, _as_is),  # defined for any T as is
    "quadratic": (_quadratic, _endpoints_scaled),
    "sigmoid": (_sigmoid, _endpoints_scaled),
    "constant": (_constant, _as_is),
}
KINDS = tuple(SCHEDULES)
TRAIN_KINDS = tuple(k for k in KINDS if k != "constant")  # `train --schedule` (constant: teaching)


def _betas(kind: str, T: int, **params) -> np.ndarray:
    """beta_1..beta_T, shape (T,), for a named schedule."""
    if kind not in SCHEDULES:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    betas = SCHEDULES[kind][0](T, params)
    if params:
        raise ValueError(f"params: unexpected for kind {kind!r}: {sorted(params)}")
    return betas


def make_schedule(kind: str = "linear", T: int = 1000, **params) -> Schedule:
    r"""Build a named beta schedule with T steps.

    Kinds: ``linear`` (the paper's, beta_start=1e-4 → beta_end=0.02), ``cosine`` (Nichol &
    Dhariwal 2021, s=0.008, beta clipped at max_beta=0.999), ``quadratic`` (linear in
    sqrt(beta)), ``sigmoid`` (beta_start → beta_end along a sigmoid), ``constant`` (beta=0.02).

    The linear endpoints are used as given at any T (no rescaling by 1000 / T).

    >>> sched = make_schedule("linear", 1000)
    >>> sched.alpha_bar.shape, sched.alpha_bar[0]
    ((1001,), 1.0)
    """
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)):
        raise ValueError(f"T: expected an integer >= 1, got {T!r}")
    if T < 1:
        raise ValueError(f"T: expected an integer >= 1, got {T}")
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    return Schedule.from_betas(_betas(kind, int(T), **params), kind=kind)


def scaled_schedule(kind: str, T: int):
    """A schedule of T steps whose betas are the paper's T = 1000 ones scaled by 1000 / T.

    For linear/quadratic/sigmoid: beta_start = 1e-4 * 1000 / T, beta_end = 0.02 * 1000 / T
    (capped at 0.999), as Nichol & Dhariwal (2021) do, so that alpha_bar_T stays near 0 and
    x_T near N(0, I) at any T. Cosine is defined for any T as is.
    Returns:
        (sched, schedule_info) with schedule_info = {"kind": kind, "params": {...}}.
    """
    params = SCHEDULES[kind][1](T) if kind in SCHEDULES else {}
    return make_schedule(kind, T, **params), {"kind": kind, "params": params}
