"""Exit codes: the status a finished process reports."""

from __future__ import annotations

from typing import Any, final

import attrs

__all__ = ["ExitCode"]


@final
@attrs.frozen
class ExitCode:
    """The status with which a process finished.

    Status ``0`` means success; any other status is an unsuccessful (but orderly) end, as in
    plumpy. A step or ``run()`` that returns an ``ExitCode`` finishes the process with it.

    Args:
        status: the numeric status; 0 is success.
        message: a human-readable explanation; may contain ``{name}`` fields filled in by
            :meth:`format`.
        label: the symbolic name under which the code was declared with ``spec.exit_code``.
    """

    status: int = 0
    message: str | None = None
    label: str | None = None

    @property
    def successful(self) -> bool:
        """Whether this code means success (status 0)."""
        return self.status == 0

    def format(self, **kwargs: Any) -> ExitCode:
        """Return a copy whose message has its ``{name}`` fields filled in from ``kwargs``."""
        if self.message is None:
            return self
        try:
            message = self.message.format(**kwargs)
        except KeyError as exc:
            raise ValueError(
                f"exit code {self.status} message needs field {exc.args[0]!r}"
            ) from None
        return attrs.evolve(self, message=message)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, for checkpoints and messages."""
        return {"status": self.status, "message": self.message, "label": self.label}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExitCode:
        """Inverse of :meth:`to_dict`."""
        return cls(status=int(data["status"]), message=data.get("message"), label=data.get("label"))
