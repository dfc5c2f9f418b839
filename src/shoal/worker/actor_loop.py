"""The life of an actor process: build the instance, then serve its method
calls in one of three ways.

  sequential  (default)           one call at a time, in the order sent
  threaded    (max_concurrency>1) calls run in a pool of that many threads
  asyncio     (async methods)     calls run as tasks on one event loop, up
                                  to max_concurrency at a time (default 1000)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import select
import time

from shoal.scheduler import protocol as P
from shoal.worker.execution import (
    ActorExit, CallInfo, Executor, _cancelled, exit_on_request, new_call_info, return_ids, seal_error,
)


def wait_for_init(ctx) -> P.ActorSpec | None:
    """The ACTOR_INIT message (None if told to exit first)."""
    ring = ctx.to_worker
    while True:
        for data in ring.recv_many():
            msg = P.decode(data)
            if msg[0] == P.ACTOR_INIT:
                ctx.actor_restarts = msg[2] if len(msg) > 2 else 0
                ctx.assigned = msg[3] if len(msg) > 3 else {}
                return msg[1]
            if msg[0] == P.EXIT:
                return None
            if msg[0] == P.TASK:
                ctx.pending.append((msg[1], msg[2]))
        ring.wait_readable(ctx.own_fd, 0.0)


def serve_actor(ctx, spin: float) -> None:
    init = wait_for_init(ctx)
    if init is None:
        return
    ctx.actor_id = init.actor_id
    ctx.is_async_actor = init.is_async
    ctx.placement = init.placement
    executor = Executor(ctx, os.getpid())
    marker = b"\x00shoal:" + init.class_name.encode(errors="replace") + b"\n"
    os.write(1, marker)  # what the actor prints is prefixed with its class name
    os.write(2, marker)
    error = executor.construct(init)
    ctx.send((P.CONSTRUCTED, error))
    if error is not None:
        return
    ctx.current_name = init.class_name
    # Concurrency groups: each has its own limit; calls of the default group
    # share max_concurrency (as in Ray).
    groups = {None: max(1, init.max_concurrency), **(init.groups or {})}
    if init.is_async:
        asyncio.run(_serve_async(ctx, executor, groups, spin))
    elif len(groups) > 1 or init.max_concurrency > 1:
        _serve_threaded(ctx, executor, groups)
    else:
        from shoal.worker.main import serve

        serve(ctx, spin, executor.run_call, markers=False)


def _skip_if_cancelled(ctx, seq: int, spec) -> bool:
    if seq in ctx.cancelled:
        ctx.cancelled.discard(seq)
        seal_error(ctx.store, return_ids(spec), _cancelled(spec))
        ctx.send(CallInfo().done(seq, P.CANCELLED, time.perf_counter(), 0.0, {}))
        return True
    return False


def _group(spec, groups: dict):
    """The call's concurrency group (calls naming an unknown one run in the default group)."""
    group = getattr(spec, "group", None)
    return group if group in groups else None


def _serve_threaded(ctx, executor: Executor, groups: dict) -> None:
    """Calls run on threads: one pool per concurrency group."""
    ring = ctx.to_worker
    done = {"exit": False}

    def run(seq: int, spec) -> None:
        if done["exit"] or _skip_if_cancelled(ctx, seq, spec):  # cancelled while it waited for a thread
            return
        ctx.set_thread_task(spec.task_id, seq)
        info = new_call_info()
        t = time.perf_counter()
        try:
            status, contained = executor.run_call(spec)
        except ActorExit:
            done["exit"] = True
            status, contained = P.EXITED, {}
        except SystemExit as e:  # sys.exit() on any thread ends the actor's process, with its code
            exit_on_request(ctx, spec, e)
        finally:
            ctx.set_thread_task(None)
        ctx.send(info.done(seq, status, t, time.perf_counter() - t, contained))
        if done["exit"]:
            os.eventfd_write(ctx.own_fd, 1)  # wake the reading thread to exit

    pools = {g: concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix=f"actor-{g or 'default'}")
             for g, n in groups.items()}
    try:
        while not done["exit"]:
            ctx.read_ring()
            while ctx.pending:
                seq, spec = ctx.pending.popleft()
                if not _skip_if_cancelled(ctx, seq, spec):
                    pools[_group(spec, groups)].submit(run, seq, spec)
            if ctx.exit_requested:
                break
            ctx.flush_refs()
            # Sleep on own_fd ourselves (not in wait_readable, which wakes only
            # for a message): a call that ran exit_actor() rings it too.
            if ring.prepare_sleep():
                continue
            if not done["exit"]:
                select.select([ctx.own_fd], [], [])
            try:
                os.eventfd_read(ctx.own_fd)
            except BlockingIOError:
                pass
            ring.end_sleep()
    finally:
        for pool in pools.values():  # after exit_actor(), calls not started never run
            pool.shutdown(wait=True, cancel_futures=done["exit"])


