// The "Knowledge" panel: the user's knowledge bases, a form to create one, and files dropped on a
// base (or picked with its file input) uploaded into it, with each ingest task's progress live
// from /ws/knowledge/ (docs/knowledge.md "Progress"). REST: /api/knowledge/ (docs/api.md).
// The progress socket is open only while a task of the user is queued or running (found at load,
// or started here): an idle page keeps one socket, its conversation's.

import { ApiError, describeError } from "./api.js";
import { $, h } from "./dom.js";

const STAGES = { extract: "reading", chunk: "cutting", embed: "embedding", index: "indexing" };

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export function setupKnowledge({ api, toast, base }) {
  const els = { toggle: $("#new-base-toggle"), form: $("#base-form"), list: $("#base-list") };
  if (!els.form) return;
  const errors = els.form.querySelector("[data-role=errors]");
  const tasks = new Map(); // task id -> {task, name}
  let bases = [];
  let socket = null;
  let retry = 0;

  function showErrors(error) {
    errors.hidden = !error;
    errors.textContent = error ? describeError(error) : "";
  }

  function toggle(open) {
    els.form.hidden = !open;
    els.toggle.setAttribute("aria-expanded", String(open));
    if (open) els.form.elements.name.focus();
  }

  function taskLine(entry) {
    const { task, name } = entry;
    let state = task.status;
    if (task.status === "running") state = `${STAGES[task.stage] || "starting"} ${task.total ? `${task.done}/${task.total}` : ""}`;
    if (task.status === "failed") state = `failed: ${task.error || "error"}`;
    const bar = task.status === "running" && task.total ? h("progress", { max: task.total, value: task.done }) : null;
    return h(
      "li",
      { class: "base-task", dataset: { task: task.id, status: task.status } },
      h("span", {}, name || "document"),
      h("span", { class: "task-state" }, state.trim()),
      bar,
    );
  }

  function render() {
    if (!bases.length) {
      els.list.replaceChildren(h("li", { class: "key-empty" }, "No knowledge bases yet."));
      return;
    }
    els.list.replaceChildren(
      ...bases.map((kb) => {
        const input = h("input", { type: "file", multiple: true, onchange: (e) => upload(kb, e.target.files) });
        const lines = [...tasks.values()].filter((entry) => entry.task.base === kb.id).map(taskLine);
        const item = h(
          "li",
          { class: "base-item", dataset: { id: kb.id, name: kb.name } },
          h(
            "div",
            { class: "base-head" },
            h("span", { class: "key-name" }, kb.name),
            h("span", { class: "key-meta" }, `${kb.document_count} document${kb.document_count === 1 ? "" : "s"}`),
          ),
          h("label", { class: "base-drop" }, "Drop files here or ", h("u", {}, "choose"), input),
          h("ul", { class: "base-tasks" }, ...lines),
        );
        item.addEventListener("dragover", (event) => {
          event.preventDefault();
          item.dataset.dragover = "true";
        });
        item.addEventListener("dragleave", () => delete item.dataset.dragover);
        item.addEventListener("drop", (event) => {
          event.preventDefault();
          delete item.dataset.dragover;
          if (event.dataTransfer && event.dataTransfer.files.length) upload(kb, event.dataTransfer.files);
        });
        return item;
      }),
    );
  }

  async function load() {
    try {
      bases = await api.request("GET", "knowledge/bases/");
      render();
    } catch (err) {
      toast(describeError(err), "error");
    }
  }

  async function createBase(event) {
    event.preventDefault();
    try {
      await api.request("POST", "knowledge/bases/", { name: els.form.elements.name.value.trim() });
      showErrors(null);
      els.form.reset();
      toggle(false);
      await load();
    } catch (err) {
      showErrors(err);
    }
  }

  async function upload(kb, files) {
    for (const file of files) {
      const form = new FormData();
      form.append("file", file);
      let response;
      try {
        response = await fetch(`${base}knowledge/bases/${kb.id}/documents/`, {
          method: "POST",
          body: form,
          credentials: "same-origin",
          headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
        });
      } catch (err) {
        toast("The server cannot be reached.", "error");
        return;
      }
      const data = await response.json().catch(() => null);
      if (!response.ok) {
        toast(`${file.name}: ${describeError(new ApiError(response.status, data))}`, "error");
        continue;
      }
      const previous = tasks.get(data.task.id);
      tasks.set(data.task.id, { task: previous ? previous.task : data.task, name: file.name });
      if (!data.created) toast(`${file.name} is already in ${kb.name}.`);
      if (isActive(data.task)) follow();
    }
    await load();
  }

  const isActive = (task) => task.status === "queued" || task.status === "running";
  const anyActive = () => [...tasks.values()].some((entry) => isActive(entry.task));

  function onProgress(task) {
    const entry = tasks.get(task.id) || { name: "" };
    tasks.set(task.id, { task, name: entry.name });
    if (!anyActive() && socket) socket.close(1000); // nothing left to follow
    if (task.status === "done" || task.status === "failed") {
      load();
      return;
    }
    render();
  }

  function follow() {
    if (!socket) connect();
  }

  // The tasks' state from REST: at load (any still active are followed), and once the socket is
  // open (a task that ended before the socket joined its group sends nothing more).
  async function activeTasks() {
    try {
      const found = await api.request("GET", "knowledge/tasks/");
      for (const task of found) {
        if (isActive(task) || tasks.has(task.id)) tasks.set(task.id, { task, name: tasks.get(task.id)?.name || "" });
      }
    } catch (err) {
      return; // the bases' list reports what is wrong
    }
    render();
    if (anyActive()) follow();
    else if (socket) socket.close(1000);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/ws/knowledge/`);
    socket.onopen = () => {
      retry = 0;
      activeTasks();
    };
    socket.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (frame.type === "task_progress" && frame.task) onProgress(frame.task);
      else if (frame.type === "ping") socket.send(JSON.stringify({ type: "pong", data: {} }));
    };
    socket.onclose = (event) => {
      socket = null;
      if (event.code === 4003 || !anyActive()) return; // signed out, or nothing left to follow
      retry = Math.min(retry + 1, 6);
      setTimeout(follow, 500 * 2 ** retry);
    };
  }

  els.toggle.addEventListener("click", () => toggle(els.form.hidden));
  els.form.addEventListener("submit", createBase);
  els.form.querySelector("[data-action=cancel]").addEventListener("click", () => toggle(false));
  activeTasks();
  return load();
}
