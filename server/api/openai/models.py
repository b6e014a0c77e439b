"""GET /v1/models: every tag in the store, in OpenAI's model-card shape."""

from __future__ import annotations

import asyncio

from server.api.openai.protocol import ModelCard, ModelList
from server.registry import ModelRecord, Registry


def _card(record: ModelRecord) -> ModelCard:
    return ModelCard(
        id=record.name.display,
        created=int(record.modified_at.timestamp()),
        owned_by=record.name.namespace,
    )


class ModelsService:
    """Reads the store for the /v1/models routes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def list(self) -> ModelList:
        records = await asyncio.to_thread(self.registry.list)
        return ModelList(data=[_card(r) for r in records])

    async def get(self, model_id: str) -> ModelCard:
        """Raises ModelNotFound, InvalidName."""
        resolved = await asyncio.to_thread(self.registry.resolve, model_id)
        return ModelCard(
            id=resolved.name,
            created=int(resolved.modified_at.timestamp()),
            owned_by=resolved.model_name.namespace,
        )
