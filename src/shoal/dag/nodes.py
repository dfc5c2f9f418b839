"""The nodes of a .bind() DAG and how one execute() submits them.

execute() walks the DAG from the node it is called on: each node is
resolved once per execute() (a node two others depend on runs once, and
an actor node makes one actor shared by its methods' nodes), its bound
arguments with nodes replaced by what those resolved to. A node at the top
level of the arguments becomes a ref its task waits for and receives as a
value; one nested in a list or dict stays a ref, as refs do in .remote().
"""

from __future__ import annotations

from typing import Any

_MISSING = object()


class DAGNode:
    """A node of a DAG: a call bound to its arguments, run by execute()."""

    def __init__(self, args: tuple = (), kwargs: dict | None = None, options: dict | None = None):
        self._bound_args = tuple(args)
        self._bound_kwargs = dict(kwargs or {})
        self._bound_options = dict(options or {})

    # Ray's accessors, for code that walks a DAG.
    def get_args(self) -> tuple:
        return self._bound_args

    def get_kwargs(self) -> dict:
        return dict(self._bound_kwargs)

    def get_options(self) -> dict:
        return dict(self._bound_options)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Submit the DAG that ends here with these inputs (what InputNode
        stands for); returns what this node resolves to: an ObjectRef for
        a function or method node, an actor handle for an actor node, a
        list of refs for a MultiOutputNode. Does not wait for results."""
        return self._resolve({}, _Inputs(args, kwargs))

    def experimental_compile(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "compiled graphs (experimental_compile) are not implemented in shoal: call execute(), which "
            "submits the DAG's nodes as tasks")

    def _resolve(self, done: dict, inputs: "_Inputs") -> Any:
        key = id(self)
        if key not in done:
            args = tuple(_substitute(a, done, inputs) for a in self._bound_args)
            kwargs = {k: _substitute(v, done, inputs) for k, v in self._bound_kwargs.items()}
            done[key] = self._run(args, kwargs, done, inputs)
        return done[key]

    def _run(self, args: tuple, kwargs: dict, done: dict, inputs: "_Inputs") -> Any:
        raise NotImplementedError


def _substitute(value: Any, done: dict, inputs: "_Inputs") -> Any:
    """value with every DAGNode in it (at the top, or in lists, tuples and
    dicts) replaced by what it resolves to."""
    if isinstance(value, DAGNode):
        return value._resolve(done, inputs)
    t = type(value)
    if t is list:
        return [_substitute(v, done, inputs) for v in value]
    if t is tuple:
        return tuple(_substitute(v, done, inputs) for v in value)
    if t is dict:
        return {k: _substitute(v, done, inputs) for k, v in value.items()}
    return value


class _Inputs:
    """execute()'s arguments, as InputNode and its attributes read them."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple, kwargs: dict):
        self.args = args
        self.kwargs = kwargs

    def single(self) -> Any:
        """The one input, when execute() got exactly one positional argument."""
        if len(self.args) == 1 and not self.kwargs:
            return self.args[0]
        return _MISSING


class FunctionNode(DAGNode):
    """A remote function bound to its arguments (``f.bind(...)``)."""

    def __init__(self, remote_function: Any, args: tuple, kwargs: dict, options: dict | None = None):
        super().__init__(args, kwargs, options)
        self._body = remote_function

    def _run(self, args: tuple, kwargs: dict, done: dict, inputs: _Inputs) -> Any:
        fn = self._body.options(**self._bound_options) if self._bound_options else self._body
        return fn.remote(*args, **kwargs)

    def options(self, **options: Any) -> "FunctionNode":
        return FunctionNode(self._body, self._bound_args, self._bound_kwargs, {**self._bound_options, **options})

    def __repr__(self) -> str:
        return f"FunctionNode({self._body!r})"


class ClassNode(DAGNode):
    """An actor class bound to its constructor's arguments
    (``Actor.bind(...)``): each execute() starts a new actor, as in Ray;
    ``node.method.bind(...)`` calls a method on it."""

    def __init__(self, actor_class: Any, args: tuple, kwargs: dict, options: dict | None = None):
        super().__init__(args, kwargs, options)
        self._body = actor_class

    def _run(self, args: tuple, kwargs: dict, done: dict, inputs: _Inputs) -> Any:
        cls = self._body.options(**self._bound_options) if self._bound_options else self._body
        return cls.remote(*args, **kwargs)

    def __getattr__(self, name: str) -> "_UnboundMethod":
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _UnboundMethod(self, name)

    def __repr__(self) -> str:
        return f"ClassNode({self._body!r})"


