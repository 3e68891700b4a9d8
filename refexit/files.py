"""File modes of what refexit writes. Files are written to a temporary name and renamed into place;
`tempfile.mkstemp` creates them 0600, so before the rename each gets the mode an ordinary `open()`
would have given it: 0666 (0777 for programs and libraries) minus the user's umask. A deployed
sidecar run as another user can then read its weights, as the user's umask intends."""
from __future__ import annotations

import os
import threading

_LOCK = threading.Lock()


def umask() -> int:
    try:                                 # Linux: read it without changing it (other threads create files)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _LOCK:                          # elsewhere os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def mode(executable: bool = False) -> int:
    return (0o777 if executable else 0o666) & ~umask()


def set_mode(path, executable: bool = False) -> None:
    """Give `path` (a fresh temporary file of ours) the mode open() would have given it."""
    os.chmod(path, mode(executable))
