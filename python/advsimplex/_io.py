"""Safe files: atomic writes, the checksum of a set of tensors, and the clean-up of interrupted writes.

:func:`atomic_write` lets a reader see the old file or the complete new one, never a partial file.
A process killed during a write leaves a hidden temporary beside the target
(``.<name>.<random>.tmp``); :func:`remove_stale_temporaries` deletes those when a run starts again.

Fault injection (tests only): with the environment variable ``ADVSIMPLEX_FAULT_KILL_BEFORE_RENAME=N``
the process sends itself SIGKILL right before the rename of its N-th atomic write, i.e. after the
temporary file is complete and flushed and before it replaces the target. Unset, it costs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

FAULT_KILL_BEFORE_RENAME = "ADVSIMPLEX_FAULT_KILL_BEFORE_RENAME"
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # mkstemp(prefix=".<name>.", suffix=".tmp")
_writes = 0


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk, then rename it onto ``path``.

    The file gets the usual permissions (0666 minus the umask, not ``mkstemp``'s 0600), so checkpoints
    written on shared storage stay readable. On any error the temporary file is removed and ``path`` is
    left as it was.
    """
    global _writes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with _os_errors(path):
            write(tmp)  # the writer may replace the file (safetensors does): set the mode afterwards
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _writes += 1
        if os.environ.get(FAULT_KILL_BEFORE_RENAME) == str(_writes):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def _os_errors(path: Path):
    """Raise the I/O failures that safetensors reports as ``SafetensorError`` (a full disk, a file-size
    limit) as the ``OSError`` they are, naming ``path``."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as exc:
        found = re.search(r"I/O error: (.*) \(os error (\d+)\)", str(exc))
        if found is None:
            raise
        raise OSError(int(found.group(2)), found.group(1), str(path)) from exc


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def is_stale_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write`'s temporaries."""
    return bool(_TEMPORARY.match(name))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that interrupted :func:`atomic_write` calls left in ``folder``; returns them.

    Call it only where no other process is writing (a run directory when its run starts).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [p for p in folder.iterdir() if p.is_file() and is_stale_temporary(p.name)]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def tensors_checksum(tensors: Mapping[str, Tensor]) -> str:
    """``"sha256:<hex>"`` over the names, dtypes, shapes and bytes of ``tensors`` (in name order).

    Stored in a safetensors file's metadata, it detects corrupted tensor bytes behind an intact header.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return "sha256:" + digest.hexdigest()
