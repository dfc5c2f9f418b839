"""The `shoal` command: see inside a running runtime, as `ray status`, `ray
memory`, `ray list`, `ray summary`, `ray timeline` and `ray stack` do.

    shoal status                      resources, workers, tasks, actors, the store
    shoal memory                      objects by holder (memory_summary())
    shoal list tasks|actors|workers|objects [--filter state=RUNNING] [--limit N] [--format json]
    shoal summary tasks               tasks by function and state
    shoal timeline -o trace.json      Chrome trace of the tasks kept (chrome://tracing, Perfetto)
    shoal stack                       Python stacks of the driver and every worker
    shoal dashboard                   a live page for a running runtime

It finds runtimes through their control sockets (shoal.control); with
several it lists them and wants --pid. Arguments are parsed by argparse
(the standard library's: the command needs nothing beyond shoal to run);
tables are drawn by rich when it is installed (`pip install "shoal[cli]"`),
else each row is printed as one line of key=value pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from shoal.control import endpoint

#: Columns of each list in table format (all keys with --detail or --format json).
COLUMNS = {
    "tasks": ["task_id", "name", "state", "type", "worker_pid", "attempt_number", "duration_s", "actor_id"],
    "actors": ["actor_id", "class_name", "name", "state", "pid", "num_restarts", "pending_calls"],
    "workers": ["pid", "worker_type", "state", "current_task", "running_s", "cpu_percent", "rss_bytes", "actor_id"],
    "objects": ["object_id", "size", "kind", "where", "reference_type", "holders"],
}

EXIT_NO_RUNTIME = 1
EXIT_CHOOSE = 2


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (sys.argv[1:] by default); returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return EXIT_CHOOSE
    try:
        info = endpoint.choose(args.pid)
    except endpoint.SeveralRuntimesError as e:
        print(f"shoal: {e}:", file=sys.stderr)
        _table(["pid", "session", "socket"], [{"pid": r.pid, "session": r.session, "socket": r.path}
                                              for r in e.found], title="running runtimes", file=sys.stderr)
        return EXIT_CHOOSE
    except endpoint.NoRuntimeError as e:
        print(f"shoal: {e}", file=sys.stderr)
        return EXIT_NO_RUNTIME
    try:
        if args.command == "dashboard":
            from shoal.dashboard.server import serve_for_cli

            return serve_for_cli(info, args.host, args.port, args.open)
        with endpoint.Client(info) as client:
            return COMMANDS[args.command](client, args)
    except endpoint.ControlError as e:
        print(f"shoal: {e}", file=sys.stderr)
        return EXIT_NO_RUNTIME
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--pid", type=int, help="the driver pid of the runtime to ask (when several run)")
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p = argparse.ArgumentParser(prog="shoal", description="See inside a running shoal runtime.", parents=[common])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("status", parents=[common, fmt], help="resources, workers, tasks, actors and the store")
    m = sub.add_parser("memory", parents=[common], help="objects by holder and size (memory_summary())")
    m.add_argument("--group-by", default="holder", choices=("holder", "call_site", "none"))
    m.add_argument("--sort-by", default="size", choices=("size", "id"))
    m.add_argument("--num-entries", type=int, default=None, help="objects per group at most")
    m.add_argument("--stats-only", action="store_true", help="only the totals")
    lst = sub.add_parser("list", parents=[common, fmt], help="tasks, actors, workers or objects, as `ray list`")
    lst.add_argument("resource", choices=sorted(COLUMNS))
    lst.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                     help="keep rows whose KEY is (=) or is not (!=) VALUE; repeat to combine")
    lst.add_argument("--limit", type=int, default=100, help="rows at most (default 100)")
    lst.add_argument("--detail", action="store_true", help="every field, not only the main columns")
    summ = sub.add_parser("summary", parents=[common, fmt], help="tasks by function and state")
    summ.add_argument("resource", choices=("tasks",))
    tl = sub.add_parser("timeline", parents=[common], help="Chrome trace of recent tasks")
    tl.add_argument("-o", "--output", help="file to write (default: shoal-timeline-<pid>-<time>.json)")
    tl.add_argument("--limit", type=int, default=None, help="the last N tasks only")
    sub.add_parser("stack", parents=[common], help="Python stacks of the driver and every worker")
    d = sub.add_parser("dashboard", parents=[common], help="serve the live page for a running runtime")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=8265, help="port (default 8265; a taken one picks a free one)")
    d.add_argument("--open", action="store_true", help="open the page in a web browser")
    return p


# -- the commands --------------------------------------------------------------------


def _status(client: endpoint.Client, args) -> int:
    s = client.ask("status")
    if args.format == "json":
        _json(s)
        return 0
    store = s["store"]
    used = store["used_bytes"]
    cap = store["capacity_bytes"]
    workers = s["workers"]
    rows = [
        ("runtime", f"driver pid {s['pid']}, session {s['session']}, up {_duration(s['uptime_s'])}"),
        ("resources", ", ".join(_resource(k, v) for k, v in s["resources"].items())),
        ("workers", f"{workers['total']}: " + _counts({**workers["by_state"], **(
            {"ACTOR": workers["actor_processes"]} if workers["actor_processes"] else {})})),
        ("tasks", _counts(s["tasks"]) or "none yet"),
        ("actors", _counts(s["actors"]) or "none"),
        ("store", f"{_size(used)} of {_size(cap)} used ({100 * used / max(cap, 1):.0f}%), "
                  f"{store['objects']} objects, {_size(store['pinned_bytes'])} pinned by readers"),
        ("spilled", f"{_size(store['spilled_bytes'])} in {store['spilled_objects']} objects"
                    + ("" if s["spilling"]["enabled"] else " (spilling is off)")),
        ("task events", f"{s['task_events']['kept']} ended tasks kept (at most {s['task_events']['capacity']})"),
    ]
    _table(["", ""], [dict(zip(("", " "), r)) for r in rows], keys=["", " "], header=False,
           title=f"shoal runtime {s['pid']}")
    return 0


def _memory(client: endpoint.Client, args) -> int:
    print(client.ask("memory", group_by=args.group_by, sort_by=args.sort_by, num_entries=args.num_entries,
                     stats_only=args.stats_only))
    return 0


def _list(client: endpoint.Client, args) -> int:
    rows = client.ask(args.resource, filters=[_filter(f) for f in args.filter], limit=args.limit)
    if args.format == "json":
        _json(rows)
        return 0
    if args.resource == "objects":
        for r in rows:
            r["holders"] = "; ".join(dict.fromkeys(who for _, who in r["references"])) or "-"
            r["size"] = _size(r["size"])
    if args.resource == "workers":
        for r in rows:
            r["rss_bytes"] = _size(r["rss_bytes"]) if r["rss_bytes"] is not None else None
    columns = sorted({k for r in rows for k in r}) if args.detail else COLUMNS[args.resource]
    _table(columns, rows, title=f"{len(rows)} {args.resource}" + (f" (--limit {args.limit})"
                                                                  if len(rows) >= args.limit else ""))
    return 0


def _summary(client: endpoint.Client, args) -> int:
    summary = client.ask("summary_tasks")
    if args.format == "json":
        _json(summary)
        return 0
    states = sorted({s for counts in summary.values() for s in counts})
    rows = [{"func_or_class_name": name, "total": sum(counts.values()), **counts} for name, counts in summary.items()]
    _table(["func_or_class_name", "total", *states], rows, title="tasks by function and state")
    return 0


def _timeline(client: endpoint.Client, args) -> int:
    events = client.ask("timeline", limit=args.limit)
    path = args.output or f"shoal-timeline-{client.info.pid}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    with open(path, "w") as f:
        json.dump(events, f)
    tasks = sum(1 for e in events if e.get("ph") == "X")
    print(f"wrote {tasks} tasks to {path}: load it in chrome://tracing or https://ui.perfetto.dev")
    return 0


def _stack(client: endpoint.Client, args) -> int:
    for proc in client.ask("stack"):
        print(f"=== {proc['process']} ===")
        print(proc["stack"])
        print()
    return 0


COMMANDS = {"status": _status, "memory": _memory, "list": _list, "summary": _summary, "timeline": _timeline,
            "stack": _stack}


# -- output ------------------------------------------------------------------------------


def _filter(text: str) -> list:
    for op in ("!=", "="):
        key, sep, value = text.partition(op)
        if sep and key:
            return [key.strip(), op, value.strip()]
    raise SystemExit(f"shoal: --filter {text!r} must be KEY=VALUE or KEY!=VALUE")


def _table(columns: list[str], rows: list[dict], *, keys: list[str] | None = None, header: bool = True,
           title: str | None = None, file=None) -> None:
    """Rows as a table (rich), or as key=value lines without rich."""
    keys = keys or columns
    file = file or sys.stdout
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        if title:
            print(f"# {title} (install shoal[cli] for tables)", file=file)
        for r in rows:
            print("  ".join(f"{k or 'value'}={_cell(r.get(k))}" for k in keys), file=file)
        return
    table = Table(title=title, show_header=header, header_style="bold", title_justify="left")
    for c in columns:
        table.add_column(c.upper(), overflow="fold")
    for r in rows:
        table.add_row(*(_cell(r.get(k)) for k in keys))
    # Not a terminal (a pipe, a file): wide enough that rows are not folded.
    Console(file=file, width=None if file.isatty() else 250).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    print()


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _resource(name: str, amounts: dict) -> str:
    if name in ("memory", "object_store_memory"):
        return f"{name} {_size(int(amounts['used']))}/{_size(int(amounts['total']))}"
    return f"{name} {_cell(amounts['used'])}/{_cell(amounts['total'])}"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m}m {s}s" if h else f"{m}m {s}s" if m else f"{seconds:.1f}s"


if __name__ == "__main__":
    sys.exit(main())
