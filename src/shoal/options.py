"""Options of remote functions and actors, with Ray's names and defaults.

Options shoal implements are validated and compiled once (per decorator or
``.options()`` call) into what submission needs. Ray options that make no
difference on one machine (scheduling strategies, placement hints) are
accepted silently; those shoal does not implement are accepted with a
warning, once per process. Unknown names are a ValueError, as in Ray.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from shoal import placement, words
from shoal.scheduler import protocol as P
from shoal.scheduler.state import make_shape, shape_amounts

TASK_DEFAULTS = {
    "num_cpus": 1,
    "num_gpus": 0,
    "resources": None,
    "memory": None,
    "num_returns": None,  # 1, or "streaming" for generator functions
    "max_retries": 3,
    "retry_exceptions": False,
    "name": None,
    "runtime_env": None,
    "max_calls": None,  # 0: unlimited; None: 1 for GPU tasks, else unlimited (as Ray)
}

ACTOR_DEFAULTS = {
    "num_cpus": None,  # 1 to schedule, 0 while alive (as Ray)
    "num_gpus": 0,
    "resources": None,
    "memory": None,
    "name": None,
    "namespace": None,
    "runtime_env": None,
    "lifetime": None,
    "get_if_exists": False,
    "max_restarts": 0,
    "max_task_retries": 0,
    "max_concurrency": None,
    "max_pending_calls": -1,
    "concurrency_groups": None,  # {name: max concurrent calls}
}

#: Ray options that change nothing on a single machine, and the placement
#: options (scheduling_strategy, placement_group...: see placement.py).
SILENT = {
    "scheduling_strategy", "placement_group", "placement_group_bundle_index",
    "placement_group_capture_child_tasks", "label_selector", "fallback_strategy", "_labels",
    "enable_task_events", "_metadata", "accelerator_type", "object_store_memory",
    "_generator_backpressure_num_objects", "concurrency_group",
}

#: Ray options shoal accepts but does not implement (a warning says so).
UNIMPLEMENTED_TASK: set = set()
UNIMPLEMENTED_ACTOR = {"allow_out_of_order_execution", "_max_pending_calls"}

_warned: set[str] = set()


def warn_once(key: str, text: str) -> None:
    """A UserWarning, the first time `key` comes up in this process."""
    if key not in _warned:
        _warned.add(key)
        words.warn(text, UserWarning)


def _check_number(name: str, value: Any, minimum: float = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"option {name} must be a number >= {minimum}, not {value!r}")


def _check_resources(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"option resources must be a dict of name -> amount, not {value!r}")
    for k, v in value.items():
        if not isinstance(k, str):
            raise ValueError(f"resource names must be str, not {k!r}")
        if k in ("CPU", "GPU"):
            raise ValueError(f"use num_{k.lower()}s=..., not resources={{'{k}': ...}}")
        _check_number(f"resources[{k!r}]", v)
    return dict(value)


def env_vars(runtime_env: Any, where: str) -> dict[str, str]:
    """The environment variables of a runtime_env ({} for None). Only
    env_vars is implemented on one machine; other fields (pip, conda,
    working_dir, ...) warn once and are ignored."""
    if runtime_env is None:
        return {}
    if not isinstance(runtime_env, dict):
        raise TypeError(f"runtime_env must be a dict, not {type(runtime_env).__name__}")
    for key in runtime_env:
        if key != "env_vars":
            warn_once(f"runtime_env:{key}", f"shoal implements only env_vars of runtime_env: {key} "
                                            f"(in {where}) is ignored")
    env = runtime_env.get("env_vars") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise TypeError(f"runtime_env['env_vars'] must be a dict of str to str, not {env!r}")
    return dict(env)


def validate(options: dict, kind: str) -> dict:
    """Check option names and values; returns them merged with defaults'
    keys only for those given (the caller merges with its defaults)."""
    known = TASK_DEFAULTS if kind == "task" else ACTOR_DEFAULTS
    unimplemented = UNIMPLEMENTED_TASK if kind == "task" else UNIMPLEMENTED_ACTOR
    for key, value in options.items():
        if key in known:
            continue
        if key in SILENT:
            continue
        if key in unimplemented:
            warn_once(f"{kind}:{key}", f"shoal does not implement the {kind} option {key}; it is ignored")
            continue
        raise ValueError(f"invalid option keyword {key!r} for {'remote functions' if kind == 'task' else 'actors'}")
    if options.get("num_cpus") is not None:
        _check_number("num_cpus", options["num_cpus"])
    if options.get("num_gpus") is not None:
        _check_number("num_gpus", options["num_gpus"])
        g = options["num_gpus"]
        if g > 1 and g != int(g):  # as Ray: a share of one device, or whole devices
            raise ValueError(f"num_gpus must be at most 1 or a whole number, not {g!r}")
    if options.get("memory") is not None:
        _check_number("memory", options["memory"])
    _check_resources(options.get("resources"))
    if "max_retries" in options:
        mr = options["max_retries"]
        if isinstance(mr, bool) or not isinstance(mr, int) or mr < -1:
            raise ValueError(f"max_retries must be an int >= -1 (-1: retry forever), not {mr!r}")
    if options.get("max_calls") is not None:
        mc = options["max_calls"]
        if isinstance(mc, bool) or not isinstance(mc, int) or mc < 0:
            raise ValueError(f"max_calls must be an int >= 0 (0: no limit), not {mc!r}")
    if "num_returns" in options:
        n = options["num_returns"]
        if n not in (None, "streaming", "dynamic") and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"num_returns must be an int >= 0, 'streaming' or 'dynamic', not {n!r}")
    if "retry_exceptions" in options:
        rule = options["retry_exceptions"]
        if not isinstance(rule, bool):
            if not isinstance(rule, (list, tuple)) or not all(
                    isinstance(t, type) and issubclass(t, BaseException) for t in rule):
                raise ValueError("retry_exceptions must be a bool or a list of exception types")
    groups = options.get("concurrency_groups")
    if groups is not None and (not isinstance(groups, dict) or not all(
            isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for k, v in groups.items())):
        raise ValueError(f"concurrency_groups must be a dict of name -> int >= 1, not {groups!r}")
    if options.get("name") is not None and not isinstance(options["name"], str):
        raise ValueError(f"option name must be a str, not {options['name']!r}")
    if options.get("name") == "" and kind != "task":
        raise ValueError("an actor name cannot be an empty string (leave name out for an unnamed actor)")
    return options


class TaskOptions:
    """Compiled options of a remote function, as submission uses them."""

    __slots__ = ("options", "shape", "num_returns", "max_retries", "retry_exceptions", "name", "assigned", "env",
                 "max_calls", "placement")

    def __init__(self, options: dict, default_name: str, is_generator: bool):
        opts = {**TASK_DEFAULTS, **options}
        self.options = options
        res = _check_resources(opts["resources"])
        shape_spec = {"CPU": opts["num_cpus"], "GPU": opts["num_gpus"], **res}
        if opts.get("memory"):
            shape_spec["memory"] = opts["memory"]
        self.shape = make_shape(shape_spec)
        n = opts["num_returns"]
        if n is None:
            n = "streaming" if is_generator else 1
        if n in ("streaming", "dynamic") and not is_generator:  # as Ray 2.60, when it is declared
            raise ValueError(f"num_returns={n!r} needs a generator function (one that uses yield); "
                             f"{default_name} is not one")
        # "dynamic" is deprecated in Ray 2.60 but still accepted: a ref to a
        # DynamicObjectRefGenerator once the generator has ended.
        self.num_returns = {"streaming": P.STREAMING, "dynamic": P.DYNAMIC}.get(n, n)
        self.max_retries = opts["max_retries"]
        rule = opts["retry_exceptions"]
        self.retry_exceptions = rule if isinstance(rule, bool) else cloudpickle.dumps(tuple(rule))
        self.name = opts["name"] or default_name
        self.assigned = shape_amounts(self.shape)  # what get_assigned_resources() reports
        self.env = env_vars(opts["runtime_env"], f"the options of {self.name}") or None
        mc = opts["max_calls"]
        # A GPU task's worker exits after it by default, as in Ray: CUDA keeps
        # the device it started on for the life of a process.
        self.max_calls = (1 if opts["num_gpus"] else 0) if mc is None else mc
        self.placement = placement.resolve(options)  # None: as its parent's capturing group, if any


def loads_exception_types(data: bytes) -> tuple:
    return tuple(pickle.loads(data))
