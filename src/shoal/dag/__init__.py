"""DAGs built with ``.bind()``, as Ray's ray.dag: declare once, execute many
times with different inputs.

    with InputNode() as size:
        x = create_matrix.bind(size)
        y = create_matrix.bind(size)
        dag = multiply_matrices.bind(x, y)
    ray.get(dag.execute([1000, 1000]))        # an ObjectRef, as f.remote() returns

``f.bind(...)``, ``Actor.bind(...)`` (a new actor each execute(), as in Ray),
``actor_node.method.bind(...)`` and ``handle.method.bind(...)`` (an existing
actor) make nodes; ``InputNode`` stands for execute()'s arguments
(``inp[0]``, ``inp.x``, ``inp["k"]`` pick one of several); ``MultiOutputNode``
returns a list of refs. Each execute() submits every node once, as tasks
whose arguments are the refs of the nodes they depend on.

Ray 2.60 deprecates plain execute() in favour of compiled graphs;
experimental_compile() is not implemented here.
"""

from shoal.dag.nodes import (
    ClassMethodNode, ClassNode, DAGNode, FunctionNode, InputAttributeNode, InputNode, MultiOutputNode,
)

__all__ = [
    "ClassMethodNode", "ClassNode", "DAGNode", "FunctionNode", "InputAttributeNode", "InputNode", "MultiOutputNode",
]
