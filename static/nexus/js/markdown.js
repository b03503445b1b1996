// Agent replies as Markdown, safely. marked turns the text into HTML, highlight.js colours code
// blocks, and DOMPurify sanitizes the result before it touches the page (all three vendored in
// static/vendor/, see docs/frontend.md). Raw HTML written in a message is never rendered: it is
// shown as the text it is, like any other character the model wrote. Images are shown as links
// (a picture from another host would tell that host who reads the chat). Links open in a new tab.

import { Marked } from "../../vendor/marked/marked.esm.js";
import DOMPurify from "../../vendor/dompurify/purify.es.js";
import hljs from "../../vendor/highlight/core.min.js";
import bash from "../../vendor/highlight/languages/bash.min.js";
import c from "../../vendor/highlight/languages/c.min.js";
import cpp from "../../vendor/highlight/languages/cpp.min.js";
import css from "../../vendor/highlight/languages/css.min.js";
import diff from "../../vendor/highlight/languages/diff.min.js";
import go from "../../vendor/highlight/languages/go.min.js";
import java from "../../vendor/highlight/languages/java.min.js";
import javascript from "../../vendor/highlight/languages/javascript.min.js";
import json from "../../vendor/highlight/languages/json.min.js";
import markdown from "../../vendor/highlight/languages/markdown.min.js";
import python from "../../vendor/highlight/languages/python.min.js";
import rust from "../../vendor/highlight/languages/rust.min.js";
import shell from "../../vendor/highlight/languages/shell.min.js";
import sql from "../../vendor/highlight/languages/sql.min.js";
import typescript from "../../vendor/highlight/languages/typescript.min.js";
import xml from "../../vendor/highlight/languages/xml.min.js";
import yaml from "../../vendor/highlight/languages/yaml.min.js";
import { h } from "./dom.js";

const LANGUAGES = { bash, c, cpp, css, diff, go, java, javascript, json, markdown, python, rust, shell, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, grammar);

function escapeHtml(text) {
  return String(text)
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

/** The highlighted HTML of a code block (escaped by highlight.js), or the escaped text. */
function highlight(code, lang) {
  const name = (lang || "").trim().split(/\s+/)[0].toLowerCase();
  try {
    if (name && hljs.getLanguage(name)) return { html: hljs.highlight(code, { language: name }).value, name };
    if (!name && code.length < 20000) {
      const auto = hljs.highlightAuto(code);
      if (auto.language && auto.relevance >= 5) return { html: auto.value, name: auto.language };
    }
  } catch (err) {
    /* a grammar failed: show the code plain */
  }
  return { html: escapeHtml(code), name: "" };
}

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    // Raw HTML (a block or an inline tag) is text, not markup; a block keeps its line breaks.
    html({ text, block }) {
      return block ? `<p class="raw-html">${escapeHtml(text.trim())}</p>\n` : escapeHtml(text);
    },
    image({ href, title, text }) {
      const label = text || title || href;
      return `<a href="${escapeHtml(href)}">${escapeHtml(label)}</a>`;
    },
    code({ text, lang }) {
      const { html, name } = highlight(text, lang);
      const language = name ? ` language-${escapeHtml(name)}` : "";
      return `<pre><code class="hljs${language}" data-lang="${escapeHtml(name)}">${html}</code></pre>\n`;
    },
  },
});

const PURIFY = {
  FORBID_TAGS: ["img", "svg", "math", "style", "form", "input", "button", "textarea", "select", "iframe", "video", "audio"],
  FORBID_ATTR: ["style"],
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Put text on the clipboard (the async API where there is one, else the old copy command). */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h("textarea", { class: "copy-buffer", readonly: true, "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  try {
    if (!document.execCommand("copy")) throw new Error("The browser refused to copy.");
  } finally {
    area.remove();
  }
}

/** A small "Copy" button that copies what ``getText()`` returns and says so for a moment. */
export function copyButton(getText, { label = "Copy", className = "" } = {}) {
  const button = h("button", { type: "button", class: `copy-btn ${className}`.trim(), title: label, "aria-label": label }, "Copy");
  button.addEventListener("click", async () => {
    try {
      await copyText(getText());
      button.textContent = "Copied";
      button.dataset.copied = "true";
    } catch (err) {
      button.textContent = "Copy failed";
      button.dataset.copied = "false";
    }
    clearTimeout(button._reset);
    button._reset = setTimeout(() => {
      button.textContent = "Copy";
      delete button.dataset.copied;
    }, 1500);
  });
  return button;
}

/** Drop whitespace-only text at both ends, so the element's text is the message's, trimmed. */
function trimEnds(fragment) {
  for (const end of ["firstChild", "lastChild"]) {
    while (fragment[end] && fragment[end].nodeType === Node.TEXT_NODE && !fragment[end].textContent.trim()) {
      fragment[end].remove();
    }
  }
}

/** Markdown ``text`` as a sanitized DocumentFragment, code blocks wrapped with a copy button. */
export function renderMarkdown(text) {
  const html = marked.parse(text || "", { async: false });
  const fragment = DOMPurify.sanitize(html, { ...PURIFY, RETURN_DOM_FRAGMENT: true });
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const lang = (code && code.dataset.lang) || "";
    const bar = h(
      "div",
      { class: "code-bar" },
      h("span", { class: "code-lang" }, lang || "code"),
      copyButton(() => (code ? code.textContent : pre.textContent), { label: "Copy code", className: "copy-code" }),
    );
    const box = h("div", { class: "code-block" });
    pre.replaceWith(box);
    box.append(bar, pre);
  }
  trimEnds(fragment);
  return fragment;
}

/**
 * Renders a growing message at most once per animation frame: a long reply arriving in many
 * small chunks costs one Markdown pass per frame, not one per chunk.
 */
export class MarkdownView {
  constructor(el) {
    this.el = el;
    this.text = "";
    this.frame = 0;
    this.onRender = null; // called after each render (e.g. to keep the newest line in view)
  }

  set(text) {
    this.text = text || "";
    this.schedule();
  }

  append(chunk) {
    this.text += chunk;
    this.schedule();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.flush();
    });
  }

  /** Render now (e.g. when the reply is final). */
  flush() {
    if (this.frame) {
      cancelAnimationFrame(this.frame);
      this.frame = 0;
    }
    this.el.replaceChildren(renderMarkdown(this.text));
    if (this.onRender) this.onRender();
  }
}
