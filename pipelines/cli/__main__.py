"""`python -m pipelines.cli ...` is `mlops ...`."""

import sys

from pipelines.cli import main

sys.exit(main())
