"""What holds memory: every object of the runtime with its size, its kind,
where its bytes are and who keeps it alive, as Ray's ``ray memory`` shows.

    memory_summary()      text: objects grouped by holder, largest first, and totals
    memory_objects()      the same as data ([ObjectMemory])
    describe_holders(rt)  one sentence naming the three largest holders
                          (for the error of a full store)

Holders: a process holding a ref (the driver, a worker, an actor), a task
not finished that takes the object as an argument, a stored object that
contains a ref to it, and a process reading it now (a live buffer or array
of it pins it in memory). Call these in the driver.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time

from shoal import objectref, serialization
from shoal.exceptions import format_bytes
from shoal.scheduler import introspect

__all__ = ["ObjectMemory", "memory_objects", "memory_summary"]

_WHERE = {"created": "being created", "sealed": "store", "deleted": "store (deleted, still read)",
          "spilled": "spilled"}


@dataclasses.dataclass(frozen=True)
class ObjectMemory:
    """One object (sizes in bytes)."""

    object_id: str
    size: int  #: data and metadata
    store_bytes: int  #: shared memory it takes (0 once spilled)
    kind: str  #: numpy, arrow, bytes, pickled, error, function (a remote function's or
    #: actor class's definition), raw (made outside the runtime)
    where: str  #: store, spilled, fallback (written to a file: it never fit), restored (read
    #: back into the store after a spill; its file is kept), being created
    references: tuple  #: ((Ray's reference type, holder), ...); empty: nothing holds it (being freed)
    call_site: str | None  #: where the driver made its first ref (recorded only when enabled)


def _runtime(rt=None):
    rt = rt if rt is not None else objectref.current()
    if rt is None or not hasattr(rt, "shell"):
        raise RuntimeError("memory_summary() is available in the driver of a running (non-local) runtime")
    return rt


def memory_objects(rt=None) -> list[ObjectMemory]:
    """Every object in the runtime's store (spilled ones too), largest first."""
    rt = _runtime(rt)
    raw = rt.store.raw
    rt.shell.sync()  # what processes said so far, and the driver's own holds and drops
    refs = introspect.references(rt.shell, os.getpid())
    with rt.shell.lock:
        by_pid = {h.pid: name for wid, name in introspect.process_names(rt.shell, os.getpid()).items()
                  if (h := rt.shell.workers.get(wid)) is not None}
    by_pid[os.getpid()] = f"driver (pid {os.getpid()})"
    slot_pids = raw.client_pids()
    sites = getattr(rt.refs, "sites", {})
    out = []
    for oid, state, flags, _npins, data, meta, block, location, slots in raw.list_objects():
        where = _WHERE.get(state, state)
        if state == "spilled" and flags & 4:
            where = "fallback"
        elif state == "sealed" and location is not None:
            where = "restored"  # back in the store, its file kept
        held = list(refs.get(oid, ()))
        if flags >> 8 == serialization.KIND_DEFINITION:
            held.append(("DEFINITION", "the runtime (remote function and actor class definitions)"))
        elif state == "created":
            held.append(("BEING_WRITTEN", "its creator (being written)"))
        for slot in slots:
            pid = slot_pids.get(slot)
            held.append(("PINNED_IN_MEMORY", f"{by_pid.get(pid, f'pid {pid}')} reading it"))
        out.append(ObjectMemory(oid.hex(), data + meta, block,
                                serialization.KIND_NAMES.get(flags >> 8, "?"), where, tuple(held),
                                sites.get(oid)))
    out.sort(key=lambda o: o.size, reverse=True)
    return out


def _holders(objects: list[ObjectMemory], in_store_only: bool) -> list[tuple[str, int, int]]:
    """[(holder, bytes, objects)], largest first; an object counts for each holder."""
    total: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for o in objects:
        if in_store_only and not o.store_bytes:
            continue
        for holder in {who for _, who in o.references} or {"nothing (being freed)"}:
            total[holder][0] += o.store_bytes if in_store_only else o.size
            total[holder][1] += 1
    return sorted(((h, b, n) for h, (b, n) in total.items()), key=lambda x: -x[1])


def describe_holders(rt) -> str:
    """'The largest holders of store memory: ...': the three largest, for
    the message of a full store."""
    top = _holders(memory_objects(rt), in_store_only=True)[:3]
    if not top:
        return ""
    parts = [f"{holder}: {format_bytes(nbytes)} in {n} object{'s' * (n != 1)}" for holder, nbytes, n in top]
    return ("The largest holders of store memory: " + "; ".join(parts)
            + ". See shoal.util.memory_summary() for every object.")


