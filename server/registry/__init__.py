"""The model registry: names, the on-disk store, GGUF header facts and pull sources.

The engine needs only `Registry(settings).resolve(name)` -> path, header facts, load overrides.
"""

from server.registry.gguf_info import GGUFInfo, read_gguf_info
from server.registry.quantized import Quantizer
from server.registry.registry import Registry, ResolvedModel
from server.registry.sources import PullProgress
from server.registry.store import ModelRecord, Store
from server.registry.tags import ModelName, TagParts, normalize_quant, parse_name, parse_tag

__all__ = [
    "GGUFInfo",
    "ModelName",
    "ModelRecord",
    "PullProgress",
    "Quantizer",
    "Registry",
    "ResolvedModel",
    "Store",
    "TagParts",
    "normalize_quant",
    "parse_name",
    "parse_tag",
    "read_gguf_info",
]
