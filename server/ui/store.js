// Conversations and settings, kept in this browser's local storage (nothing on the server).
//
// A conversation: {id, title, model, messages: [{role, content, stats}], updated}. Settings:
// {model, system, temperature, maxTokens}, used for the next message of any conversation.

const CONVERSATIONS = "gguf-serve.conversations";
const CURRENT = "gguf-serve.current";
const SETTINGS = "gguf-serve.settings";

function read(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value === null ? fallback : value;
  } catch {
    return fallback; // a hand-edited or foreign value: start clean rather than break the page
  }
}

export class Store {
  constructor() {
    const list = read(CONVERSATIONS, []);
    this.conversations = Array.isArray(list) ? list.filter(isConversation) : [];
    this.settings = { model: "", system: "", temperature: 0.8, maxTokens: null, ...read(SETTINGS, {}) };
    this.currentId = localStorage.getItem(CURRENT);
  }

  get current() {
    return this.conversations.find((c) => c.id === this.currentId) || null;
  }

  create(model) {
    const conversation = {
      id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`,
      title: "New chat",
      model,
      messages: [],
      updated: Date.now(),
    };
    this.conversations.unshift(conversation);
    this.select(conversation.id);
    return conversation;
  }

  select(id) {
    this.currentId = id;
    if (id) localStorage.setItem(CURRENT, id);
    else localStorage.removeItem(CURRENT);
  }

  remove(id) {
    this.conversations = this.conversations.filter((c) => c.id !== id);
    if (this.currentId === id) this.select(this.conversations[0] ? this.conversations[0].id : null);
    this.save();
  }

  touch(conversation) {
    conversation.updated = Date.now();
    const first = conversation.messages.find((m) => m.role === "user");
    if (first) conversation.title = first.content.replace(/\s+/g, " ").trim().slice(0, 60);
    this.conversations.sort((a, b) => b.updated - a.updated);
    this.save();
  }

  save() {
    try {
      localStorage.setItem(CONVERSATIONS, JSON.stringify(this.conversations));
      localStorage.setItem(SETTINGS, JSON.stringify(this.settings));
    } catch (err) {
      console.warn("could not save the conversations", err); // storage full: keep going
    }
  }
}

function isConversation(c) {
  return c && typeof c.id === "string" && Array.isArray(c.messages);
}