async def _serve_async(ctx, executor: Executor, groups: dict, spin: float) -> None:
    """Calls run as asyncio tasks on one loop; a semaphore per concurrency
    group bounds how many of each run at once."""
    loop = asyncio.get_running_loop()
    ring = ctx.to_worker
    wake = asyncio.Event()
    limits = {g: asyncio.Semaphore(n) for g, n in groups.items()}
    stop = loop.create_future()
    running: dict = {}  # seq -> asyncio task of each call not finished

    def readable() -> None:
        try:
            os.eventfd_read(ctx.own_fd)
        except BlockingIOError:
            pass
        wake.set()

    loop.add_reader(ctx.own_fd, readable)

    async def run(seq: int, spec) -> None:
        info = new_call_info()  # (this asyncio task's own context)
        t = time.perf_counter()
        ctx.set_async_call(spec.task_id)  # (in this call's own context)
        try:
            async with limits[_group(spec, groups)]:
                t = time.perf_counter()
                status, contained = await executor.run_call_async(spec)
        except ActorExit:
            ctx.send(info.done(seq, P.EXITED, t, time.perf_counter() - t, {}))
            if not stop.done():
                stop.set_result(None)
            return
        except SystemExit as e:
            exit_on_request(ctx, spec, e)
        except asyncio.CancelledError:  # ray.cancel() of this call: as in Ray, it ends here
            seal_error(ctx.store, return_ids(spec), _cancelled(spec))
            status, contained = P.CANCELLED, {}
        ctx.send(info.done(seq, status, t, time.perf_counter() - t, contained))

    def ended(task: asyncio.Task, seq: int, spec) -> None:
        running.pop(seq, None)
        if task.cancelled():
            # Cancelled before its first step: the CancelledError was thrown
            # into run() before its try, so run() reported nothing.
            seal_error(ctx.store, return_ids(spec), _cancelled(spec))
            ctx.send(CallInfo().done(seq, P.CANCELLED, time.perf_counter(), 0.0, {}))

    try:
        while not stop.done():
            ctx.read_ring()
            while ctx.pending:
                seq, spec = ctx.pending.popleft()
                if not _skip_if_cancelled(ctx, seq, spec):
                    task = running[seq] = loop.create_task(run(seq, spec))
                    task.add_done_callback(lambda task, seq=seq, spec=spec: ended(task, seq, spec))
            for seq in [s for s in ctx.cancelled if s in running]:  # cancel of a running call
                ctx.cancelled.discard(seq)
                running[seq].cancel()
            if ctx.exit_requested:
                break
            ctx.flush_refs()
            if not running and spin and ring.wait_readable(ctx.own_fd, spin, timeout=0):
                continue  # idle: a brief spin catches the next call without a wake-up
            if ring.prepare_sleep():
                continue  # a message came in meanwhile
            waiter = loop.create_task(wake.wait())
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            ring.end_sleep()
            wake.clear()
        if running and ctx.exit_requested:
            await asyncio.wait(list(running.values()))
    finally:
        loop.remove_reader(ctx.own_fd)
