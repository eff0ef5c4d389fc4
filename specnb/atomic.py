"""Atomic writes: a reader (or a crash) never sees a half-written file or folder.

- ``atomic_path(path)``: a context manager yielding a temporary path beside ``path``; on success
  it is renamed onto ``path`` (``os.replace``, atomic on one file system), on an error it is
  deleted. Any writer works inside it: ``torch.save``, ``safetensors.save_file``, ``savefig``.
- ``atomic_dir(path)``: the same for a folder (e.g. ``save_pretrained``); an existing ``path``
  is replaced only once the new folder is complete.
- ``write_text``, ``write_json``, ``write_csv``: the common cases.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_dir", "write_text", "write_json", "write_csv"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path in ``path``'s folder (same suffix, so writers that infer a
    format from it still work); rename it onto ``path`` when the block succeeds, delete it if not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # the mode a plain open() would give, not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; when the block succeeds it replaces ``path``
    (an old folder is moved aside first and deleted after), else it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # the mode a plain mkdir would give, not mkdtemp's 0700
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, payload) -> None:
    """``payload`` as indented JSON with a final newline."""
    write_text(path, json.dumps(payload, indent=2) + "\n")


def write_csv(frame, path: str | Path) -> None:
    """A pandas frame as CSV, without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
