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
