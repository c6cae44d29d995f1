"""What an allowed module may refer to besides its own classes, for the loader's tests."""

from __future__ import annotations

import subprocess
from subprocess import Popen
from typing import Any

__all__ = ["CONST", "Alias", "Holder", "Local", "Popen", "make", "subprocess"]


class Local:
    class Inner:
        pass


Alias = Local  # a class of this module under another name


class Holder:
    """A class of this module whose attribute is a class from elsewhere."""

    Outside = Popen


def make() -> None:
    pass


# a function carrying a class from elsewhere
make.Cls = Popen  # type: ignore[attr-defined]

CONST: Any = 3
