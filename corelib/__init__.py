"""plumio's process layer: processes, WorkChains, checkpoints, control, workers.

Every public name is re-exported here from the layer subpackage that defines it. From the
bottom up, each importing only the ones below it (a contract checked by import-linter,
``.importlinter``; run ``lint-imports``):

- :mod:`corelib.process`: the state table (sans-IO), :class:`Process` and its driver, ports and
  specs, exit codes, listeners, the process errors;
- :mod:`corelib.persistence`: checkpoint records and their codec, persisters, the class loader,
  ``checkpoint_of``/``load_process`` through the process's checkpoint protocol;
- :mod:`corelib.workchain`: outlines and :class:`WorkChain`;
- :mod:`corelib.runner`: the :class:`Runner` that drives processes on one event loop;
- :mod:`corelib.control`: processes on a communicator, controllers, the launcher;
- :mod:`corelib.cluster`: worker threads, :class:`LocalCluster`, ``plumio simulate``, the CLI;
- :mod:`corelib.testing`: the pytest plugin.
"""

from .process import UNSPECIFIED as UNSPECIFIED

# --- ports and specs ---
from .process import AttributesFrozenDict as AttributesFrozenDict
from .process import ExitCode as ExitCode
from .process import HasSpec as HasSpec
from .process import InputPort as InputPort
from .process import NamespaceValidator as NamespaceValidator
from .process import OutputPort as OutputPort
from .process import Port as Port
from .process import PortNamespace as PortNamespace
from .process import PortValidationError as PortValidationError
from .process import PortValidator as PortValidator
from .process import ProcessSpec as ProcessSpec
from .process import SpecSealedError as SpecSealedError
from .process import ValidType as ValidType

# --- processes ---
# isort: split
from .process import MISSING_OUTPUTS_STATUS as MISSING_OUTPUTS_STATUS
from .process import NO_VALUE as NO_VALUE
from .process import Continue as Continue
from .process import ControlHandle as ControlHandle
from .process import ControlOutcome as ControlOutcome
from .process import Created as Created
from .process import Excepted as Excepted
from .process import Finished as Finished
from .process import InvalidTransitionError as InvalidTransitionError
from .process import InvalidWaitError as InvalidWaitError
from .process import Kill as Kill
from .process import Killed as Killed
from .process import LoopRunningError as LoopRunningError
from .process import Process as Process
from .process import ProcessError as ProcessError
from .process import ProcessExceptedError as ProcessExceptedError
from .process import ProcessKilledError as ProcessKilledError
from .process import ProcessListener as ProcessListener
from .process import ProcessNotFinishedError as ProcessNotFinishedError
from .process import ProcessNotFoundError as ProcessNotFoundError
from .process import ProcessState as ProcessState
from .process import ProcessStateError as ProcessStateError
from .process import ProcessStatistics as ProcessStatistics
from .process import RunnerNotRunningError as RunnerNotRunningError
from .process import Running as Running
from .process import Transition as Transition
from .process import Wait as Wait
from .process import Waiting as Waiting
from .runner import Runner as Runner
from .runner import continue_process as continue_process
from .runner import run as run
from .runner import run_get_process as run_get_process
from .runner import run_get_process_sync as run_get_process_sync
from .runner import run_sync as run_sync

# --- workchains ---
# isort: split
from .workchain import AttributesDict as AttributesDict
from .workchain import ChildProcessFailedError as ChildProcessFailedError
from .workchain import InvalidCursorError as InvalidCursorError
from .workchain import OutlineError as OutlineError
from .workchain import ToContext as ToContext
from .workchain import WorkChain as WorkChain
from .workchain import WorkChainSpec as WorkChainSpec
from .workchain import append_ as append_
from .workchain import if_ as if_
from .workchain import return_ as return_
from .workchain import while_ as while_

# --- checkpoints and persisters ---
# isort: split
from .persistence import CHECKPOINT_VERSION as CHECKPOINT_VERSION
from .persistence import Checkpoint as Checkpoint
from .persistence import CheckpointCodec as CheckpointCodec
from .persistence import CheckpointEncodeError as CheckpointEncodeError
from .persistence import Checkpointer as Checkpointer
from .persistence import CheckpointError as CheckpointError
from .persistence import CheckpointNotFoundError as CheckpointNotFoundError
from .persistence import CheckpointPolicy as CheckpointPolicy
from .persistence import CheckpointVersionError as CheckpointVersionError
from .persistence import ChildrenNotFoundError as ChildrenNotFoundError
from .persistence import ClassLoader as ClassLoader
from .persistence import CorruptCheckpointError as CorruptCheckpointError
from .persistence import FilePersister as FilePersister
from .persistence import ForbiddenClassError as ForbiddenClassError
from .persistence import InMemoryPersister as InMemoryPersister
from .persistence import JournalPersister as JournalPersister
from .persistence import JournalRecovery as JournalRecovery
from .persistence import NotCheckpointableError as NotCheckpointableError
from .persistence import PersistedCheckpoint as PersistedCheckpoint
from .persistence import Persister as Persister
from .persistence import PersisterClosedError as PersisterClosedError
from .persistence import PostgresPersister as PostgresPersister
from .persistence import SqlitePersister as SqlitePersister
from .persistence import UnknownClassError as UnknownClassError
from .persistence import checkpoint_of as checkpoint_of
from .persistence import class_identifier as class_identifier
from .persistence import load_process as load_process

# --- control over communicators, workers ---
# isort: split
from .cluster import ClusterStatistics as ClusterStatistics
from .cluster import LocalCluster as LocalCluster
from .cluster import Worker as Worker
from .cluster import WorkerStatistics as WorkerStatistics
from .control import BlockingProcessController as BlockingProcessController
from .control import ControlStatistics as ControlStatistics
from .control import InvalidTaskError as InvalidTaskError
from .control import ProcessControl as ProcessControl
from .control import ProcessController as ProcessController
from .control import ProcessLauncher as ProcessLauncher
from .control import RemoteProcess as RemoteProcess
from .control import continue_body as continue_body
from .control import control_of as control_of
from .control import launch_body as launch_body
from .control import outcome_error as outcome_error
from .control import outcome_of as outcome_of
from .control import status_of as status_of
from .control import submit_remote as submit_remote
