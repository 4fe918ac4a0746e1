"""How the command line reports the project's expected errors: one line and an exit code."""

import sys

from pipeline.format.errors import DataError, UsageError


def report_errors(command: str, func, *args) -> int:
    """Run func(*args); an expected error becomes one line on stderr and its exit code."""
    try:
        return func(*args) or 0
    except (UsageError, DataError) as error:
        print(f"megabyte {command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"megabyte {command}: interrupted", file=sys.stderr)
        return 130
