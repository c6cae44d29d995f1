"""The pytest plugin's old address, kept so that ``from corelib.pytest_plugin import ...`` and
``pytest_plugins = ["corelib.pytest_plugin"]`` keep working: it lives in
:mod:`corelib.testing.pytest_plugin` (which the ``pytest11`` entry point registers).
"""

from .testing.pytest_plugin import cluster as cluster
from .testing.pytest_plugin import communicator as communicator
from .testing.pytest_plugin import controller as controller
from .testing.pytest_plugin import memory_broker as memory_broker
from .testing.pytest_plugin import process_control as process_control
from .testing.pytest_plugin import runner as runner

__all__ = ["memory_broker", "communicator", "runner", "controller", "cluster", "process_control"]
