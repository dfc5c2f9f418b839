"""A worker process: attach to the store and the channel, then run the tasks
the driver sends, one at a time, until told to exit or orphaned.

    driver ring --TASK--> pending --> Executor.run --> results sealed --> DONE
"""

from __future__ import annotations

import atexit
import faulthandler
import mmap
import os
import signal
import sys
import time

from shoal import objectref
from shoal._channel import Ring
from shoal.scheduler import protocol as P
from shoal.spill.files import SpillFiles
from shoal.store import ObjectStore
from shoal.worker.context import WorkerContext
from shoal.worker.execution import (
    ActorExit, CallInfo, Executor, _cancelled, exit_on_request, new_call_info, return_ids, seal_error,
)

#: Output marker: a line "\0shoal:<name>\n" tells the driver which task
#: prints the lines that follow (it is never shown).
MARKER = b"\x00shoal:"


def connect(cfg: dict) -> WorkerContext:
    """Map the store and the channel described by the fork server."""
    for key in ("store_fd", "channel_fd", "own_fd", "room_fd", "driver_fd"):
        os.set_inheritable(cfg[key], False)  # a program the task starts must not get them
    store = ObjectStore.attach(cfg["store_fd"])
    store.raw.set_wait_spin(cfg.get("spin", 0.0))
    spill = cfg.get("spill")
    if spill:  # spilled objects are read, and objects too large written, here too
        store.configure_spilling(SpillFiles(spill["folders"], spill["map_bytes"]))
    os.close(cfg["store_fd"]) if cfg.get("close_store_fd") else None
    size = cfg["channel_size"]
    mem = mmap.mmap(cfg["channel_fd"], size)
    os.close(cfg["channel_fd"])
    to_worker = Ring(mem, 0)
    to_driver = Ring(mem, cfg["ring_offset"])
    ctx = WorkerContext(store, cfg["wid"], to_worker, to_driver, cfg["own_fd"], cfg["driver_fd"], cfg["session"],
                        room_fd=cfg["room_fd"])
    ctx.namespace = cfg.get("namespace", "")
    ctx.node_id = cfg.get("node_id", "")
    os.environ.update(cfg.get("env") or {})  # init(runtime_env={"env_vars": ...})
    if cfg.get("gpu_ids"):  # an actor that holds GPUs: before any CUDA library starts
        ctx.gpu_ids = list(cfg["gpu_ids"])
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ctx.gpu_ids))
    return ctx


def serve(ctx: WorkerContext, spin: float, run=None, markers: bool = True) -> None:
    """Run what the driver sends, one at a time, until told to exit.

    run: spec -> (status, contained); a worker's tasks by default (an
    actor's calls otherwise). markers: write an output marker when the task
    name changes (an actor writes its class name once instead)."""
    if run is None:
        run = Executor(ctx, os.getpid()).run
    ring = ctx.to_worker
    last_name = None
    calls: dict[bytes, int] = {}  # runs per function, for max_calls
    stdout, stderr = sys.stdout, sys.stderr
    clock = time.perf_counter
    while True:
        if not ctx.pending:
            ctx.read_ring()
            if ctx.pending:
                continue
            if ctx.exit_requested:
                return
            ctx.flush_refs()
            ring.wait_readable(ctx.own_fd, spin)
            continue
        seq, spec = ctx.pending.popleft()
        if seq in ctx.cancelled:
            ctx.cancelled.discard(seq)
            seal_error(ctx.store, return_ids(spec), _cancelled(spec))
            ctx.send(CallInfo().done(seq, P.CANCELLED, clock(), 0.0, {}))
            continue
        if markers and spec.name != last_name:
            last_name = spec.name
            marker = MARKER + spec.name.encode(errors="replace") + b"\n"
            os.write(1, marker)
            os.write(2, marker)
        ctx.started(seq, spec.name, spec.task_id)
        if ctx.cancel_requested():  # cancelled after it was sent, before it started
            ctx.current_seq = 0
            seal_error(ctx.store, return_ids(spec), _cancelled(spec))
            ctx.send(CallInfo().done(seq, P.CANCELLED, clock(), 0.0, {}))
            continue
        info = new_call_info()
        t = clock()
        try:
            status, contained = run(spec)
        except ActorExit:  # exit_actor() or __ray_terminate__: this call is done, then exit
            ctx.send(info.done(seq, P.EXITED, t, clock() - t, {}))
            return
        except SystemExit as e:  # sys.exit() in the task: the process exits with its code
            exit_on_request(ctx, spec, e)
        duration = clock() - t
        ctx.task_ended()
        ctx.current_seq = 0
        if stdout is not None:
            stdout.flush()
        if stderr is not None:
            stderr.flush()
        ctx.cancelled.discard(seq)  # a cancel that came too late to matter
        ctx.send(info.done(seq, status, t, duration, contained))
        limit = getattr(spec, "max_calls", 0)
        if limit:
            fid = spec.function_id
            calls[fid] = calls.get(fid, 0) + 1
            if calls[fid] >= limit:
                # max_calls reached: this process exits and the pool starts
                # another. Clear the running mark first: a task the driver
                # sends meanwhile was never started here (not a crash).
                ring.user_word = 0
                return


def run(cfg: dict) -> None:
    """Entry point of a worker (called in the child of the fork server).

    The process ends with os._exit, so the atexit handlers that tasks or
    the actor registered are run here when it ends on purpose (exit_actor(),
    __ray_terminate__, its last handle gone, an idle worker stopped), as
    Ray's workers do; not when it is killed."""
    atexit._clear()  # the fork server's handlers are not this worker's
    ctx = connect(cfg)
    objectref.set_current(ctx)

    def on_sigint(signum, frame):
        ctx.interrupt()  # raises TaskCancelled in the task, now or once it is safe

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    # A crash in native code (SIGSEGV, SIGBUS, SIGFPE, SIGABRT, SIGILL)
    # prints the Python stack of every thread to the stderr pipe: the driver
    # shows it with the task's prefix and quotes it in the error.
    faulthandler.enable(all_threads=True)
    # `shoal stack`: SIGUSR2 prints every thread's stack to stderr, where the
    # driver collects it; registered before READY, the first time the driver may send it.
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    ctx.send((P.READY, os.getpid()))
    if cfg.get("actor"):
        from shoal.worker.actor_loop import serve_actor

        ctx.is_actor = True
        serve_actor(ctx, cfg.get("spin", 0.0))
    else:
        serve(ctx, cfg.get("spin", 0.0))
    atexit._run_exitfuncs()  # (prints what a handler raises, and goes on)
    ctx.flush_refs()
