"""Exceptions with a meaning to the harness."""


class UsageError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits with 2."""


class Unsupported(Exception):
    """Raised by an implementation (in its builder or closure) that cannot run a case: the
    row is recorded as unsupported with this message as its reason, not as an error."""


class ResultFileError(UsageError):
    """A result file that is corrupt, of another schema version, or not flashsuite's."""
