"""Looking names up in the catalog of known tags (`configs/models.yaml`), aliases included."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from server.errors import InvalidName
from server.registry.tags import ModelName, parse_name
from server.settings import CatalogEntry, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogMatch:
    """A catalog entry and its canonical name (the key it is listed under)."""

    name: ModelName
    entry: CatalogEntry


def find_in_catalog(settings: Settings, name: ModelName) -> CatalogMatch | None:
    """The entry whose name or one of whose aliases equals `name` (ignoring case), if any."""
    for key, entry in settings.models.items():
        try:
            canonical = parse_name(key)
            names = [canonical, *(parse_name(alias) for alias in entry.aliases)]
        except InvalidName as exc:
            log.warning("ignoring catalog entry %r: %s", key, exc.message)
            continue
        if any(candidate.key == name.key for candidate in names):
            return CatalogMatch(canonical, entry)
    return None


def known_names(settings: Settings) -> list[str]:
    """Every name the catalog can pull, canonical names first, for error messages."""
    names = list(settings.models)
    for entry in settings.models.values():
        names.extend(entry.aliases)
    return names
