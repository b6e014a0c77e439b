"""Per-request limits shared by both APIs' wire schemas (a request past one is a 400 naming it).

They bound the work one request can ask for, beyond the body size the edge already caps:
a few thousand messages or inputs is more than any real client sends, and far below what
would keep a worker thread busy rendering or tokenizing for minutes.
"""

from __future__ import annotations

MAX_MESSAGES = 2048  # chat messages in one request
MAX_PARTS = 256  # content parts (or images) in one message
MAX_TOOLS = 128  # tools offered in one request (OpenAI's own limit)
MAX_STOP = 16  # stop sequences
MAX_STOP_CHARS = 1024  # characters in one stop sequence
MAX_GRAMMAR_CHARS = 128 * 1024  # a GBNF grammar sent as text
MAX_EMBED_INPUTS = 2048  # inputs in one embeddings request (OpenAI's own limit)
MAX_PROMPTS = 64  # prompts in one legacy completions request
MAX_SEQUENCES = 64  # prompts x samples (n, best_of) in one request: the default max_queue
