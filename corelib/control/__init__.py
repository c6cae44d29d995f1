"""Control from anywhere: processes on a communicator.

It owns the binding of a runner to a communicator (RPC intents, state broadcasts, broadcast
control), the JSON messages that travel (status, outcomes, launch and continue tasks), the
controllers that send them (async and blocking), the launcher that turns tasks into running
processes, and waiting on processes that run elsewhere. It uses :mod:`broker` only through the
``Communicator`` interface.
"""

from ._binding import ControlStatistics as ControlStatistics
from ._binding import ProcessControl as ProcessControl
from ._binding import RemoteProcess as RemoteProcess
from ._binding import control_of as control_of
from ._binding import outcome_of as outcome_of
from ._binding import status_of as status_of
from ._binding import submit_remote as submit_remote
from ._controller import BlockingProcessController as BlockingProcessController
from ._controller import ProcessController as ProcessController
from ._controller import continue_body as continue_body
from ._controller import launch_body as launch_body
from ._controller import outcome_error as outcome_error
from ._launcher import ProcessLauncher as ProcessLauncher

__all__ = [
    "ControlStatistics",
    "ProcessControl",
    "RemoteProcess",
    "control_of",
    "outcome_of",
    "status_of",
    "submit_remote",
    "BlockingProcessController",
    "ProcessController",
    "continue_body",
    "launch_body",
    "outcome_error",
    "ProcessLauncher",
]
