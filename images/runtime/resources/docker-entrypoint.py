#!/usr/bin/env python3
"""The runtime image's default command: run the code service that EXECUTE_CODE names.

ML Lab's workspace image had this file too, and its custom-image pattern calls it with
`--code-only`; every argument goes to servicelab's executor unchanged.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("_RESOURCES_PATH") or "/resources", "scripts"))

from servicelab_execute import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
