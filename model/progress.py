"""What a long job (evaluation, generation) shows on stderr while it runs.

On a terminal, a tqdm bar of the bytes done (of the total, when it is known) that stays with a
summary when the job ends. Anywhere else (a log file, a pipe) a bar would be noise: one line when
the job starts and one when it ends, with its bytes, seconds and bytes per second. Off: nothing.
"""

import sys
import time

from tqdm import tqdm


class Progress:
    """with Progress("evaluating plain windows", total) as progress: progress.update(n) as bytes are
    done, then progress.finish("1.23 bpb"). Leaving the block without finish (an error) closes the
    bar and prints no end line."""

    def __init__(self, title: str, total: int | None = None, enabled: bool = True):
        self.enabled, self.count, self.started = enabled, 0, time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, desc=title, unit="B", unit_scale=True, dynamic_ncols=True,
                            file=sys.stderr)
        elif enabled:
            print(f"{title} ...", file=sys.stderr, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, done: int) -> None:
        self.count += done
        if self.bar is not None:
            self.bar.update(done)

    def finish(self, note: str = "") -> None:
        """The job has ended: the bar shows `note`, or a line says what was done and how fast."""
        seconds = time.perf_counter() - self.started
        if self.bar is not None:
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.close()  # refreshes it, with the note
        elif self.enabled:
            print(f"... done: {self.count:,} bytes in {seconds:.1f} s ({self.count / seconds:,.0f} bytes/s)"
                  + (f", {note}" if note else ""), file=sys.stderr, flush=True)
