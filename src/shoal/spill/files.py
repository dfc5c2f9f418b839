"""Where spilled objects live, as every process of a runtime sees it: the
files, the location numbers the store records for them, reading an object
back, and writing one that does not fit in the store at all.

    <directory>/shoal-spill-<pid>-<session>/  one per runtime and directory (mode 0700;
                                               pid: the driver's)
        lock                                 held by the driver while it lives
        <n>.obj                              one object: a large spill, or a fallback
        <n>.fused                            small objects spilled together in one round

Files of one object are written with direct I/O where the file system
allows it (O_DIRECT): measured here, sustained writes of 256 MiB files ran
at 1.29 GB/s direct against 0.26 GB/s through the page cache (whose
writeback throttles writers), and direct writes leave no dirty pages to
take memory. Their first read then comes from the disk, not the page
cache. Fused files of small objects go through the page cache.

The store records a spilled object's place as a location number::

    location = n << 40 | fused << 39 | offset

File n lies in directory n % len(directories) (several directories share
the load, as Ray's directory lists do). An object inside a file starts on a
64-byte boundary, a large one on a page boundary, so that a mapping of it
keeps the alignment its arrays had in the store.
"""

from __future__ import annotations

import errno
import os

from shoal import exceptions as exc
from shoal._store._files import FileBuffer, read_into, write_buffers

FILE_SHIFT = 40
FUSED_BIT = 1 << 39
OFFSET_MASK = FUSED_BIT - 1
MAX_FILES = 1 << (64 - FILE_SHIFT)

#: Errors that mean "the disk is full" rather than "something is broken".
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def encode(number: int, offset: int, fused: bool) -> int:
    """The location of an object at `offset` in file `number`."""
    if not 0 < number < MAX_FILES or not 0 <= offset <= OFFSET_MASK:
        raise ValueError(f"no location for file {number}, offset {offset}")
    return number << FILE_SHIFT | (FUSED_BIT if fused else 0) | offset


def decode(location: int) -> tuple[int, int, bool]:
    """(file number, offset, fused) of a location."""
    return location >> FILE_SHIFT, location & OFFSET_MASK, bool(location & FUSED_BIT)


def folder_name(session: str, pid: int | None = None) -> str:
    """The name of a runtime's spill folder (pid: its driver's, this
    process's if None)."""
    return f"shoal-spill-{os.getpid() if pid is None else pid}-{session}"


class SpillFiles:
    """A process's view of its runtime's spill files.

    Args:
        folders: the runtime's folder in each spilling directory.
        map_bytes: objects of at least this many bytes are read by mapping
            their file (zero copy, shared page cache); smaller ones are
            copied, which costs less than a mapping each.
    """

    def __init__(self, folders: list[str], map_bytes: int = 256 << 10):
        if not folders:
            raise ValueError("SpillFiles needs at least one folder")
        self.folders = list(folders)
        self.map_bytes = map_bytes
        #: called with the location of a deleted object in a fused file (the
        #: driver's spiller counts what is left in each; None elsewhere)
        self.on_fused_deleted = None

    def path(self, number: int, fused: bool) -> str:
        folder = self.folders[number % len(self.folders)]
        return os.path.join(folder, f"{number}.{'fused' if fused else 'obj'}")

    def path_of(self, location: int) -> str:
        number, _, fused = decode(location)
        return self.path(number, fused)

    # -- reading ---------------------------------------------------------------

    def read(self, oid: bytes, location: int, data_size: int, metadata_size: int) -> FileBuffer:
        """The bytes of spilled object `oid`, mapped or copied (the store's
        spill reader: get() of a spilled object lands here)."""
        number, offset, fused = decode(location)
        path = self.path(number, fused)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise exc.ObjectLostError(
                f"object {oid.hex()} was spilled to {path}, which no longer exists: the object was "
                f"deleted meanwhile, or the runtime was shut down") from None
        try:
            return FileBuffer.open(fd, offset, data_size, metadata_size,
                                   map=data_size + metadata_size >= self.map_bytes)
        finally:
            os.close(fd)

    def read_into(self, location: int, target: memoryview, skip: int = 0) -> None:
        """Fill `target` with the bytes of the object at `location` from
        byte `skip` on, the GIL released meanwhile. A file of one object is
        read with direct I/O where it can be (it was written so; through the
        page cache, reading it cold ran at half the speed here)."""
        number, offset, fused = decode(location)
        offset += skip
        path = self.path(number, fused)
        direct = not fused and offset % 4096 == 0
        fd = -1
        if direct:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                direct = False
        if fd < 0:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            read_into(fd, offset, target, direct)
        finally:
            os.close(fd)

    # -- writing -----------------------------------------------------------------

    def new_file(self, number: int, fused: bool, size: int, direct: bool = False) -> tuple[str, int, bool]:
        """Create file `number` (it must not exist) with `size` bytes
        reserved on disk; returns (path, descriptor, whether it is open for
        direct I/O: asked for, and the file system allows it). Raises
        OSError (a full disk: errno ENOSPC) and leaves no file behind."""
        path = self.path(number, fused)
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
        fd = -1
        if direct:
            try:
                fd = os.open(path, flags | os.O_DIRECT, 0o600)
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: no direct I/O here (tmpfs)
                    raise
                direct = False
        if fd < 0:
            fd = os.open(path, flags, 0o600)
        if size:
            try:
                os.posix_fallocate(fd, 0, size)  # a full disk fails here, not half way
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # (then writes will tell)
                    os.close(fd)
                    _unlink(path)
                    raise
        return path, fd, direct

    def write_object(self, number: int, size: int, parts: list, metadata: bytes) -> int:
        """Write one serialized object (its data `parts`, (offset, buffer)
        pairs, then its metadata) to a file of its own; returns its
        location. Raises OSError, leaving no file behind."""
        total = size + len(metadata)
        path, fd, direct = self.new_file(number, False, total, direct=True)
        try:
            write_buffers(fd, 0, contiguous(parts, size) + [metadata], direct)
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        return encode(number, 0, False)

    # -- deleting ----------------------------------------------------------------

    def forget(self, location: int) -> None:
        """The object at `location` was deleted: its bytes go (a fused
        file, when its last object goes)."""
        if decode(location)[2]:
            if self.on_fused_deleted is not None:
                self.on_fused_deleted(location)
        else:
            _unlink(self.path_of(location))


def contiguous(parts: list, size: int) -> list:
    """(offset, buffer) parts of a serialized object as buffers back to
    back from 0 to `size`, the gaps between them filled with zeros."""
    out, at = [], 0
    for offset, part in parts:
        if offset > at:
            out.append(bytes(offset - at))
        view = memoryview(part).cast("B")
        out.append(view)
        at = offset + view.nbytes
    if size > at:
        out.append(bytes(size - at))
    return out


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
