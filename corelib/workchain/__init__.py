"""WorkChains: processes whose steps follow a declarative outline.

It owns the immutable outline tree and its plain-data cursor, and :class:`WorkChain` with its
context, ``ToContext`` and the children it awaits (which it saves and restores through the
process's checkpoint protocol). It sits on the process and persistence layers.
"""

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

__all__ = [
    "InvalidCursorError",
    "OutlineError",
    "AttributesDict",
    "ChildProcessFailedError",
    "ToContext",
    "WorkChain",
    "WorkChainSpec",
    "append_",
    "if_",
    "return_",
    "while_",
]
