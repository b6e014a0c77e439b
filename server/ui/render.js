// Safe rendering of chat text: a small Markdown subset built with DOM nodes, never innerHTML.
//
// Model output is untrusted text. Every character of it reaches the page through
// document.createTextNode or textContent, so `<img src=x onerror=...>` shows as those
// characters and never becomes an element. Supported: ``` fenced code blocks (an unclosed fence
// while streaming is a code block to the end), `inline code`, **bold**, paragraphs and line
// breaks (kept as typed, with `white-space: pre-wrap`). Code blocks get a copy button.

const FENCE = /^```([\w+#.-]*)[ \t]*$/;

/** Split text into text and code segments by ``` fences on their own line. */
export function segments(text) {
  const out = [];
  let prose = [];
  let code = null; // {lang, lines}
  for (const line of text.split("\n")) {
    const fence = line.match(FENCE);
    if (code === null && fence) {
      if (prose.length) out.push({ kind: "text", text: prose.join("\n") });
      prose = [];
      code = { lang: fence[1], lines: [] };
    } else if (code !== null && line.trim() === "```") {
      out.push({ kind: "code", lang: code.lang, text: code.lines.join("\n"), closed: true });
      code = null;
    } else if (code !== null) {
      code.lines.push(line);
    } else {
      prose.push(line);
    }
  }
  if (code !== null) out.push({ kind: "code", lang: code.lang, text: code.lines.join("\n"), closed: false });
  else if (prose.length) out.push({ kind: "text", text: prose.join("\n") });
  return out;
}

/** Inline spans of one paragraph: `code`, **bold**, plain text. */
function inline(parent, text) {
  const pattern = /`([^`\n]+)`|\*\*([^*\n]+)\*\*/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) plain(parent, text.slice(last, match.index));
    const node = document.createElement(match[1] !== undefined ? "code" : "strong");
    node.textContent = match[1] !== undefined ? match[1] : match[2];
    parent.append(node);
    last = match.index + match[0].length;
  }
  if (last < text.length) plain(parent, text.slice(last));
}

function plain(parent, text) {
  parent.append(document.createTextNode(text)); // newlines and indentation: CSS pre-wrap
}

export function copyButton(getText, label = "Copy") {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = label;
  button.addEventListener("click", async () => {
    const text = getText();
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      fallbackCopy(text); // http origins other than localhost have no async clipboard
    }
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = label), 1200);
  });
  return button;
}

function fallbackCopy(text) {
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

/** Replace `container`'s children with the rendering of `text`. */
export function renderInto(container, text) {
  const nodes = [];
  for (const seg of segments(text)) {
    if (seg.kind === "code") {
      const block = document.createElement("div");
      block.className = "code-block";
      const head = document.createElement("div");
      head.className = "code-head";
      const lang = document.createElement("span");
      lang.textContent = seg.lang || "code";
      head.append(lang, copyButton(() => seg.text, "Copy code"));
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      code.textContent = seg.text;
      pre.append(code);
      block.append(head, pre);
      nodes.push(block);
    } else {
      for (const para of seg.text.split(/\n{2,}/)) {
        if (!para.trim()) continue;
        const p = document.createElement("p");
        inline(p, para.replace(/^\n+|\n+$/g, ""));
        nodes.push(p);
      }
    }
  }
  container.replaceChildren(...nodes);
}
