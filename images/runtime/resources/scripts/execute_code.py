#!/usr/bin/env python3
"""ML Lab's `execute_code.py`, kept at its old path: servicelab's executor under its old name.

python /resources/scripts/execute_code.py [--requirements-only | --code-only] [SOURCE]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from servicelab_execute import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
