"""Error types the CLI maps to exit codes, importable without torch (so `decodiff --help` and
config errors return at once)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names it and why."""


class UsageError(Exception):
    """Bad command-line usage: exit code 2."""
