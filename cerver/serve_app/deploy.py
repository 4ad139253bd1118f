"""The application builder for ``serve deploy serve_config.yaml`` / ``serve run``.

``import_path: cerver.serve_app.deploy:app_builder``. Settings come from the ``CERVER_*``
environment of the process that builds the app (on a cluster: the environment ``ray start
--head`` was given, plus the application's ``runtime_env.env_vars``), then from ``args``,
whose keys are ``Settings`` field names (``database_url``, ``home``, ``ray_namespace``, ...)
plus ``num_replicas`` (an integer, or ``"auto"`` for Serve autoscaling). Replica counts and
autoscaling may equally be set per deployment (``cerver-ingress``) in the config file, which
wins over ``args``.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from cerver.config import ConfigError, Settings, prepare_home
from cerver.serve_app.app import Ingress

DEPLOY_ARGS = ("num_replicas",)


def settings_from(args: dict[str, Any]) -> Settings:
    """``Settings.from_env()`` overridden by the ``args`` that name settings fields."""
    unknown = set(args) - set(Settings.model_fields) - set(DEPLOY_ARGS)
    if unknown:
        raise ConfigError(
            f"unknown serve_config args {sorted(unknown)}; valid: Settings fields "
            f"({', '.join(sorted(Settings.model_fields))}) and {', '.join(DEPLOY_ARGS)}"
        )
    base = Settings.from_env().model_dump()
    base.update({key: value for key, value in args.items() if key in Settings.model_fields})
    return Settings.model_validate(base)


def app_builder(args: dict[str, Any]) -> serve.Application:
    settings = settings_from(args)
    prepare_home(settings)  # the SQLite default keeps its file there
    deployment: Any = Ingress
    if "num_replicas" in args:
        deployment = deployment.options(num_replicas=args["num_replicas"])
    app: serve.Application = deployment.bind(settings)
    return app
