"""A model's family in the store (every tag of the same model) and its reference for KLD."""

from __future__ import annotations

import logging

from server.errors import GGUFServeError, ModelNotFound
from server.registry import ModelName, Registry, ResolvedModel, parse_name

logger = logging.getLogger(__name__)


def _family(name: ModelName) -> tuple[str, str, str]:
    return (name.host.lower(), name.namespace.lower(), name.model.lower())


def family_members(registry: Registry, name_or_family: str) -> list[ResolvedModel]:
    """The stored models that share `name_or_family`'s model name (`smollm2` -> every
    `smollm2:*`), largest file first. A name with a tag must itself be stored.

    Raises InvalidName, ModelNotFound.
    """
    parsed = parse_name(name_or_family)
    record = registry.find(parsed)
    if record is None and ":" in name_or_family.rsplit("/", 1)[-1]:
        raise ModelNotFound(f"model '{parsed}' not found, try pulling it first")
    family = _family(record.name if record is not None else parsed)
    members = []
    for candidate in registry.list():
        if _family(candidate.name) != family:
            continue
        try:
            members.append(registry.resolve(candidate.name.full))
        except GGUFServeError as exc:  # a broken file must not hide the rest of the family
            logger.warning("skipping %s: %s", candidate.name, exc.message)
    if not members:
        raise ModelNotFound(
            f"no model called '{parsed.model}' in the store; pull one first (gguf-serve list)"
        )
    members.sort(key=lambda m: (-m.info.size_bytes, m.name))
    return members


def reference_for(registry: Registry, model: ResolvedModel) -> ResolvedModel:
    """The highest-precision stored model with the same name, architecture and parameter count
    (the model itself when none is more precise)."""
    same = [
        member
        for member in family_members(registry, model.model_name.full)
        if member.info.architecture == model.info.architecture
        and member.info.parameter_count == model.info.parameter_count
    ]
    return max(
        same, key=lambda m: (m.info.bits_per_weight, m.digest == model.digest), default=model
    )
