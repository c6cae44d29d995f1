"""The process layer: what a process *is*, with no I/O and no knowledge of who runs it.

It owns the one table of legal state moves (:mod:`._states`, sans-IO), ports and specs, exit
codes, listeners and the process errors, and the :class:`Process` base class users subclass.
``Process`` is the top of a chain of three classes, each in its own module: ``Process``
(:mod:`._process`: the user-facing API, inputs and outputs, control requests), the driver that
advances it (:mod:`._driver`: steps, waits, parking) and the core (:mod:`._core`: the spec, the
``on_*`` hooks and the state moves that call them). It imports nothing from the rest of
corelib; the runner that drives a process is reached through the small interface a process
declares for it, :class:`ProcessHost`.
"""

from ._driver import MISSING_OUTPUTS_STATUS as MISSING_OUTPUTS_STATUS
from ._driver import ProcessStatistics as ProcessStatistics
from ._errors import InvalidTransitionError as InvalidTransitionError
from ._errors import InvalidWaitError as InvalidWaitError
from ._errors import LoopRunningError as LoopRunningError
from ._errors import ProcessError as ProcessError
from ._errors import ProcessExceptedError as ProcessExceptedError
from ._errors import ProcessKilledError as ProcessKilledError
from ._errors import ProcessNotFinishedError as ProcessNotFinishedError
from ._errors import ProcessNotFoundError as ProcessNotFoundError
from ._errors import ProcessStateError as ProcessStateError
from ._errors import RunnerNotRunningError as RunnerNotRunningError
from ._exit_code import ExitCode as ExitCode
from ._frozen import AttributesFrozenDict as AttributesFrozenDict
from ._handles import ControlHandle as ControlHandle
from ._handles import ControlOutcome as ControlOutcome
from ._listener import ProcessListener as ProcessListener
from ._namespace import NamespaceValidator as NamespaceValidator
from ._namespace import PortNamespace as PortNamespace
from ._ports import UNSPECIFIED as UNSPECIFIED
from ._ports import InputPort as InputPort
from ._ports import OutputPort as OutputPort
from ._ports import Port as Port
from ._ports import PortValidationError as PortValidationError
from ._ports import PortValidator as PortValidator
from ._ports import SpecSealedError as SpecSealedError
from ._ports import ValidType as ValidType
from ._process import Process as Process
from ._process import ProcessHost as ProcessHost
from ._spec import HasSpec as HasSpec
from ._spec import ProcessSpec as ProcessSpec
from ._states import NO_VALUE as NO_VALUE
from ._states import Continue as Continue
from ._states import Created as Created
from ._states import Excepted as Excepted
from ._states import Finished as Finished
from ._states import Kill as Kill
from ._states import Killed as Killed
from ._states import ProcessState as ProcessState
from ._states import Running as Running
from ._states import Transition as Transition
from ._states import Wait as Wait
from ._states import Waiting as Waiting

__all__ = [
    "ExitCode",
    "AttributesFrozenDict",
    "UNSPECIFIED",
    "InputPort",
    "NamespaceValidator",
    "OutputPort",
    "Port",
    "PortNamespace",
    "PortValidationError",
    "PortValidator",
    "SpecSealedError",
    "ValidType",
    "HasSpec",
    "ProcessSpec",
    "InvalidTransitionError",
    "InvalidWaitError",
    "LoopRunningError",
    "ProcessError",
    "ProcessExceptedError",
    "ProcessKilledError",
    "ProcessNotFinishedError",
    "ProcessStateError",
    "RunnerNotRunningError",
    "ProcessNotFoundError",
    "ProcessListener",
    "MISSING_OUTPUTS_STATUS",
    "ControlHandle",
    "ControlOutcome",
    "Process",
    "ProcessHost",
    "ProcessStatistics",
    "NO_VALUE",
    "Continue",
    "Created",
    "Excepted",
    "Finished",
    "Kill",
    "Killed",
    "ProcessState",
    "Running",
    "Transition",
    "Wait",
    "Waiting",
]
