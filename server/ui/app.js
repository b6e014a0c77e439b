// The chat page: model picker, streamed answers with Stop, conversations in local storage.

import { Api } from "./api.js";
import { copyButton, renderInto } from "./render.js";
import { Store } from "./store.js";

const $ = (id) => document.getElementById(id);
const store = new Store();
const api = new Api(askKey);
let running = null; // {controller, conversation} while an answer streams

// ---- API key dialog --------------------------------------------------------------------------

let keyPrompt = null; // one dialog at a time: requests refused together share the answer

function askKey(reason) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("key-dialog");
  $("key-reason").textContent = reason;
  $("key-input").value = "";
  dialog.returnValue = "";
  dialog.showModal(); // Enter in the field submits "Use this key"; Esc or Cancel closes
  $("key-input").focus();
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        keyPrompt = null;
        const key = $("key-input").value;
        resolve(dialog.returnValue === "ok" && key ? key : null);
      },
      { once: true },
    );
  });
  return keyPrompt;
}

// ---- views -------------------------------------------------------------------------------------

function setStatus(text) {
  $("status").textContent = text || "";
}

function statsText(stats) {
  if (!stats) return "";
  const parts = [];
  const approx = stats.stopped ? "≈" : "";
  if (stats.stopped) parts.push("stopped");
  if (stats.tokens) parts.push(`${approx}${stats.tokens} tokens`);
  if (stats.rate) parts.push(`${approx}${stats.rate.toFixed(1)} tok/s`);
  if (stats.ttft !== undefined) parts.push(`first token ${stats.ttft.toFixed(2)} s`);
  if (stats.finish === "length") parts.push("cut at the length limit");
  return parts.join(" · ");
}

function messageView(message, modelName) {
  const article = document.createElement("article");
  article.className = `msg ${message.role}`;
  const role = document.createElement("div");
  role.className = "role";
  role.textContent = message.role === "user" ? "You" : modelName || "Assistant";
  const content = document.createElement("div");
  content.className = "content";
  const meta = document.createElement("div");
  meta.className = "meta";
  const stats = document.createElement("span");
  stats.className = "stats";
  meta.append(stats, copyButton(() => message.content));
  article.append(role, content, meta);
  const view = {
    article,
    update() {
      renderInto(content, message.content);
      stats.textContent = message.error ? `error: ${message.error}` : statsText(message.stats);
      article.classList.toggle("failed", Boolean(message.error));
    },
  };
  view.update();
  return view;
}

function showConversation() {
  const conversation = store.current;
  const views = (conversation ? conversation.messages : []).map((m) =>
    messageView(m, conversation.model).article,
  );
  $("messages").replaceChildren(...views);
  $("messages").scrollTop = $("messages").scrollHeight;
  showConversationList();
}

function showConversationList() {
  const items = store.conversations.map((c) => {
    const li = document.createElement("li");
    li.className = c.id === store.currentId ? "active" : "";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.textContent = c.title;
    open.title = c.title;
    open.addEventListener("click", () => {
      stopRunning();
      store.select(c.id);
      showConversation();
    });
    const del = document.createElement("button");
    del.type = "button";
    del.className = "delete";
    del.textContent = "×";
    del.title = "Delete this conversation";
    del.addEventListener("click", () => {
      if (running && running.conversation === c) stopRunning();
      store.remove(c.id);
      showConversation();
    });
    li.append(open, del);
    return li;
  });
  $("conversations").replaceChildren(...items);
}

function setRunning(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  $("model").disabled = on;
}

// ---- sending -----------------------------------------------------------------------------------

function requestMessages(conversation) {
  const messages = [];
  const system = store.settings.system.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const m of conversation.messages) {
    if (m.content) messages.push({ role: m.role, content: m.content });
  }
  return messages;
}

