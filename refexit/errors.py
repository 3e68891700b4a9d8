"""The exceptions refexit raises. Every failure a user can cause names what was wrong."""


class RefexitError(Exception):
    """Base class of every refexit error."""


class ConfigError(RefexitError, ValueError):
    """config.json / tokenizer_config.json is missing, unreadable or inconsistent (names the field)."""


class CheckpointError(RefexitError, ValueError):
    """A weights file is missing, truncated, corrupted, or a tensor is missing/extra/misshaped (names it)."""


class InputError(RefexitError, ValueError):
    """Bad input to a forward pass: too long, token id out of range, bad mask, bad threshold."""


class OutputError(RefexitError, OSError):
    """The output cannot be written (a full disk, a closed pipe): the command stops at once."""
