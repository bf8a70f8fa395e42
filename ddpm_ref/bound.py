"""Alias: the whole bound of Eq. (5) lives in ``ddpm_ref/elbo.py`` (kept so old imports work)."""

from ddpm_ref.elbo import bound_estimate, bound_terms  # noqa: F401