async function send(text) {
  const model = $("model").value;
  if (!model) {
    setStatus("No model to talk to: pull one first (gguf-serve pull smollm2:135m).");
    return;
  }
  const conversation = store.current || store.create(model);
  conversation.model = model;
  conversation.messages.push({ role: "user", content: text });
  const messages = requestMessages(conversation);
  const answer = { role: "assistant", content: "", stats: null };
  conversation.messages.push(answer);
  store.touch(conversation);
  showConversation();
  const view = messageView(answer, model);
  $("messages").lastElementChild.replaceWith(view.article);

  const controller = new AbortController();
  running = { controller, conversation };
  setRunning(true);
  setStatus("");
  const started = performance.now();
  let first = null;
  let deltas = 0;
  let pending = false;
  const redraw = () => {
    pending = false;
    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    view.update();
    if (atBottom) box.scrollTop = box.scrollHeight;
  };
  try {
    const body = { model, messages, temperature: Number(store.settings.temperature) };
    if (store.settings.maxTokens) body.max_tokens = store.settings.maxTokens;
    const result = await api.chat(body, controller.signal, (delta) => {
      first ??= performance.now();
      deltas += 1;
      answer.content += delta;
      if (!pending) {
        pending = true;
        requestAnimationFrame(redraw);
      }
    });
    const end = performance.now();
    const tokens = result.usage ? result.usage.completion_tokens : deltas;
    answer.stats = { tokens, finish: result.finishReason };
    if (first !== null) {
      answer.stats.ttft = (first - started) / 1000;
      if (tokens > 1 && end > first) answer.stats.rate = ((tokens - 1) * 1000) / (end - first);
    }
  } catch (err) {
    if (err.name === "AbortError") {
      const end = performance.now();
      answer.stats = { stopped: true, tokens: deltas };
      if (first !== null && deltas > 1 && end > first) {
        answer.stats.rate = ((deltas - 1) * 1000) / (end - first);
      }
    } else {
      answer.error = err.message;
    }
  } finally {
    if (running && running.controller === controller) running = null;
    setRunning(false);
    if (!answer.content && !answer.error) {
      // stopped before any text: forget the empty answer (the question stays)
      conversation.messages.splice(conversation.messages.indexOf(answer), 1);
    }
    store.touch(conversation);
    if (store.current === conversation) {
      redraw();
      showConversationList();
    }
  }
}

function stopRunning() {
  if (running) running.controller.abort();
}

// ---- wiring ------------------------------------------------------------------------------------

async function loadModels() {
  const select = $("model");
  try {
    const models = await api.models();
    select.replaceChildren(
      ...models.map((id) => {
        const option = document.createElement("option");
        option.value = option.textContent = id;
        return option;
      }),
    );
    const wanted = (store.current && store.current.model) || store.settings.model;
    if (models.includes(wanted)) select.value = wanted;
    if (!models.length) setStatus("No models in the store: gguf-serve pull smollm2:135m");
    else setStatus("");
  } catch (err) {
    setStatus(`Could not list the models: ${err.message}`);
  }
}

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value;
    if (!text.trim() || running) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stopRunning);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && running && !$("key-dialog").open) stopRunning();
  });
  $("new-chat").addEventListener("click", () => {
    stopRunning();
    store.select(null);
    showConversation();
    $("prompt").focus();
  });
  $("model").addEventListener("change", () => {
    store.settings.model = $("model").value;
    store.save();
  });
  $("system").value = store.settings.system;
  $("system").addEventListener("input", () => {
    store.settings.system = $("system").value;
    store.save();
  });
  $("temperature").value = store.settings.temperature;
  $("temperature").addEventListener("change", () => {
    const value = Number($("temperature").value);
    store.settings.temperature = Number.isFinite(value) ? Math.min(Math.max(value, 0), 2) : 0.8;
    $("temperature").value = store.settings.temperature;
    store.save();
  });
  $("max-tokens").value = store.settings.maxTokens || "";
  $("max-tokens").addEventListener("change", () => {
    const value = Math.floor(Number($("max-tokens").value));
    store.settings.maxTokens = value >= 1 ? value : null;
    $("max-tokens").value = store.settings.maxTokens || "";
    store.save();
  });
  $("key-cancel").addEventListener("click", () => $("key-dialog").close("cancel"));
  $("forget-key").addEventListener("click", () => {
    api.key = "";
    setStatus("The API key is forgotten.");
  });
}

wire();
showConversation();
loadModels();
