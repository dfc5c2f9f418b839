"""joblib on shoal: ``register_shoal()``, then

    with joblib.parallel_backend("shoal"):       # or parallel_config(backend="shoal")
        Parallel(n_jobs=-1)(delayed(f)(x) for x in xs)

Each batch of calls joblib dispatches runs as a shoal task. Numpy arrays
of at least max_nbytes (joblib's setting, 1 MB by default) in the calls
are put in the object store once per Parallel call, however many calls
take them, and read zero-copy (read-only, as joblib's memmaps are) by the
workers. scikit-learn's ``n_jobs`` runs on it unchanged.

Ray's name works too: ``register_ray()`` registers the same backend as
"ray", for programs that ``import shoal as ray``.
"""

from __future__ import annotations

__all__ = ["register_ray", "register_shoal"]


def register_shoal() -> None:
    """Register the backend as joblib's "shoal" (needs joblib:
    pip install "shoal[joblib]")."""
    _register("shoal")


def register_ray() -> None:
    """Register the backend under Ray's name, "ray" (as ray.util.joblib.register_ray)."""
    _register("ray")


def _register(name: str) -> None:
    try:
        from joblib.parallel import register_parallel_backend
    except ImportError:
        raise ImportError('the joblib backend needs joblib: pip install "shoal[joblib]"') from None
    from shoal.util.joblib.backend import ShoalBackend

    register_parallel_backend(name, ShoalBackend)
