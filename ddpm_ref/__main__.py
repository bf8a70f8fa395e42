"""`python -m ddpm_ref` runs the `ddpm-ref` command line (see ddpm_ref.cli)."""

import sys

from ddpm_ref.cli import main

sys.exit(main())
