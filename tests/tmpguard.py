"""No test leaves anything in the machine's temp directory.

For the whole session ``TMPDIR`` (and :data:`tempfile.tempdir`) point at one private directory, so every
``mkstemp``/``mkdtemp`` of the tests, of the code under test and of the processes they start lands there. At the end
of the session that directory must be empty — anything left in it is a leak, named in the failure — and it is
removed; the machine's temp directory must not have gained any ``kalshictl-*`` entry either (a hard-coded ``/tmp``).
That second check cannot tell this session's entries from those of another test run on the same machine, so it fails
the run under CI (``CI`` set: one run per machine) and only warns elsewhere.

The directory sits in the machine's temp directory rather than under pytest's basetemp: as root, the embedded
PostgreSQL runs as an unprivileged user that must traverse every parent, and pytest keeps its basetemp root 0700.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

PREFIX = "kalshictl-"
SESSION_PREFIX = "kalshictl-tests-"  # concurrent sessions' own directories are not leaks


def _kalshictl_entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(PREFIX) and not p.name.startswith(SESSION_PREFIX)}


@pytest.fixture(scope="session", autouse=True)
def session_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's private temp directory (``TMPDIR``); fails the session if a test leaves anything in it."""
    tmp_path_factory.getbasetemp()  # pytest's own tmp_path root is chosen from TMPDIR: fix it before we change it
    system_tmp = Path(tempfile.gettempdir())
    before = _kalshictl_entries(system_tmp)
    session_tmp = Path(tempfile.mkdtemp(prefix=SESSION_PREFIX, dir=system_tmp))
    session_tmp.chmod(0o711)  # traversable by the unprivileged PostgreSQL user when the tests run as root
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(session_tmp)
    try:
        yield session_tmp
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
        left = sorted(p.name for p in session_tmp.iterdir())
        shutil.rmtree(session_tmp, ignore_errors=True)
    assert not left, f"tests left {len(left)} file(s) in their temp directory (TMPDIR): {left[:20]}"
    leaked = sorted(_kalshictl_entries(system_tmp) - before)
    message = f"tests left {len(leaked)} kalshictl-* entries in {system_tmp}: {leaked[:20]}"
    if leaked and os.environ.get("CI"):
        raise AssertionError(message)
    if leaked:
        warnings.warn(f"{message} (or another test run on this machine did)", stacklevel=1)
