"""Atomic file writes: every output file of the project goes through `atomic_write`.

The data go to a temp file in the target's own folder, which `os.replace` then renames over the
target (atomic on one filesystem, hence the same folder). A reader never sees half a file, and a
write that fails (bad record, full disk, Ctrl-C) leaves an existing file exactly as it was.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write"]


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, encoding: str = "utf-8",
                 newline: str | None = "\n") -> Iterator[IO]:
    """Open a temp file for writing (`mode` "w" or "wb") that replaces `path` when the block ends
    without an exception; on an exception the temp file is removed and `path` is untouched.
    Parent folders are created. A folder at `path` is an IsADirectoryError naming it."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file path", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = {} if mode == "wb" else {"encoding": encoding, "newline": newline}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))  # mkstemp makes it 0600; give it what `open` would
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _file_mode(path: Path) -> int:
    """The permission bits of the file being replaced, or those `open()` gives a new file."""
    with suppress(FileNotFoundError):
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0o022)  # the only portable way to read the umask is to set it back
    os.umask(umask)
    return 0o666 & ~umask
