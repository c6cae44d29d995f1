"""Control from anywhere: processes on a communicator.

It owns the binding of a runner to a communicator (RPC intents, state broadcasts, broadcast
control), the JSON messages that travel (status, outcomes, launch and continue tasks), the
controllers that send them (async and blocking), the launcher that turns tasks into running
processes, and waiting on processes that run elsewhere. It uses :mod:`broker` only through the
``Communicator`` interface.

Modules, top to bottom (each imports only those below it):

- ``_controller``: :class:`ProcessController` and :class:`BlockingProcessController`, which
  send control messages and tasks; ``_launcher``: :class:`ProcessLauncher`, which runs tasks
  on a worker (the two are independent);
- ``_remote``: :class:`RemoteProcess` and :func:`submit_remote`, awaiting a process that runs
  elsewhere;
- ``_binding``: :class:`ProcessControl` (and :func:`control_of`), which puts a runner's
  processes on a communicator;
- ``_messages``: the wire format, every dict that travels: intents and subjects,
  :func:`status_of`, :func:`outcome_of`, :func:`outcome_error`, :func:`launch_body`,
  :func:`continue_body`, pids, JSON-native data.
"""

from ._binding import ControlStatistics as ControlStatistics
from ._binding import ProcessControl as ProcessControl
from ._binding import control_of as control_of
from ._controller import BlockingProcessController as BlockingProcessController
from ._controller import ProcessController as ProcessController
from ._launcher import InvalidTaskError as InvalidTaskError
from ._launcher import ProcessLauncher as ProcessLauncher
from ._messages import continue_body as continue_body
from ._messages import launch_body as launch_body
from ._messages import outcome_error as outcome_error
from ._messages import outcome_of as outcome_of
from ._messages import status_of as status_of
from ._remote import RemoteProcess as RemoteProcess
from ._remote import submit_remote as submit_remote

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
    "InvalidTaskError",
]
