"""The one exception type for bad user input, and how a front end names the value the user typed.

Library code knows values by their field names (``qos_ms``, ``pool_config``, ``policy``), never by command-line
flags: the same value is ``--config`` to ``kairos simulate`` and ``--pool-config`` to the locustfile. So an error
carries the field it is about, and each front end (the CLI, the locustfile) shows its own option name for it.
"""

from __future__ import annotations

from collections.abc import Mapping


class InputError(ValueError):
    """Bad user input (file, column, row, value): the message names what and where.

    ``field`` is the library's name of the value at fault; the message then reads after it ("qos_ms" + "must be
    > 0"). ``str()`` spells the field in words; ``shown_as`` puts the option the user typed in front instead.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __reduce__(self):
        # Keep the field across process pools (the allocator measures configurations in worker processes).
        return (type(self), (self.message, self.field))

    def __str__(self) -> str:
        return f"{self.field.replace('_', ' ')} {self.message}" if self.field else self.message

    def shown_as(self, names: Mapping[str, str]) -> str:
        """The message with the field named as the user knows it (``names``: field -> option), where known."""
        if self.field and self.field in names:
            return f"{names[self.field]} {self.message}"
        return str(self)
