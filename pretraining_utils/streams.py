"""Reading text input as blocks and as chunks of whole lines, from files and pipes alike."""

from __future__ import annotations

import io
import os
import select
import stat
from collections.abc import Iterator
from typing import IO, Any


def read_blocks(f: IO[bytes], size: int, poll_seconds: float = 0.2) -> Iterator[bytes]:
    """Blocks of at most ``size`` bytes until EOF.

    From a pipe it waits for data in short ``select`` slices rather than in one blocking read:
    a signal that the kernel hands to another thread (numpy's, tqdm's) cannot interrupt a read
    in the main thread, which would then never see its Ctrl-C or SIGTERM.
    """
    try:
        fd = f.fileno()
        is_pipe = not stat.S_ISREG(os.fstat(fd).st_mode)
    except (AttributeError, io.UnsupportedOperation):  # in-memory streams (tests, CliRunner)
        is_pipe = False
    if not is_pipe:
        while block := f.read(size):
            yield block
        return
    while True:
        ready, _, _ = select.select([fd], [], [], poll_seconds)
        if ready:
            if not (block := os.read(fd, size)):
                return
            yield block


def line_chunks(
    f: IO[bytes], chunk_bytes: int, digest: Any | None = None
) -> Iterator[tuple[int, bytes]]:
    """``(first_line, data)`` chunks of whole lines, about ``chunk_bytes`` each.

    ``first_line`` is the 1-based number of the chunk's first line. Every chunk ends with
    ``\\n`` except possibly the last, when the input does not. ``digest`` (a hashlib object), if
    given, is fed every byte read.
    """
    rest: list[bytes] = []  # the start of a line that has not ended yet
    line = 1
    for block in read_blocks(f, chunk_bytes):
        if digest is not None:
            digest.update(block)
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            rest.append(block)
            continue
        data = b"".join([*rest, block[:cut]])
        rest = [block[cut:]] if cut < len(block) else []
        yield line, data
        line += data.count(b"\n")
    if rest:
        yield line, b"".join(rest)
