import sys

from ddpm_ref.grade import main

sys.exit(main())
