"""`megabyte`: one command, a subcommand per verb.

Each subcommand lives in its own tools/cmd_*.py module, which adds its parser in `register` and
keeps every `cmd_*` function a thin call into library code. Expected failures (UsageError,
DataError and their subclasses) become one line on stderr and a non-zero exit code.
"""

import argparse
import sys

from pipeline.format.errors import report_errors
from tools import cmd_compare, cmd_convert, cmd_demo, cmd_flops, cmd_inspect, cmd_model, cmd_plot, cmd_train

COMMAND_MODULES = [cmd_convert, cmd_inspect, cmd_train, cmd_model, cmd_flops, cmd_plot, cmd_compare, cmd_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megabyte", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_errors(args.command, args.func, args)


if __name__ == "__main__":
    sys.exit(main())
