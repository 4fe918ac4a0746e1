"""The project's expected errors, and how a command reports them: one line and an exit code,
never a traceback."""

import sys


class UsageError(Exception):
    """The command cannot start: missing input, unwritable output, bad arguments. Exit code 2."""

    exit_code = 2


class DataError(Exception):
    """The data is bad (corrupt shard, bad input under --strict). Exit code 1."""

    exit_code = 1


class Interrupted(Exception):
    """The user stopped the command (Ctrl-C, SIGTERM, SIGUSR1) and it stopped as designed: not an
    error. The message says where it stood and how to go on. Exit code 130."""

    exit_code = 130


def report_errors(command: str, func, *args) -> int:
    """Run func(*args); an expected error becomes one line on stderr and its exit code."""
    try:
        return func(*args) or 0
    except (UsageError, DataError) as error:
        print(f"megabyte {command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except Interrupted as stop:
        print(f"megabyte {command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print(f"megabyte {command}: interrupted", file=sys.stderr)
        return 130
