"""How many forward passes are running right now, across every process of this instance.

A lone pass may use every core; passes that overlap should take one core each, or they
fight over the same cores and serve fewer in all (uwsgi.ini has the figures). A uWSGI
worker cannot see the others' passes by itself, so each process counts its passes in a
slot of a small file mapped into every process of the instance (``/dev/shm``: memory, not
disk): a slot holds a process id and how many passes that process has running.

Races are benign: a count read a moment early or late makes one pass run on more or fewer
threads than ideal, never a wrong answer. A process killed mid-pass leaves its slot set,
but its id no longer names a live process, so readers ignore the slot from then on and the
next process to claim a slot may take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import mmap
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SLOTS = 64  # processes of one instance that can be counted; more uWSGI workers than this count themselves only
_SLOT = np.dtype([("pid", np.int32), ("passes", np.int32)])


class InFlight:
    """This process's slot in the file at ``path``, shared with the instance's other processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._own = 0
        self._lock = threading.Lock()
        try:
            self._slots, self._index = _mapped(path)
        except OSError as error:  # a read-only /dev/shm, say: still correct within this process
            log.warning("cannot share a pass count in %s (%s): this process counts only its own passes",
                        path, error)
            self._slots, self._index = np.zeros(SLOTS, dtype=_SLOT), None

    def others(self) -> int:
        """Passes that other live processes of the instance have running."""
        busy = np.flatnonzero(self._slots["passes"] > 0)
        return sum(int(self._slots["passes"][i]) for i in busy
                   if i != self._index and _alive(int(self._slots["pid"][i])))

    @contextmanager
    def running(self) -> Iterator[int]:
        """Counts a pass in while the block runs; yields how many are in flight, this one included."""
        with self._lock:
            self._own += 1
            own = self._own
            self._write(own)
        try:
            yield own + self.others()
        finally:
            with self._lock:
                self._own -= 1
                self._write(self._own)

    def _write(self, passes: int) -> None:
        if self._index is not None:
            self._slots["passes"][self._index] = passes


def _mapped(path: Path) -> tuple[np.ndarray, int | None]:
    """The slots in the file at ``path``, made if missing, and the one this process claimed."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        # Checked before locking: another user who planted the file (a shared /dev/shm) could
        # hold a lock on it for ever, and every prediction would wait on it. A file only this
        # user can open has no lock but ours, each held for a moment.
        status = os.fstat(descriptor)
        if status.st_uid != os.getuid() or status.st_mode & 0o077:
            raise PermissionError(f"{path} belongs to another user or others may open it")
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # only while claiming a slot
        try:
            if status.st_size < SLOTS * _SLOT.itemsize:
                os.ftruncate(descriptor, SLOTS * _SLOT.itemsize)
            slots = np.frombuffer(mmap.mmap(descriptor, SLOTS * _SLOT.itemsize), dtype=_SLOT)
            return slots, _claim(slots, path)
        finally:
            # Unlocked explicitly: the map holds a duplicate of the descriptor, which would keep
            # the lock (and every other process waiting for it) after closing this one.
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _claim(slots: np.ndarray, path: Path) -> int | None:
    """A free slot, after freeing every slot whose process is gone (killed mid-pass, say) or
    that holds this process's id from an earlier life of it (a master or worker id reused):
    left as they were, such slots would count a pass for ever and no pass would be lone."""
    me = os.getpid()
    for index, slot in enumerate(slots):
        pid = int(slot["pid"])
        if pid == me or (pid and not _alive(pid)):
            slots[index] = (0, 0)
    for index, slot in enumerate(slots):
        if int(slot["pid"]) == 0:
            slots[index] = (me, 0)
            return index
    log.warning("all %d slots of %s are taken: this process counts only its own passes", SLOTS, path)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process has the id now: alive, and not ours to judge
        return True
    return True


def instance_file() -> Path:
    """The file this process's instance shares: under uWSGI one per master (its workers are
    its children), else one per process (the dev server's threads, the CLI)."""
    try:
        import uwsgi  # only inside uWSGI

        owner = uwsgi.masterpid()
    except ImportError:
        owner = os.getpid()
    folder = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return folder / f"classifier-passes-{os.getuid()}-{owner}"


@functools.lru_cache(maxsize=1)
def _for_process(pid: int) -> InFlight:
    path = instance_file()
    _remove_orphans(path)
    return InFlight(path)


def this_instance() -> InFlight:
    """The instance's counter, opened once per process (and again in a forked child)."""
    return _for_process(os.getpid())


def _remove_orphans(path: Path) -> None:
    """Files of instances whose owner is gone (a few hundred bytes each, but never removed
    by their own processes: a uWSGI master never loads the app)."""
    prefix = path.name.rsplit("-", 1)[0]
    for other in path.parent.glob(f"{prefix}-*"):
        owner = other.name.rsplit("-", 1)[1]
        if owner.isdigit() and other != path and not _alive(int(owner)):
            with contextlib.suppress(OSError):  # one another user planted is theirs to remove
                other.unlink()
