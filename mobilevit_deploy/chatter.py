"""Keep converters' chatter (Python prints, tqdm, native fd-level logs) out of the user's terminal.

`quiet_chatter()` redirects file descriptors 1 and 2 into a temporary file for the duration of a
conversion and yields a function returning the chatter written so far, so an error can quote its last
lines (`tail`). Nothing is lost: the text is still there for the error message. (Intermediate tensors
that `mvdeploy debug` captures are another thing: `debug/capture.py`.)
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from typing import Callable, Iterator

# Lines converters print that never help to explain a failure.
NOISE = ("I0000", "W0000", "WARNING: All log", "INFO:", "  warnings.warn", "Saved artifact", "  ")


@contextlib.contextmanager
def quiet_chatter() -> Iterator[Callable[[], str]]:
    sink = tempfile.TemporaryFile()
    buffer = io.StringIO()
    saved_env = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = (os.dup(1), os.dup(2))
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)

    def text() -> str:
        sink.seek(0)
        return buffer.getvalue() + sink.read().decode("utf-8", "replace")

    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield text
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        sink.close()
        if saved_env is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved_env


def tail(chatter: str, lines: int = 3) -> str:
    """The last meaningful lines of a converter's chatter, as ' (a | b | c)' for an error message."""
    kept = [line.strip() for line in chatter.splitlines()
            if line.strip() and not line.startswith(NOISE) and "oneDNN" not in line]
    return f" ({' | '.join(kept[-lines:])})" if kept else ""
