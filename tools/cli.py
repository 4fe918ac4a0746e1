"""`megabyte`: one command, a subcommand per verb.

Each subcommand lives in its own tools/cmd_*.py module, which adds its parser in `register` and
keeps every `cmd_*` function a thin call into library code. Expected failures (UsageError,
DataError and their subclasses) become one line on stderr and a non-zero exit code, as do bad
arguments (tools/arguments.py). A reader that goes away (`megabyte inspect stats D | head -1`) ends
the command quietly, as it ends any Unix filter; libraries' log lines below WARNING stay unsaid.
"""

import argparse
import logging
import os
import sys

from pipeline.format.errors import report_errors
from tools.arguments import OneLineParser
from tools import cmd_compare, cmd_convert, cmd_demo, cmd_flops, cmd_inspect, cmd_model, cmd_plot, cmd_train

COMMAND_MODULES = [cmd_convert, cmd_inspect, cmd_train, cmd_model, cmd_flops, cmd_plot, cmd_compare, cmd_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="megabyte", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        code = report_errors(args.command, args.func, args)
        sys.stdout.flush()  # a reader that went away shows here at the latest
        return code
    except BrokenPipeError:
        # nothing more can reach the reader: stdout goes to /dev/null, so that Python's own flush
        # at exit finds no broken pipe either (the recipe of Python's signal docs)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass  # not a real file (a test's capture)
        return 128 + 13  # as a shell reports a filter ended by SIGPIPE


def quiet_libraries() -> None:
    """Our loggers (megabyte.*) speak from INFO; libraries only from WARNING (botocore's "Found
    credentials in environment variables" is not news to the user)."""
    logging.basicConfig(format="%(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("megabyte").setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
