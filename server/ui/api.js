// Talking to the server: same-origin fetches, the API key when one is needed, SSE streams.
//
// Every request goes to this page's own origin (relative URLs), so the server's Host and
// Origin rules see a same-origin request. When the server answers 401 the page asks for the
// key once, keeps it in this browser's local storage, and repeats the request with
// `Authorization: Bearer <key>` (what the OpenAI SDKs send).

const KEY_STORAGE = "gguf-serve.apiKey";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export class Api {
  /** askKey(message) resolves to a key, or null when the user cancels. */
  constructor(askKey) {
    this.askKey = askKey;
  }

  get key() {
    return localStorage.getItem(KEY_STORAGE) || "";
  }

  set key(value) {
    if (value) localStorage.setItem(KEY_STORAGE, value);
    else localStorage.removeItem(KEY_STORAGE);
  }

  async fetch(path, init = {}) {
    for (;;) {
      const headers = new Headers(init.headers || {});
      if (this.key) headers.set("Authorization", `Bearer ${this.key}`);
      const response = await fetch(path, { ...init, headers, credentials: "same-origin" });
      if (response.status !== 401) return response;
      const message = await errorMessage(response);
      const key = await this.askKey(this.key ? `The key was refused: ${message}` : message);
      if (key === null) throw new ApiError(message, 401);
      this.key = key;
    }
  }

  async json(path, init) {
    const response = await this.fetch(path, init);
    if (!response.ok) throw new ApiError(await errorMessage(response), response.status);
    return response.json();
  }

  async models() {
    const body = await this.json("/v1/models");
    return body.data.map((m) => m.id);
  }

  /**
   * Stream a chat completion. Calls onDelta(text) per content delta and resolves to
   * {usage, finishReason}; rejects with an AbortError when `signal` aborts.
   */
  async chat(body, signal, onDelta) {
    const response = await this.fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
      signal,
    });
    if (!response.ok) throw new ApiError(await errorMessage(response), response.status);
    let usage = null;
    let finishReason = null;
    for await (const data of sseData(response.body, signal)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(chunk.error.message || "the server failed", 500);
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      if (choice.delta && choice.delta.content) onDelta(choice.delta.content);
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
    return { usage, finishReason };
  }
}

/** The `data:` payloads of a text/event-stream body, as they arrive. */
async function* sseData(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
    }
  } finally {
    if (!signal || !signal.aborted) reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const error = body.error;
    if (typeof error === "string") return error;
    if (error && error.message) return error.message;
  } catch {
    // not JSON: fall through
  }
  return text || `HTTP ${response.status}`;
}
