"""The executor run by path: `python -S <this folder>/run_execute.py [ARGS]`.

The local runtime and its sandboxes run the executor this way: the interpreter is the base
one, without site-packages (-S), where servicelab is neither installed nor importable, and
in a sandbox this folder is all there is of it. Python then puts this folder first on
sys.path, where its modules would pass for top-level ones (and could shadow the standard
library); so the folder is taken off the path and imported as the package
`servicelab_execute`, whose modules import each other relatively. The file name keeps
`execute.py` at its end: process listings (and the tests that read them) know the
executor by it.
"""

import importlib.util
import os
import sys
from types import ModuleType

PACKAGE = "servicelab_execute"


def load_package() -> ModuleType:
    """This folder, imported as the package PACKAGE."""
    folder = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == folder:
        del sys.path[0]
    spec = importlib.util.spec_from_file_location(
        PACKAGE, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the executor from {folder}")
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    return package


if __name__ == "__main__":
    sys.exit(load_package().main())
