// The sources of a reply (passages its agent found in knowledge bases, metadata.sources): a
// "Sources" disclosure under the reply, one entry per passage (title or file, score) that opens to
// show the passage. Text goes in with textContent only (dom.h): a passage is never parsed as HTML.
import { h } from "./dom.js";

function scoreText(score) {
  return typeof score === "number" && Number.isFinite(score) ? score.toFixed(3) : "";
}

function sourceEntry(source, number) {
  const title = String(source.title || source.filename || source.url || "Passage");
  const where = source.filename && source.filename !== title ? source.filename : source.url || "";
  const details = source.score_details || {};
  const scoreParts = [];
  if (scoreText(source.score)) scoreParts.push(`score ${scoreText(source.score)}`);
  if (typeof details.accurate === "number") scoreParts.push(`accurate ${scoreText(details.accurate)}`);
  if (typeof details.semantic === "number") scoreParts.push(`semantic ${scoreText(details.semantic)}`);
  return h(
    "li",
    { class: "source", dataset: { documentId: source.document_id || "" } },
    h(
      "details",
      {},
      h(
        "summary",
        {},
        h("span", { class: "source-number" }, `[${number}]`),
        " ",
        h("span", { class: "source-title" }, title),
        where ? h("span", { class: "source-file" }, ` · ${where}`) : null,
        scoreParts.length ? h("span", { class: "source-score" }, ` · ${scoreParts[0]}`) : null,
      ),
      h("blockquote", { class: "source-text" }, String(source.text || "")),
      scoreParts.length > 1 ? h("div", { class: "source-scores" }, scoreParts.join(" · ")) : null,
    ),
  );
}

/** Show ``sources`` in ``container`` (emptied first); hidden when there are none. */
export function renderSources(container, sources) {
  const list = Array.isArray(sources) ? sources.filter((s) => s && typeof s === "object") : [];
  container.replaceChildren();
  container.hidden = list.length === 0;
  if (!list.length) return;
  container.append(
    h(
      "details",
      { class: "msg-sources-box" },
      h("summary", {}, `Sources (${list.length})`),
      h("ol", { class: "source-list" }, list.map((source, i) => sourceEntry(source, i + 1))),
    ),
  );
}
