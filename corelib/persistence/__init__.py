"""Checkpoints: what is saved of a process, how it is encoded, where it is stored.

It owns the versioned checkpoint records and their JSON codec, the persisters (memory, file,
SQLite), the class loader that decides which classes a checkpoint may name, and the
:func:`checkpoint_of` / :func:`load_process` pair. A process class turns its own extra state
into plain data and back (``save_instance_state`` / ``load_instance_state``); this layer calls
that protocol and knows no subclass's internals. It sits on the process layer only: continuing
a process in a runner (``continue_process``) is the runner layer's.

Modules, top to bottom: ``_save_load`` (checkpoint_of, load_process, the Checkpointer),
``_file`` and ``_sqlite`` (those persisters), ``_persisters`` (the Persister interface and
the in-memory one), ``_codec`` (the JSON codec), ``_snapshot`` (copies without JSON),
``_checkpoint`` (the record and the errors), ``_loader`` (the class loader).
"""

from ._checkpoint import CHECKPOINT_VERSION as CHECKPOINT_VERSION
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import CheckpointEncodeError as CheckpointEncodeError
from ._checkpoint import CheckpointError as CheckpointError
from ._checkpoint import CheckpointNotFoundError as CheckpointNotFoundError
from ._checkpoint import CheckpointVersionError as CheckpointVersionError
from ._checkpoint import CorruptCheckpointError as CorruptCheckpointError
from ._checkpoint import ForbiddenClassError as ForbiddenClassError
from ._checkpoint import PersisterClosedError as PersisterClosedError
from ._checkpoint import UnknownClassError as UnknownClassError
from ._codec import CheckpointCodec as CheckpointCodec
from ._file import FilePersister as FilePersister
from ._journal import JournalPersister as JournalPersister
from ._journal import JournalRecovery as JournalRecovery
from ._loader import ClassLoader as ClassLoader
from ._loader import class_identifier as class_identifier
from ._persisters import InMemoryPersister as InMemoryPersister
from ._persisters import PersistedCheckpoint as PersistedCheckpoint
from ._persisters import Persister as Persister
from ._postgres import PostgresPersister as PostgresPersister
from ._save_load import Checkpointer as Checkpointer
from ._save_load import CheckpointPolicy as CheckpointPolicy
from ._save_load import ChildrenNotFoundError as ChildrenNotFoundError
from ._save_load import NotCheckpointableError as NotCheckpointableError
from ._save_load import checkpoint_of as checkpoint_of
from ._save_load import load_process as load_process
from ._sqlite import SqlitePersister as SqlitePersister

__all__ = [
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "CheckpointCodec",
    "CheckpointEncodeError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointVersionError",
    "CorruptCheckpointError",
    "ForbiddenClassError",
    "PersisterClosedError",
    "UnknownClassError",
    "ClassLoader",
    "class_identifier",
    "Checkpointer",
    "CheckpointPolicy",
    "ChildrenNotFoundError",
    "NotCheckpointableError",
    "checkpoint_of",
    "load_process",
    "FilePersister",
    "InMemoryPersister",
    "JournalPersister",
    "JournalRecovery",
    "PersistedCheckpoint",
    "Persister",
    "PostgresPersister",
    "SqlitePersister",
]
