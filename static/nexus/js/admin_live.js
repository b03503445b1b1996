// The admin's live view: re-reads runs in flight and this process's sockets every few seconds and
// redraws the tables (text only), with a Stop button per run that calls the same stop service.

import { h } from "./dom.js";

const root = document.getElementById("live");
const source = root.dataset.source;
const stopUrl = root.dataset.stop;
const interval = Number(root.dataset.interval) || 2000;
const csrf = root.querySelector("input[name=csrfmiddlewaretoken]").value;
const updated = document.getElementById("live-updated");

function link(href, text) {
  return h("a", { href }, text);
}

function renderRuns(runs) {
  const body = document.querySelector("#live-runs tbody");
  if (!runs.length) {
    body.replaceChildren(h("tr", { class: "live-empty" }, h("td", { colspan: "10" }, "No run in flight.")));
    return;
  }
  body.replaceChildren(
    ...runs.map((run) =>
      h(
        "tr",
        { dataset: { runId: run.id } },
        h("td", {}, link(run.url, run.id.slice(0, 8))),
        h("td", {}, run.cancel_requested ? `${run.status} (stopping)` : run.status),
        h("td", {}, run.agent),
        h("td", {}, run.provider),
        h("td", {}, link(run.conversation_url, run.conversation)),
        h("td", {}, run.user),
        h("td", {}, String(run.age_seconds)),
        h("td", {}, run.heartbeat_seconds === null ? "–" : String(run.heartbeat_seconds)),
        h("td", {}, run.owner || "–"),
        h(
          "td",
          {},
          stopUrl
            ? h("button", { type: "button", class: "button live-stop", onclick: () => stop(run.id) }, "Stop")
            : null,
        ),
      ),
    ),
  );
}

function renderSockets(sockets) {
  const body = document.querySelector("#live-sockets tbody");
  if (!sockets.length) {
    body.replaceChildren(h("tr", { class: "live-empty" }, h("td", { colspan: "7" }, "No socket on this process.")));
    return;
  }
  body.replaceChildren(
    ...sockets.map((s) =>
      h(
        "tr",
        {},
        h("td", {}, s.socket_id),
        h("td", {}, s.username),
        h("td", {}, s.path),
        h("td", {}, s.auth || "–"),
        h("td", {}, s.conversation_id || "–"),
        h("td", {}, s.last_seq === null ? "–" : String(s.last_seq)),
        h("td", {}, String(s.connected_seconds)),
      ),
    ),
  );
}

function render(data) {
  const values = { ...data.snapshot, runs: data.runs.length };
  for (const el of document.querySelectorAll("#live-cards [data-key]")) {
    el.textContent = String(values[el.dataset.key] ?? "–");
  }
  renderRuns(data.runs);
  renderSockets(data.sockets);
  updated.textContent = `Updated ${new Date(data.generated_at).toLocaleTimeString()}`;
  updated.dataset.state = "ok";
}

async function refresh() {
  try {
    const response = await fetch(source, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (err) {
    updated.textContent = `Update failed (${err.message}); retrying`;
    updated.dataset.state = "error";
  }
}

async function stop(runId) {
  const body = new URLSearchParams({ run_id: runId });
  const response = await fetch(stopUrl, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRFToken": csrf },
    body,
  });
  if (!response.ok) {
    updated.textContent = `Stop failed (HTTP ${response.status})`;
    updated.dataset.state = "error";
  }
  refresh();
}

// Redraw from the first fetch on (the server-rendered tables have no Stop buttons).
refresh();
setInterval(() => {
  if (!document.hidden) refresh();
}, interval);
