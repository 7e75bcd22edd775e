"""`python -m monitoring.dashboards [--check] [--output PATH]`: see monitoring/dashboards/__init__.py."""

import sys

from monitoring.dashboards import main

sys.exit(main())
