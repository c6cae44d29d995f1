"""Testing helpers: the pytest plugin (fixtures for a broker, a communicator, a runner, a
controller and a cluster) that plumio's ``pytest11`` entry point registers, and
:func:`process_control` to reach the binding of the ``runner`` fixture.
"""

from .pytest_plugin import process_control as process_control

__all__ = ["process_control"]
