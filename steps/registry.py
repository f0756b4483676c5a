"""The MLflow model registry: versions, aliases and their tags. Aliases only, never stages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from steps.runs import client


def aliased_version(name: str, alias: str) -> ModelVersion | None:
    """The version `alias` points at, or None if the model or the alias does not exist.

    The model is looked up by search first: with basic auth, a non-admin user asking for an alias
    of a model that does not exist gets 403, not 404.
    """
    found = client().search_registered_models(f"name = '{name}'", max_results=1)
    if not found or alias not in found[0].aliases:
        return None
    return client().get_model_version(name, str(found[0].aliases[alias]))


def find_model(name: str) -> RegisteredModel | None:
    """The registered model `name` with its aliases, or None (looked up by search, as above)."""
    found = client().search_registered_models(f"name = '{name}'", max_results=1)
    return found[0] if found else None


def find_version(name: str, version: str) -> ModelVersion | None:
    """Version `version` of model `name`, or None if there is no such (or a deleted) version."""
    try:
        return client().get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def version_numbers(name: str) -> list[int]:
    """The numbers of every version of `name`, ascending (for a message that lists them)."""
    return sorted(int(v.version) for v in client().search_model_versions(f"name = '{name}'"))


def get_or_create_version(
    name: str, model_uri: str, run_id: str, tags: Mapping[str, Any], description: str
) -> tuple[str, bool]:
    """The version of `name` registered from `run_id`, registering it (and the model) if there
    is none yet; returns its number and whether it was created now.

    Registering the same run twice would only duplicate the version. Tags and description go
    in the creating call, so a version never exists without them.
    """
    c = client()
    existing = list(c.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"))
    if existing:
        return str(existing[0].version), False
    try:
        c.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = c.create_model_version(
        name,
        model_uri,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        description=description,
        # A tracking server accepts a models:/m-<id> source only together with that model_id.
        model_id=model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None,
    )
    return str(version.version), True  # an int in some MLflow versions, a str in others


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def delete_version(name: str, version: str) -> None:
    client().delete_model_version(name, version)
