// Tiny DOM helpers. Text is only ever set with textContent: nothing from the server or a model
// is parsed as HTML anywhere on the page.

/**
 * h("div", {class: "x", dataset: {id: "1"}, onclick: fn}, "text", child)
 * Strings become text nodes; attributes are set one by one (never innerHTML).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

/** A random UUID v4, also on plain-http origins where crypto.randomUUID is missing. */
export function uuid4() {
  if (window.crypto && typeof window.crypto.randomUUID === "function" && window.isSecureContext) {
    return window.crypto.randomUUID();
  }
  const bytes = window.crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** A list's date: the time today, the day this year ("5 Dec"), else the day and year. */
export function formatWhen(iso, now = new Date()) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  if (date.toDateString() === now.toDateString()) return formatTime(iso);
  const options = { day: "numeric", month: "short" };
  if (date.getFullYear() !== now.getFullYear()) options.year = "numeric";
  return date.toLocaleDateString([], options);
}

/** Pretty JSON for tool arguments and results, cut to a readable size. */
export function shortJson(value, limit = 400) {
  let text;
  try {
    text = typeof value === "string" ? value : JSON.stringify(value);
  } catch (err) {
    text = String(value);
  }
  if (text === undefined) text = "";
  return text.length > limit ? text.slice(0, limit - 1) + "…" : text;
}

const SVG_NS = "http://www.w3.org/2000/svg";
// Feather icons (MIT): stroke paths on a 24x24 grid.
const ICONS = {
  "thumbs-up":
    "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3",
  "thumbs-down":
    "M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17",
  pin: "M12 16v6M9 3h6M10 3v6l-4 5h12l-4-5V3",
  tool: "M14.7 6.3a1 1 0 0 0 0 1.4l1.6 1.6a1 1 0 0 0 1.4 0l3.77-3.77a6 6 0 0 1-7.94 7.94l-6.91 6.91a2.12 2.12 0 0 1-3-3l6.91-6.91a6 6 0 0 1 7.94-7.94l-3.76 3.76z",
};

/** An inline SVG icon (no icon font, nothing external). */
export function icon(name, size = 16) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", String(size));
  svg.setAttribute("height", String(size));
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", `icon icon-${name}`);
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

let emojiSupport = null;
/** Whether this machine draws colour emoji (some Linux setups have no emoji font at all). */
export function emojiSupported() {
  if (emojiSupport !== null) return emojiSupport;
  emojiSupport = false;
  try {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 24;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.textBaseline = "top";
    ctx.font = "20px sans-serif";
    ctx.fillText("\u{1F916}", 0, 0);
    const pixels = ctx.getImageData(0, 0, 24, 24).data;
    for (let i = 0; i < pixels.length; i += 4) {
      if (pixels[i + 3] && (pixels[i] !== pixels[i + 1] || pixels[i + 1] !== pixels[i + 2])) {
        emojiSupport = true;
        break;
      }
    }
  } catch (err) {
    emojiSupport = true; // cannot tell: trust the system
  }
  return emojiSupport;
}

function hue(text) {
  let hash = 0;
  for (const ch of text) hash = (hash * 31 + ch.codePointAt(0)) % 360;
  return hash;
}

/** An agent's colour (#rrggbb) if it has a valid one, else null. */
export function agentColour(agent) {
  const colour = agent && agent.colour;
  return typeof colour === "string" && /^#[0-9a-f]{6}$/i.test(colour) ? colour : null;
}

/**
 * An agent's avatar: its emoji on its colour, or its initial on its colour where emoji cannot be
 * drawn (the colour is set through the CSSOM, which the page's CSP allows; never a style attribute).
 */
export function avatar(agent, extraClass = "") {
  const name = (agent && agent.name) || "Agent";
  const emoji = agent && agent.emoji;
  const colour = agentColour(agent);
  let el;
  if (emoji && emojiSupported()) {
    el = h("span", { class: `avatar avatar-emoji ${extraClass}`, "aria-hidden": "true" }, emoji);
  } else {
    el = h("span", { class: `avatar avatar-initial ${extraClass}`, "aria-hidden": "true" }, name.trim()[0] || "?");
    el.style.setProperty("--avatar-hue", String(hue(name)));
  }
  if (colour) {
    el.classList.add("avatar-coloured");
    el.style.setProperty("--avatar-colour", colour);
    el.dataset.colour = colour.toLowerCase();
  }
  return el;
}
