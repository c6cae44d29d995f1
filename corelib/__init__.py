"""plumio's process layer: processes, ports and specs, and (later) WorkChains and control.

Public names are re-exported here from the private modules that define them.
"""

from ._exit_code import ExitCode as ExitCode

# --- ports and specs (ports work: add imports below this line) ---
from ._frozen import AttributesFrozenDict as AttributesFrozenDict
from ._ports import UNSPECIFIED as UNSPECIFIED
from ._ports import InputPort as InputPort
from ._ports import NamespaceValidator as NamespaceValidator
from ._ports import OutputPort as OutputPort
from ._ports import Port as Port
from ._ports import PortNamespace as PortNamespace
from ._ports import PortValidationError as PortValidationError
from ._ports import PortValidator as PortValidator
from ._ports import SpecSealedError as SpecSealedError
from ._ports import ValidType as ValidType
from ._spec import HasSpec as HasSpec
from ._spec import ProcessSpec as ProcessSpec

# --- processes (process work: add imports below this line) ---
# isort: split
from ._errors import InvalidTransitionError as InvalidTransitionError
from ._errors import InvalidWaitError as InvalidWaitError
from ._errors import LoopRunningError as LoopRunningError
from ._errors import ProcessError as ProcessError
from ._errors import ProcessExceptedError as ProcessExceptedError
from ._errors import ProcessKilledError as ProcessKilledError
from ._errors import ProcessNotFinishedError as ProcessNotFinishedError
from ._errors import ProcessStateError as ProcessStateError
from ._errors import RunnerNotRunningError as RunnerNotRunningError
from ._listener import ProcessListener as ProcessListener
from ._process import MISSING_OUTPUTS_STATUS as MISSING_OUTPUTS_STATUS
from ._process import ControlHandle as ControlHandle
from ._process import ControlOutcome as ControlOutcome
from ._process import Process as Process
from ._process import ProcessStatistics as ProcessStatistics
from ._runner import Runner as Runner
from ._runner import run as run
from ._runner import run_get_process as run_get_process
from ._runner import run_get_process_sync as run_get_process_sync
from ._runner import run_sync as run_sync
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

# --- workchains ---
# isort: split
from ._outline import InvalidCursorError as InvalidCursorError
from ._outline import OutlineError as OutlineError
from ._workchain import AttributesDict as AttributesDict
from ._workchain import ChildProcessFailedError as ChildProcessFailedError
from ._workchain import ToContext as ToContext
from ._workchain import WorkChain as WorkChain
from ._workchain import WorkChainSpec as WorkChainSpec
from ._workchain import append_ as append_
from ._workchain import if_ as if_
from ._workchain import return_ as return_
from ._workchain import while_ as while_

# --- checkpoints and persisters ---
# isort: split
from ._checkpoint import CHECKPOINT_VERSION as CHECKPOINT_VERSION
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import CheckpointCodec as CheckpointCodec
from ._checkpoint import CheckpointEncodeError as CheckpointEncodeError
from ._checkpoint import CheckpointError as CheckpointError
from ._checkpoint import CheckpointNotFoundError as CheckpointNotFoundError
from ._checkpoint import CheckpointVersionError as CheckpointVersionError
from ._checkpoint import CorruptCheckpointError as CorruptCheckpointError
from ._checkpoint import ForbiddenClassError as ForbiddenClassError
from ._checkpoint import PersisterClosedError as PersisterClosedError
from ._checkpoint import UnknownClassError as UnknownClassError
from ._loader import ClassLoader as ClassLoader
from ._loader import class_identifier as class_identifier
from ._persistence import Checkpointer as Checkpointer
from ._persistence import CheckpointPolicy as CheckpointPolicy
from ._persistence import ChildrenNotFoundError as ChildrenNotFoundError
from ._persistence import NotCheckpointableError as NotCheckpointableError
from ._persistence import checkpoint_of as checkpoint_of
from ._persistence import continue_process as continue_process
from ._persistence import load_process as load_process
from ._persisters import FilePersister as FilePersister
from ._persisters import InMemoryPersister as InMemoryPersister
from ._persisters import PersistedCheckpoint as PersistedCheckpoint
from ._persisters import Persister as Persister
from ._persisters import SqlitePersister as SqlitePersister

# --- control over communicators, workers ---
# isort: split
from ._control import ControlStatistics as ControlStatistics
from ._control import ProcessControl as ProcessControl
from ._control import RemoteProcess as RemoteProcess
from ._control import control_of as control_of
from ._control import outcome_of as outcome_of
from ._control import status_of as status_of
from ._control import submit_remote as submit_remote
from ._controller import BlockingProcessController as BlockingProcessController
from ._controller import ProcessController as ProcessController
from ._controller import continue_body as continue_body
from ._controller import launch_body as launch_body
from ._launcher import ProcessLauncher as ProcessLauncher
from ._worker import ClusterStatistics as ClusterStatistics
from ._worker import LocalCluster as LocalCluster
from ._worker import Worker as Worker
from ._worker import WorkerStatistics as WorkerStatistics
