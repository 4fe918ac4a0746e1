"""The project's expected errors: the command line turns them into one line and an exit code
(tools.errors), never a traceback."""


class UsageError(Exception):
    """The command cannot start: missing input, unwritable output, bad arguments. Exit code 2."""

    exit_code = 2


class DataError(Exception):
    """The data is bad (corrupt shard, bad input under --strict). Exit code 1."""

    exit_code = 1

