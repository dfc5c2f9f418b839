"""The spiller: a thread of the driver that moves sealed objects out of the
store into files when the store fills up, so that work whose data is larger
than the store goes on.

    creators (any process)                 spiller (a thread of the driver)
    create: no room                          sleeps on the store's spill_call word
    request_space(n)  -- spill_call -->      picks sealed objects nobody reads,
    wait_space        <-- spill_done --      least recently used first; writes
    create again; or, if the round ran       them out on I/O threads; marks each
    dry, a file of its own (fallback)        spilled, which frees its memory

A create that leaves more than `threshold` of the store in use wakes it too,
so it spills ahead of need while creators go on. A round fuses small
objects into one file (100,000 spilled 1 KB objects are a handful of files)
and gives each large object a file of its own, whose disk space goes as
soon as the object is deleted. An object that was spilled and read back
into the store still has its file: it goes first, and costs no write. Objects are only spilled while no process
reads them; a reader that comes during the write keeps the object in
memory (the store refuses to mark it) and the bytes written are dropped.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import threading
import time
from typing import Callable

from shoal import exceptions as exc
from shoal._store._files import SCRATCH_BYTES, write_buffers
from shoal.spill import files as F
from shoal.store import ObjectBuffer, ObjectStore

#: Objects per round at most (Ray's max_fused_object_count is 2,000 per file).
MAX_ROUND_OBJECTS = 10_000
#: Bytes per piece of a write: the I/O threads share pieces, so a large
#: object is written by all of them at once (a multiple of DIRECT_ALIGN).
CHUNK = 8 << 20
_PAD = bytes(4096)


class _Stopped(Exception):
    """The runtime is shutting down: the round in progress stops."""


@dataclasses.dataclass
class SpillStats:
    """What the spiller did since the runtime started (bytes, seconds)."""

    rounds: int = 0
    objects_spilled: int = 0
    bytes_written: int = 0
    files_written: int = 0
    seconds_writing: float = 0.0
    objects_kept: int = 0  #: written but read meanwhile: left in memory
    last_error: str = ""  #: the last write that failed, and why


class Spiller:
    """Args:
        store: the driver's store.
        files: where the runtime's spill files go.
        threshold: share of the store in use beyond which it spills ahead
            of need, down to that share.
        min_round_bytes: a round asked for room spills at least this much
            (fewer, larger files; Ray's min_spilling_size).
        io_threads: threads writing at once.
        fuse_below: objects smaller than this share a file.
        spillable: oid -> whether the runtime lets it go to disk (objects it
            tracks, whose deletion it will see).
    """

    def __init__(self, store: ObjectStore, files: F.SpillFiles, *, threshold: float, min_round_bytes: int,
                 io_threads: int, fuse_below: int, spillable: Callable[[bytes], bool]):
        self.store = store
        self.files = files
        capacity = store.statistics().capacity_bytes
        self.low_water = int(capacity * threshold)
        self.min_round_bytes = max(1, min(min_round_bytes, capacity // 8))
        self.io_threads = max(1, io_threads)
        self.fuse_below = fuse_below
        self.spillable = spillable
        self.stats = SpillStats()
        self._fused: dict[int, int] = {}  # fused file number -> objects left in it
        self._lock = threading.Lock()
        self._closed = False
        self._reported = False  # a failure's traceback was printed once
        self._pool = None  # a concurrent.futures.ThreadPoolExecutor, made at the first round that needs it
        self._scratch = threading.local()
        self._thread = threading.Thread(target=self._run, name="shoal-spill", daemon=True)
        files.on_fused_deleted = self._fused_deleted

    def start(self) -> None:
        self.store.raw.set_spill_watermark(self.low_water if self.low_water > 0 else 1)
        self._thread.start()

    def stop(self) -> None:
        """Finish the round in progress, then stop; creators still waiting
        are told that no more room will come (they write files of their own)."""
        if self._closed:
            return
        self._closed = True
        raw = self.store.raw
        raw.set_spill_watermark(0)
        raw.request_space(0)  # wakes the thread, which sees _closed
        if threading.current_thread() is not self._thread:
            self._thread.join()
        raw.spill_round_done(True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def settle(self, timeout: float | None = 30.0) -> bool:
        """Wait until the round in progress (if any) has ended; False if it
        takes over `timeout` seconds (None: no limit)."""
        raw = self.store.raw
        return raw.wait_space(raw.request_space(0), timeout)[0]

    # -- the thread ----------------------------------------------------------

    def _run(self) -> None:
        raw = self.store.raw
        seq = 0
        while not self._closed:
            try:
                _, seq, wanted = raw.spill_wait(seq, None)
                if self._closed:
                    return
                self._serve(wanted)
            except exc.StoreClosedError:
                return
            except Exception as e:  # a bug: keep serving, and let creators fall back
                import traceback

                if not self._reported:
                    self._reported = True
                    import sys

                    sys.stderr.write("shoal: the spiller failed (a bug in shoal); objects that do not fit "
                                     "are written to files of their own meanwhile:\n")
                    traceback.print_exc()
                self.stats.last_error = f"{type(e).__name__}: {e}"
                try:
                    raw.spill_round_done(True)
                except exc.StoreClosedError:
                    return

    def _serve(self, wanted: int) -> None:
        """Rounds until the creators' `wanted` bytes are freed and the store
        is back under the threshold, or nothing more can be spilled."""
        raw = self.store.raw
        while not self._closed:
            over = raw.statistics()["bytes_in_use"] - self.low_water
            target = max(wanted, over)
            if target <= 0:
                raw.spill_round_done(False)  # an empty round: whoever waits looks again
                return
            target = max(target, self.min_round_bytes)  # fewer, larger files
            freed, dry = self._round(target)
            raw.spill_round_done(dry)
            wanted = 0
            if dry:
                return

    # -- one round ---------------------------------------------------------------

    def _round(self, target: int) -> tuple[int, bool]:
        """Spill about `target` bytes of blocks; returns (bytes freed,
        whether it ran dry: nothing more could be spilled)."""
        chosen, dry = self._choose(target)
        if not chosen:
            return 0, True
        self.stats.rounds += 1
        started = time.perf_counter()
        placed = None
        try:
            placed = self._write(chosen)
        except OSError as e:  # a full disk, say: every object stays in memory
            self.stats.last_error = f"writing {len(chosen)} objects to {self.files.folders[0]}: {e}"
        except _Stopped:
            pass
        except BaseException as e:
            self.stats.last_error = f"{type(e).__name__}: {e}"
            raise
        finally:
            if placed is None:  # keep no pin, whatever happened
                self._release_all(chosen)
        if placed is None:
            return 0, True
        self.stats.seconds_writing += time.perf_counter() - started
        freed = self._commit(chosen, placed)
        return freed, dry and freed < target

    @staticmethod
    def _release_all(chosen: list) -> None:
        for _, buf, _ in chosen:
            try:
                buf.release()
            except BufferError:  # a view lives on in a traceback: the pin goes with it
                pass

    def _choose(self, target: int) -> tuple[list, bool]:
        """[(oid, buffer, block_bytes)] of objects to spill, pinned by this
        process, adding up to `target`; and whether candidates ran out."""
        raw = self.store.raw
        chosen: list = []
        picked = skipped_bytes = 0
        skipped: set[bytes] = set()
        while picked < target and len(chosen) < MAX_ROUND_OBJECTS:
            batch = raw.spill_candidates(target - picked + skipped_bytes,
                                         min(MAX_ROUND_OBJECTS - len(chosen) + len(skipped), 65536))
            fresh = [c for c in batch if c[0] not in skipped]
            if not fresh:
                return chosen, True
            for oid, size in fresh:
                if not self.spillable(oid):
                    skipped.add(oid)
                    skipped_bytes += size
                    continue
                try:
                    buf = raw.get(oid, 0)  # pins it: off the candidates, and safe from reuse
                except exc.ObjectNotFoundError:
                    continue  # deleted meanwhile
                if not isinstance(buf, ObjectBuffer):
                    continue
                chosen.append((oid, buf, size))
                picked += size
                if picked >= target:
                    break
        return chosen, False

    def _write(self, chosen: list) -> list[int]:
        """Write the chosen objects out; returns the location of each."""
        raw = self.store.raw
        locations = [buf.location or 0 for _, buf, _ in chosen]  # restored ones: back to their copy
        todo = [k for k, location in enumerate(locations) if not location]
        small = [k for k in todo if chosen[k][1].nbytes < self.fuse_below]
        large = [k for k in todo if chosen[k][1].nbytes >= self.fuse_below]
        runs: list[tuple[int, list, bool]] = []  # (fd, buffers back to back from offset 0, direct)
        made: list[tuple[str, int]] = []
        written = 0
        try:
            if small:
                number = raw.unique_number()
                offset, views = 0, []
                for k in small:
                    buf = chosen[k][1]
                    locations[k] = F.encode(number, offset, True)
                    end = offset + buf.nbytes + len(buf.metadata)
                    views += [memoryview(buf), buf.metadata]
                    pad = -end % 64
                    if pad:
                        views.append(_PAD[:pad])
                    offset = end + pad
                path, fd, direct = self.files.new_file(number, True, offset)
                made.append((path, fd))
                runs.append((fd, views, direct))
                with self._lock:
                    self._fused[number] = len(small)
            for k in large:
                buf = chosen[k][1]
                number = raw.unique_number()
                path, fd, direct = self.files.new_file(number, False, buf.nbytes + len(buf.metadata), direct=True)
                made.append((path, fd))
                locations[k] = F.encode(number, 0, False)
                runs.append((fd, [memoryview(buf), buf.metadata], direct))
            written = sum(len(v) for _, views, _ in runs for v in views)
            self._write_runs(runs)
        except BaseException:
            for path, _ in made:
                F._unlink(path)
            with self._lock:
                for path, _ in made:
                    if path.endswith(".fused"):
                        self._fused.pop(int(os.path.basename(path).split(".")[0]), None)
            raise
        finally:
            for _, views, _ in runs:
                for v in views:
                    if isinstance(v, memoryview):
                        v.release()
            for _, fd in made:
                os.close(fd)
        self.stats.files_written += len(made)
        self.stats.bytes_written += written
        return locations

    def _write_runs(self, runs: list) -> None:
        """Write every run, cut into pieces of CHUNK bytes (a multiple of the
        direct I/O alignment) shared among the I/O threads."""
        pieces = []
        try:
            for fd, views, direct in runs:
                offset, batch, size = 0, [], 0
                for v in views:
                    v = v if isinstance(v, memoryview) else memoryview(v)
                    while v.nbytes:
                        take = v[: CHUNK - size]
                        batch.append(take)
                        size += take.nbytes
                        v = v[take.nbytes:]
                        if size == CHUNK:
                            pieces.append((fd, offset, batch, direct))
                            offset += size
                            batch, size = [], 0
                    v.release()
                if batch:
                    pieces.append((fd, offset, batch, direct))
            if len(pieces) == 1 or self.io_threads == 1:
                for piece in pieces:
                    self._write_piece(*piece)
                return
            import concurrent.futures  # (only once a round writes from several threads)

            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.io_threads,
                                                                   thread_name_prefix="shoal-spill-io")
            futures = [self._pool.submit(self._write_piece, *piece) for piece in pieces]
            concurrent.futures.wait(futures)
            for f in futures:
                f.result()
        finally:
            # Every slice holds the object's buffer exported: release them
            # all, or the object could not be marked spilled (nor released).
            for _, _, batch, _ in pieces:
                for v in batch:
                    v.release()

    def _write_piece(self, fd: int, offset: int, views: list, direct: bool) -> None:
        if self._closed:  # shutting down: the round stops here, its objects stay in memory
            raise _Stopped()
        scratch = getattr(self._scratch, "buffer", None)
        if scratch is None:  # one bounce buffer per I/O thread, kept: its pages stay warm
            scratch = self._scratch.buffer = mmap.mmap(-1, SCRATCH_BYTES)
        write_buffers(fd, offset, views, direct, scratch)

    def _commit(self, chosen: list, locations: list[int]) -> int:
        """Mark each written object spilled (freeing its memory). One that a
        reader pinned, or the runtime deleted, meanwhile is not: its written
        bytes are dropped, unless they were its copy from before (an object
        read back keeps its file: the object owns it still)."""
        raw = self.store.raw
        freed = 0
        error = None
        for (oid, buf, size), location in zip(chosen, locations):
            written_now = not buf.location
            try:
                spilled = raw.mark_spilled(buf, location)
            except Exception as e:  # a bug: keep the object, go on with the others
                spilled, error = False, e
            if spilled:
                freed += size
                self.stats.objects_spilled += 1
            else:
                self._release_all([(oid, buf, size)])
                if written_now:
                    self.files.forget(location)
                self.stats.objects_kept += 1
        if error is not None:
            raise error
        return freed

    # -- deletions ------------------------------------------------------------------

    def _fused_deleted(self, location: int) -> None:
        """An object of a fused file went; the file goes with its last one."""
        number = F.decode(location)[0]
        with self._lock:
            left = self._fused.get(number)
            if left is None:
                return
            if left > 1:
                self._fused[number] = left - 1
                return
            del self._fused[number]
        F._unlink(self.files.path(number, True))

    def fused_files(self) -> int:
        with self._lock:
            return len(self._fused)
