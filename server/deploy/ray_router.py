"""Conversation affinity for Ray Serve: a conversation's next turn goes where its cache is.

Each replica keeps the KV cache of the prompts it served (prefix reuse in the batch engine), so
the next turn of a conversation is cheap only on the replica that served the last one. Ray's
prefix-cache-affinity router reads the prompt from the request's arguments, but requests that
come through Ray's HTTP proxy carry only the ASGI scope: the body is read later, by the replica.
What the proxy does parse is the session header (`x-session-id`, Ray's name; set
RAY_SERVE_SESSION_ID_HEADER_KEY to change it), so this router keys on that:

- a request with a session id ranks the replicas by rendezvous hashing of (session, replica):
  the same session always prefers the same replica, on every proxy, with no shared state, and
  when a replica goes away only its sessions move;
- the preferred replica is skipped while all its slots are busy (`busy_at`, our n_parallel) and
  another one has room, so affinity never queues a turn behind a full replica;
- a request without one gets Ray's power of two choices.
"""

from __future__ import annotations

import hashlib
import random

from ray.serve.request_router import (
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    RequestRouter,
    RunningReplica,
)


def _weight(session: str, replica: str) -> int:
    digest = hashlib.blake2b(f"{session}\0{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank_for_session(session: str, replicas: list[str]) -> list[str]:
    """Replica ids, most preferred first, for `session` (rendezvous hashing)."""
    return sorted(replicas, key=lambda r: _weight(session, r), reverse=True)


class ConversationAffinityRouter(LocalityMixin, MultiplexMixin, RequestRouter):  # type: ignore[misc]
    """Session-keyed replica affinity with a load escape; power of two choices otherwise."""

    def initialize_state(self, busy_at: int = 4) -> None:
        self._busy_at = busy_at

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        session = pending_request.metadata.session_id if pending_request is not None else ""
        if not candidate_replicas:
            return []
        if not session or len(candidate_replicas) == 1:
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        ranked = [by_id[i] for i in rank_for_session(session, list(by_id))]
        first, rest = ranked[0], ranked[1:]
        load = self.replica_queue_len_cache.get(first.replica_id)
        if load is not None and load >= self._busy_at:
            # Busy: let the least loaded of the others or the preferred one take it.
            return [[*random.sample(rest, min(2, len(rest))), first]]
        return [[first], rest]