def memory_summary(*, group_by: str = "holder", sort_by: str = "size", num_entries: int | None = None,
                   stats_only: bool = False, **_ray_only) -> str:
    """The runtime's objects and who holds them, as text (Ray's
    ``ray memory`` / ``memory_summary()``).

    Args:
        group_by: "holder" (an object appears under each of its holders),
            "call_site", or "none". Ray's "NODE_ADDRESS" and "STACK_TRACE"
            mean "holder" and "call_site".
        sort_by: "size" (largest first) or "id"; Ray's "OBJECT_SIZE" too.
        num_entries: show at most this many objects per group (None: all).
        stats_only: only the totals.
    Call sites are recorded when SHOAL_RECORD_REF_CREATION_SITES=1 (or
    Ray's RAY_record_ref_creation_sites=1) is set before init().
    """
    group_by = {"NODE_ADDRESS": "holder", "STACK_TRACE": "call_site"}.get(group_by, group_by)
    sort_by = {"OBJECT_SIZE": "size", "OBJECT_ID": "id"}.get(sort_by, sort_by)
    if group_by not in ("holder", "call_site", "none") or sort_by not in ("size", "id"):
        raise ValueError(f"group_by must be 'holder', 'call_site' or 'none' and sort_by 'size' or 'id', "
                         f"not {group_by!r}, {sort_by!r}")
    rt = _runtime()
    objects = memory_objects(rt)
    if sort_by == "id":
        objects.sort(key=lambda o: o.object_id)
    lines = [f"======== Object references status: {time.strftime('%Y-%m-%d %H:%M:%S')} ========"]
    if not stats_only:
        groups: dict[str, list[ObjectMemory]] = collections.defaultdict(list)
        for o in objects:
            if group_by == "holder":
                for holder in dict.fromkeys(who for _, who in o.references) or ["nothing (being freed)"]:
                    groups[holder].append(o)
            elif group_by == "call_site":
                groups[o.call_site or "(call site not recorded)"].append(o)
            else:
                groups["all objects"].append(o)
        order = sorted(groups, key=lambda g: -sum(o.size for o in groups[g]))
        lines.append(f"Grouped by {group_by.replace('_', ' ')}, sorted by {sort_by}.")
        for g in order:
            members = groups[g]
            lines += ["", f"--- {g}: {len(members)} object{'s' * (len(members) != 1)}, "
                          f"{_short(sum(o.size for o in members))} ---"]
            lines.append(f"{'Object ID':<42} {'Size':>12}  {'Kind':<8} {'Where':<9} {'Reference type':<21} "
                         f"Call site")
            for o in members[:num_entries]:
                types = ",".join(dict.fromkeys(t for t, who in o.references if group_by != "holder" or who == g))
                lines.append(f"{o.object_id:<42} {_short(o.size):>12}  {o.kind:<8} {o.where:<9} "
                             f"{types or '-':<21} {o.call_site or '-'}")
            if num_entries is not None and len(members) > num_entries:
                lines.append(f"... and {len(members) - num_entries} more")
    lines += ["", "--- Totals ---", *_totals(rt, objects)]
    lines.append("Holders: LOCAL_REFERENCE a process holds a ref; USED_BY_PENDING_TASK an argument of a task "
                 "not finished; CAPTURED_IN_OBJECT a stored object holds a ref; PINNED_IN_MEMORY a process "
                 "reads it now (a live array or buffer: it cannot be spilled or freed).")
    return "\n".join(lines)


def _totals(rt, objects: list[ObjectMemory]) -> list[str]:
    st = rt.store.statistics()
    used = st.bytes_in_use
    lines = [
        f"Store: {_short(used)} used of {_short(st.capacity_bytes)} "
        f"({100 * used / max(1, st.capacity_bytes):.0f}%), {_short(st.bytes_pinned)} pinned by readers; "
        f"{st.num_sealed} objects sealed, {st.num_created} being created.",
        f"Spilled: {_short(st.bytes_spilled)} in {st.num_spilled} objects "
        f"({st.num_fallback} of them written straight to disk: larger than the room in the store), "
        f"{_count_files(rt)} files.",
    ]
    spiller = getattr(rt, "spiller", None)
    if spiller is not None:
        s = spiller.stats
        rate = s.bytes_written / s.seconds_writing / 1e9 if s.seconds_writing else 0.0
        lines.append(f"Spiller: {s.rounds} rounds, {s.objects_spilled} objects, {_short(s.bytes_written)} "
                     f"written at {rate:.2f} GB/s; {s.objects_kept} kept in memory (read while being written)."
                     + (f" Last error: {s.last_error}" if s.last_error else ""))
        lines.append(f"Spilling to: {', '.join(rt.spill_folders.paths)}")
    elif not rt.spilling.enabled:
        lines.append("Spilling is off (init(object_spilling_directory=None)).")
    holders = _holders(objects, in_store_only=True)[:3]
    if holders:
        lines.append("Largest holders of store memory: " + "; ".join(
            f"{h} {_short(b)}" for h, b, _ in holders))
    return lines


def _count_files(rt) -> int:
    folders = rt.spill_folders.paths if rt.spill_folders is not None else []
    n = 0
    for folder in folders:
        try:
            n += sum(1 for e in os.scandir(folder) if e.name.endswith((".obj", ".fused")))
        except OSError:
            pass
    return n


def _short(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
