"""A service that fails at start: its status must name the ModuleNotFoundError."""

import servicelab_test_no_such_module  # noqa: F401
