"""Holding other processes' open() of one file, as a hung network mount would: fanotify
permission events (FAN_OPEN_PERM) on the file's inode. Every open of it by the given process
waits until release(); anyone else's passes at once.

Linux only; needs root (CAP_SYS_ADMIN) and a kernel with fanotify access permissions.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import threading
from pathlib import Path

import pytest

FAN_CLASS_CONTENT = 0x04
FAN_CLOEXEC = 0x01
FAN_NONBLOCK = 0x02
FAN_MARK_ADD = 0x01
FAN_OPEN_PERM = 0x00010000
FAN_ALLOW = 0x01
AT_FDCWD = -100
METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]


class OpenGate:
    def __init__(self, path: Path, pid: int):
        self.pid = pid
        self.fd = _libc.fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, os.O_RDONLY)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fanotify_init: {os.strerror(err)}")
        if _libc.fanotify_mark(self.fd, FAN_MARK_ADD, FAN_OPEN_PERM, AT_FDCWD, str(path).encode()) != 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"fanotify_mark {path}: {os.strerror(err)}")
        self._cond = threading.Condition()
        self._holding = True
        self._held: list[int] = []  # event descriptors of opens waiting for an answer
        self.held_total = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _answer(self, event_fd: int) -> None:
        os.write(self.fd, struct.pack("=iI", event_fd, FAN_ALLOW))
        os.close(event_fd)

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self._stop:
            if not poller.poll(50):
                continue
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                continue
            offset = 0
            while offset + METADATA.size <= len(data):
                event_len, _, _, _, _, event_fd, pid = METADATA.unpack_from(data, offset)
                offset += event_len
                with self._cond:
                    if self._holding and pid == self.pid:
                        self._held.append(event_fd)
                        self.held_total += 1
                        self._cond.notify_all()
                        continue
                try:
                    self._answer(event_fd)
                except OSError:
                    pass  # that opener is gone

    def wait_for_held(self, count: int = 1, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.held_total >= count, timeout), \
                f"{self.held_total} opens held, wanted {count}"

    def hold(self) -> None:
        with self._cond:
            self._holding = True

    def release(self) -> None:
        """Lets the waiting opens through, and every later one."""
        with self._cond:
            self._holding = False
            held, self._held = self._held, []
        for event_fd in held:
            try:
                self._answer(event_fd)
            except OSError:
                pass  # that opener is gone

    def close(self) -> None:
        self.release()
        self._stop = True
        self._thread.join(5)
        os.close(self.fd)


def skip_unless_available(tmp_dir: Path) -> None:
    probe = tmp_dir / "gate-probe"
    probe.write_text("x")
    try:
        OpenGate(probe, os.getpid()).close()
    except OSError as e:
        pytest.skip(f"cannot hold opens with fanotify here: {e}")
