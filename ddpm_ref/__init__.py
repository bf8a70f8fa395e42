"""ddpm_ref: a pure-NumPy reference implementation of DDPM (Ho, Jain, Abbeel 2020, arXiv:2006.11239).

Every equation of the paper is a small named function; every gradient is written by hand.
Read next to the paper: docs/paper_map.md maps each numbered equation to its function.
"""

from ddpm_ref.schedule import Schedule, make_schedule

__version__ = "0.1.0"

__all__ = ["Schedule", "make_schedule", "__version__"]
