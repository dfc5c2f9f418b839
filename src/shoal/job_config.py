"""JobConfig, Ray's per-driver settings passed as ``init(job_config=...)``.

Programs written for Ray build one as ``ray.job_config.JobConfig(...)``;
shoal applies what has a meaning on one machine (runtime_env's env_vars,
the namespace) and says, once, which other settings it ignores.
"""

from __future__ import annotations

import json
from typing import Any

#: Fields whose effect shoal lacks (a warning, once, when one is set).
UNIMPLEMENTED_FIELDS = ("jvm_options", "code_search_path", "default_actor_lifetime")


class JobConfig:
    """Settings of one driver (Ray's ``ray.job_config.JobConfig``).

    Args:
        jvm_options: Java options (ignored: shoal runs Python only).
        code_search_path: where workers load code from (ignored: shoal's
            workers import from the driver's sys.path).
        runtime_env: the job's runtime_env; its env_vars apply as
            ``init(runtime_env=...)`` does. None: none.
        metadata: free-form {str: str} kept on the config. None: {}.
        ray_namespace: the namespace of named actors, as
            ``init(namespace=...)``. None: an anonymous one.
        default_actor_lifetime: "non_detached" (the default) or "detached".
    """

    def __init__(self, jvm_options: list[str] | None = None, code_search_path: list[str] | None = None,
                 runtime_env: dict | None = None, _client_job: bool = False, metadata: dict | None = None,
                 ray_namespace: str | None = None, default_actor_lifetime: str = "non_detached",
                 _py_driver_sys_path: list[str] | None = None):
        if isinstance(code_search_path, str):  # a str would read as a list of letters
            raise TypeError("code_search_path must be a list of paths, not a str")
        self.jvm_options = list(jvm_options or [])
        self.code_search_path = list(code_search_path or [])
        self.runtime_env = None
        self.set_runtime_env(runtime_env)
        self.metadata = dict(metadata or {})
        self.ray_namespace = ray_namespace
        self.default_actor_lifetime = None
        self.set_default_actor_lifetime(default_actor_lifetime)
        self._client_job = _client_job
        self._py_driver_sys_path = list(_py_driver_sys_path or [])

    def set_metadata(self, key: str, value: str) -> None:
        """Add one metadata entry."""
        self.metadata[key] = value

    def set_runtime_env(self, runtime_env: dict | None, validate: bool = False) -> None:
        """Replace the runtime_env (None: none). validate is accepted for
        Ray's signature; shoal checks env_vars when init() applies it."""
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise TypeError(f"runtime_env must be a dict or None, not {type(runtime_env).__name__}")
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None

    def set_ray_namespace(self, ray_namespace: str) -> None:
        """Set the namespace of named actors."""
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        """"non_detached" or "detached" (ValueError otherwise)."""
        if default_actor_lifetime not in ("non_detached", "detached"):
            raise ValueError(f"default_actor_lifetime must be 'non_detached' or 'detached', "
                             f"not {default_actor_lifetime!r}")
        self.default_actor_lifetime = default_actor_lifetime

    def ignored_fields(self) -> list[str]:
        """Names of the set fields that shoal does not apply."""
        ignored = [name for name in ("jvm_options", "code_search_path") if getattr(self, name)]
        if self.default_actor_lifetime != "non_detached":
            ignored.append("default_actor_lifetime")
        return ignored

    def _to_dict(self) -> dict[str, Any]:
        return {"jvm_options": self.jvm_options, "code_search_path": self.code_search_path,
                "runtime_env": self.runtime_env, "metadata": self.metadata,
                "ray_namespace": self.ray_namespace, "default_actor_lifetime": self.default_actor_lifetime}

    @classmethod
    def from_json(cls, job_config_json: str | dict) -> "JobConfig":
        """Build one from its JSON text (or the decoded dict), as Ray's
        from_json does; keys are the constructor's arguments."""
        data = json.loads(job_config_json) if isinstance(job_config_json, str) else dict(job_config_json)
        return cls(**data)

    def __repr__(self) -> str:
        return f"JobConfig({self._to_dict()!r})"
