"""How the command line reads numbers: every numeric flag's type is `bounded(...)`, so a value out
of range is refused by argparse, before any work starts, with one line that gives the range.

    parser.add_argument("--level", type=bounded(int, 1, 22))            # 1 to 22
    parser.add_argument("--top-p", type=bounded(float, above=0, most=1))  # above 0 and at most 1

Bounds are inclusive (least, most) or exclusive (above, below); floats must also be finite.
"""

import argparse
import math


def bounded(kind: type, least=None, most=None, *, above=None, below=None):
    """An argparse type: `kind(text)`, refused (ArgumentTypeError) outside the bounds."""
    text = range_text(least, most, above, below)
    name = {int: "an integer", float: "a number"}[kind]

    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {name}") from None
        inside = ((least is None or number >= least) and (most is None or number <= most)
                  and (above is None or number > above) and (below is None or number < below))
        if not (inside and math.isfinite(number)):  # nan compares False: refused too
            raise argparse.ArgumentTypeError(f"{value}: must be {text}")
        return number

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def range_text(least, most, above, below) -> str:
    if least is not None and most is not None:
        return f"{least:,} to {most:,}"
    parts = [f"at least {least:,}" if least is not None else f"above {above:,}" if above is not None else "",
             f"at most {most:,}" if most is not None else f"below {below:,}" if below is not None else ""]
    return " and ".join(part for part in parts if part)


class OneLineParser(argparse.ArgumentParser):
    """An argument error is one line on stderr (the command and what to change), exit code 2, as
    for every other refusal; `--help` still shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
