"""What a long job (evaluation, generation) shows on stderr while it runs.

On a terminal, a tqdm bar of the bytes done (of the total, when it is known) that stays with a
summary when the job ends. Anywhere else (a log file, a pipe) a bar would be noise: one line when
the job starts, one a minute while it runs (the bytes done, and the bytes per second since the line
before: a job that slows as it goes shows it), and one when it ends, with its bytes, seconds and
bytes per second. Off: nothing.
"""

import sys
import time

from tqdm import tqdm


class Progress:
    """with Progress("evaluating plain windows", total) as progress: progress.update(n) as bytes are
    done, then progress.finish("1.23 bpb"). Leaving the block without finish (an error) closes the
    bar and prints no end line."""

    def __init__(self, title: str, total: int | None = None, enabled: bool = True, every: float = 60.0):
        self.enabled, self.count, self.started = enabled, 0, time.perf_counter()
        self.total, self.every = total, every  # seconds between the lines written while it runs
        self.last_line = (self.started, 0)  # (time, count) of the last line
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
        elif self.enabled and (now := time.perf_counter()) - self.last_line[0] >= self.every:
            self.write_line(now)

    def write_line(self, now: float) -> None:
        """The bytes done so far, and the bytes per second since the last line."""
        then, count = self.last_line
        share = f" ({self.count / self.total:.0%})" if self.total else ""
        print(f"... {self.count:,} bytes{share}, {(self.count - count) / (now - then):,.0f} bytes/s "
              f"over the last {now - then:.0f} s", file=sys.stderr, flush=True)
        self.last_line = (now, self.count)

    def finish(self, note: str = "") -> None:
        """The job has ended: the bar shows `note`, or a line says what was done and how fast."""
        seconds = time.perf_counter() - self.started
        if self.bar is not None:
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.close()  # refreshes it, with the note
        elif self.enabled:
            print(f"... done: {self.count:,} bytes in {seconds:.1f} s ({self.count / seconds:,.0f} bytes/s)"
                  + (f", {note}" if note else ""), file=sys.stderr, flush=True)
