"""A legacy completion request's prompts -> token lists (text, token ids, fill-in-the-middle)."""

from __future__ import annotations

from server.api.limits import MAX_SEQUENCES
from server.api.openai.completions_protocol import CompletionRequest
from server.engine.types import Engine, check_token_ids
from server.errors import InvalidRequest, UnsupportedFeature


def samples_per_prompt(body: CompletionRequest) -> int:
    """Checks that need no model; returns how many samples each prompt runs."""
    if body.max_tokens == 0 and not body.echo:
        raise InvalidRequest(
            "max_tokens must be at least 1 unless echo is true", param="max_tokens"
        )
    if body.echo and body.logprobs is not None:
        raise UnsupportedFeature(
            "echo with logprobs needs the prompt's log-probabilities, which this server does "
            "not compute",
            param="echo",
        )
    best_of = body.best_of or body.n
    if best_of < body.n:
        raise InvalidRequest("best_of must be at least n", param="best_of")
    if best_of > body.n and body.stream:
        raise InvalidRequest("best_of cannot be used with stream", param="best_of")
    raw = body.prompt
    prompts = len(raw) if isinstance(raw, list) and raw and not isinstance(raw[0], int) else 1
    if prompts * best_of > MAX_SEQUENCES:
        # Each prompt times each sample is one queued sequence; past what the server queues by
        # default it would be a 503 that no retry could cure.
        raise InvalidRequest(
            f"{prompts} prompts x {best_of} samples is more than {MAX_SEQUENCES} sequences per "
            "request; send fewer prompts or samples",
            param="prompt",
        )
    return best_of


def prompt_tokens(engine: Engine, body: CompletionRequest) -> list[list[int]]:
    """Token ids of every prompt (text is tokenized; ids are checked against the vocabulary);
    with a suffix, each prompt becomes a fill-in-the-middle prompt."""
    raw = body.prompt
    if isinstance(raw, str):
        items: list[str | list[int]] = [raw]
    elif raw and isinstance(raw[0], int):
        items = [list(raw)]  # type: ignore[arg-type]
    else:
        items = list(raw)  # type: ignore[arg-type]
    suffix = body.suffix or None
    fim = engine.fim_tokens
    if suffix is not None and fim is None:
        raise UnsupportedFeature(
            "suffix needs a model that can fill in the middle; this model's vocabulary has no "
            "FIM prefix/suffix/middle tokens",
            param="suffix",
        )
    out: list[list[int]] = []
    for item in items:
        if isinstance(item, str):
            tokens = engine.tokenize(item, add_special=suffix is None)
        else:
            tokens = item
            check_token_ids(tokens, engine.n_vocab, param="prompt")
        if suffix is not None and fim is not None:
            pre, suf, mid = fim
            bos = engine.tokenize("", add_special=True)
            tokens = [*bos, pre, *tokens, suf, *engine.tokenize(suffix, add_special=False), mid]
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="prompt")
        out.append(tokens)
    return out


def prompt_text(engine: Engine, body: CompletionRequest, index: int, tokens: list[int]) -> str:
    """The prompt as echo returns it: the text as sent, or the detokenized ids."""
    raw = body.prompt
    if isinstance(raw, str):
        return raw
    item = raw[index] if raw and not isinstance(raw[0], int) else raw
    return item if isinstance(item, str) else engine.detokenize(list(item))  # type: ignore[arg-type]
