"""A module the loader tests import only when it is explicitly allowed (never import it)."""


class Target:
    pass
