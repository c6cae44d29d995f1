"""plumio's process layer: processes, ports and specs, and (later) WorkChains and control.

Public names are re-exported here from the private modules that define them.
"""

from ._exit_code import ExitCode as ExitCode

# --- ports and specs (ports work: add imports below this line) ---

# --- processes (process work: add imports below this line) ---
