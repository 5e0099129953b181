"""`python -m servicelab.execute` (and `python -m servicelab_execute` in runtime images)."""

import sys

from .run import main

sys.exit(main())