class _UnboundMethod:
    """``actor_node.method``: .bind() makes a ClassMethodNode."""

    def __init__(self, actor_node: ClassNode, name: str, options: dict | None = None):
        self._actor_node = actor_node
        self._name = name
        self._options = dict(options or {})

    def bind(self, *args: Any, **kwargs: Any) -> "ClassMethodNode":
        return ClassMethodNode(self._actor_node, self._name, args, kwargs, self._options)

    def options(self, **options: Any) -> "_UnboundMethod":
        return _UnboundMethod(self._actor_node, self._name, {**self._options, **options})


class ClassMethodNode(DAGNode):
    """A method call bound to its arguments, on an actor node (the actor
    that node starts in the same execute()) or on an existing actor
    (``handle.method.bind(...)``)."""

    def __init__(self, target: Any, method_name: str, args: tuple, kwargs: dict, options: dict | None = None):
        super().__init__(args, kwargs, options)
        self._target = target  # a ClassNode, or an ActorMethod of a live handle
        self._method_name = method_name

    def _run(self, args: tuple, kwargs: dict, done: dict, inputs: _Inputs) -> Any:
        if isinstance(self._target, ClassNode):
            method = getattr(self._target._resolve(done, inputs), self._method_name)
        else:
            method = self._target
        if self._bound_options:
            method = method.options(**self._bound_options)
        return method.remote(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ClassMethodNode({self._method_name})"


class InputNode(DAGNode):
    """What execute() is given: with one positional argument, that value;
    ``inp[i]`` / ``inp["k"]`` / ``inp.k`` pick a positional or keyword
    argument (or, with a single argument, index it or read its attribute),
    as in Ray. Usable as a context manager (``with InputNode() as inp:``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__((), {}, {})

    def __enter__(self) -> "InputNode":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def __getitem__(self, key: Any) -> "InputAttributeNode":
        return InputAttributeNode(self, key, "__getitem__")

    def __getattr__(self, name: str) -> "InputAttributeNode":
        if name.startswith("__") and name.endswith("__") or name.startswith("_bound"):
            raise AttributeError(name)
        return InputAttributeNode(self, name, "__getattr__")

    def _run(self, args: tuple, kwargs: dict, done: dict, inputs: _Inputs) -> Any:
        value = inputs.single()
        if value is _MISSING:
            raise ValueError(
                f"the DAG uses its InputNode as one value, but execute() got {len(inputs.args)} positional and "
                f"{len(inputs.kwargs)} keyword argument(s): pass one argument, or use inp[i] / inp.name to pick one")
        return value

    def __repr__(self) -> str:
        return "InputNode()"


class InputAttributeNode(DAGNode):
    """One part of execute()'s input: ``inp[key]`` or ``inp.key``."""

    def __init__(self, input_node: InputNode, key: Any, accessor: str):
        super().__init__((), {}, {})
        self._input_node = input_node
        self._key = key
        self._accessor = accessor

    def _run(self, args: tuple, kwargs: dict, done: dict, inputs: _Inputs) -> Any:
        value = inputs.single()
        key = self._key
        if value is not _MISSING:  # one input: index it, or read its attribute
            return value[key] if self._accessor == "__getitem__" else getattr(value, key)
        try:
            return inputs.args[key] if isinstance(key, int) else inputs.kwargs[key]
        except (IndexError, KeyError):
            raise ValueError(
                f"the DAG reads input {key!r}, but execute() got {len(inputs.args)} positional argument(s) and "
                f"the keywords {sorted(inputs.kwargs)}") from None

    def __getitem__(self, key: Any) -> "_InputPath":
        return _InputPath(self, key, "__getitem__")

    def __repr__(self) -> str:
        return f"InputAttributeNode({self._key!r})"


class _InputPath(DAGNode):
    """A further index into one input (``inp.x[0]``)."""

    def __init__(self, parent: DAGNode, key: Any, accessor: str):
        super().__init__((parent,), {}, {})
        self._key = key
        self._accessor = accessor

    def _run(self, args: tuple, kwargs: dict, done: dict, inputs: _Inputs) -> Any:
        return args[0][self._key] if self._accessor == "__getitem__" else getattr(args[0], self._key)


class MultiOutputNode(DAGNode):
    """Several nodes as one output: execute() returns a list of their refs."""

    def __init__(self, outputs: list, options: dict | None = None):
        if not isinstance(outputs, (list, tuple)):
            raise TypeError(f"MultiOutputNode takes a list of nodes, not {type(outputs).__name__}")
        super().__init__(tuple(outputs), {}, options)

    def _run(self, args: tuple, kwargs: dict, done: dict, inputs: _Inputs) -> Any:
        return list(args)

    def __repr__(self) -> str:
        return f"MultiOutputNode({len(self._bound_args)} outputs)"
