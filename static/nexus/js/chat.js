// One open conversation: its socket, its messages on screen, and the protocol's events applied to
// them. Every conversation event arrives once, in seq order (socket.js); the handlers here are
// also idempotent by message id, so rebuilding a reply from the log never doubles anything.
//
// The server's seq decides where a message stands: every item of the list carries an order key
// (data-order), the seq of the event that created it (a reply's is its run_started). A message the
// person just sent has none yet: it waits at the bottom, and moves to its place when its own
// user_message event brings its seq, so two tabs sending at once end with the same order.

import { ConversationSocket } from "./socket.js";
import { avatar, formatTime, h, icon, shortJson, uuid4 } from "./dom.js";
import { MarkdownView, copyButton } from "./markdown.js";
import { renderSources } from "./sources.js";

/** Tools this page runs itself when an agent calls them (execution "client"). */
export const CLIENT_TOOLS = {
  browser_timezone: () => ({ timezone: Intl.DateTimeFormat().resolvedOptions().timeZone }),
};

const FINAL = new Set(["complete", "stopped", "incomplete", "error"]);
const STATUS_LABELS = {
  streaming: "typing",
  sending: "sending…",
  stopped: "stopped",
  incomplete: "incomplete",
  error: "failed",
};

function describeMeta(meta) {
  if (!meta) return "";
  const parts = [];
  if (meta.provider) parts.push(meta.provider);
  if (meta.model) parts.push(meta.model);
  const usage = meta.usage || {};
  const tokens = usage.output_tokens || usage.total_tokens;
  if (tokens) parts.push(`${tokens} tokens`);
  if (typeof meta.latency_ms === "number") parts.push(`${(meta.latency_ms / 1000).toFixed(1)} s`);
  return parts.join(" · ");
}

/** Why a reply ended early, in words (finish reasons other than "stop" and "tool_calls"). */
export const FINISH_TEXT = {
  length: "The reply was cut off at the length limit.",
  content_filter: "The provider's content filter stopped the reply.",
  blocked: "The provider blocked this reply.",
  tool_round_limit: "The reply stopped after too many rounds of tool calls.",
};

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (err) {
    return text;
  }
}

export class ChatSession {
  constructor({ id, config, api, view }) {
    this.id = id;
    this.api = api;
    this.view = view; // the page: elements and callbacks (app.js)
    this.list = view.messages;
    this.records = new Map(); // message id -> record
    this.byClientId = new Map(); // client_message_id -> user record
    this.byRunId = new Map(); // run id -> agent record
    this.tools = new Map(); // toolCallId -> tool record
    this.runs = new Set(); // run ids in flight
    this.toolsAnswered = new Set();
    this.unacked = new Map(); // client_message_id -> content, re-sent after a reconnect
    this.unackedFiles = new Map(); // client_message_id -> attached files ([{file_id, name}])
    this.agents = new Map();
    this.conversation = null;
    this.replayed = new Set(); // ids of streaming replies rebuilt from the log (once each)
    this.branchRuns = new Set(); // runs started by regenerate/edit/continue: reloaded when they end
    this.placing = null; // the order key of what is being rendered (a frame's or a stored seq)
    this.socket = new ConversationSocket({
      path: config.ws_path.replace("{id}", id),
      onFrame: (frame, info) => this.onFrame(frame, info),
      onStatus: (status, detail) => view.onSocketStatus(status, detail),
    });
  }

  start() {
    this.list.replaceChildren();
    this.socket.start();
  }

  close() {
    this.socket.stop();
  }

  get isAgentSession() {
    return !!this.conversation && this.conversation.session_type === "agent_agent";
  }

  // --- frames --------------------------------------------------------------------------------

  onFrame(frame, info) {
    this.placing = typeof frame.seq === "number" ? frame.seq : null;
    try {
      this.applyFrame(frame, info);
    } finally {
      this.placing = null;
    }
  }

  applyFrame(frame, { fresh }) {
    const data = frame.data || {};
    const logged = typeof frame.seq === "number";
    switch (frame.type) {
      case "connection":
        return;
      case "session_state":
        this.applyState(data, fresh);
        return;
      case "ack":
        this.onAck(data);
        return;
      case "user_message":
        this.onUserMessage(data, frame.seq);
        break;
      case "run_started":
        this.onRunStarted(data);
        break;
      case "streaming_chunk":
        this.onChunk(data);
        break;
      case "agent_message":
        this.onAgentMessage(data);
        break;
      case "run_finished":
        this.onRunFinished(data);
        break;
      case "branch":
        this.onBranch(data);
        break;
      case "tool_call":
        this.onToolCall(data);
        break;
      case "tool_result":
        this.onToolResult(data);
        break;
      case "approval_required":
        this.onApprovalRequired(data);
        break;
      case "approval_decided":
        this.onApprovalDecided(data);
        break;
      case "cooldown": {
        const agent = this.agentInfo(data.agent_id);
        this.addNote(`${agent.name} waits until ${formatTime(data.until)} before the next turn.`, "cooldown");
        break;
      }
      case "system":
      case "info":
        if (data.code === "resync") {
          this.view.toast("Catching up with the server…");
          return;
        }
        if (data.code === "nothing_to_stop") return;
        if (data.code === "agent_changed" && Array.isArray(data.agents)) this.setAgents(data.agents);
        if (data.code === "session_expired" && logged) {
          // The server closes the socket next (4002); the conversation stays, and the next message
          // revives it. Reopen quietly and say it in words, once.
          this.socket.expectClose();
          this.expiring = true;
          this.addNote("This conversation went idle. Send a message to continue it.", data.code);
          if (this.conversation) {
            this.conversation.status = "expired";
            this.view.onConversationChanged(this.conversation, this.agents);
          }
          break;
        }
        if (logged) this.addNote(data.message || data.code, data.code);
        else this.view.toast(data.message || data.code);
        if (data.status && this.conversation) {
          this.conversation.status = data.status;
          this.view.onConversationChanged(this.conversation, this.agents);
        }
        if (["turn_limit_reached", "goal_reached", "budget_exhausted"].includes(data.code) && this.conversation) {
          this.conversation.status = "completed";
          this.view.onConversationChanged(this.conversation, this.agents);
        }
        break;
      case "error":
        if (!logged && this.expiring && data.code === "forbidden") return; // the idle close, said above
        if (!logged && data.client_message_id) this.refused(data.client_message_id);
        if (logged) this.addNote(data.message || data.code, "error");
        else this.view.toast(data.message || data.code, "error");
        break;
      default:
        return;
    }
    this.updateControls();
  }

  applyState(state, fresh) {
    this.expiring = false;
    this.conversation = state.conversation || this.conversation;
    if (this.conversation) this.conversation.status = state.status || this.conversation.status;
    this.agents = new Map((state.agents || []).map((agent) => [agent.id, agent]));
    this.runs = new Set((state.active_runs || []).map((run) => run.run_id));
    this.view.onConversationChanged(this.conversation, this.agents);
    if (fresh) this.rebuild(state.messages || []);
    // Anything sent while the socket was down goes now (client_message_id makes it idempotent).
    for (const [clientId, content] of this.unacked) {
      this.socket.send("user_message", { content, client_message_id: clientId, ...this.attachmentIds(clientId) });
    }
    for (const call of state.pending_tool_calls || []) this.answerTool(call);
    // Calls still waiting for a person: their buttons again (a page that reconnected, another tab).
    for (const call of state.pending_approvals || []) {
      this.onToolCall({ ...call, execution: "server", stored: true });
      this.onApprovalRequired(call);
    }
    this.updateControls();
  }

  /** The conversation's agents changed (another agent answers from now on). */
  setAgents(agents) {
    this.agents = new Map(agents.map((agent) => [agent.id, agent]));
    this.view.onConversationChanged(this.conversation, this.agents);
  }

  rebuild(messages) {
    this.list.replaceChildren();
    this.records.clear();
    this.byRunId.clear();
    this.tools.clear();
    const unsent = new Map(this.unacked);
    this.byClientId.clear();
    let key = 0;
    for (const message of messages) {
      if (message.client_message_id) unsent.delete(message.client_message_id);
      // In the server's order; one whose seq is not stored yet stays where the server put it.
      key = typeof message.seq === "number" ? message.seq : key;
      this.placing = key;
      this.renderStored(message);
    }
    this.placing = null;
    for (const [clientId, content] of unsent) {
      this.addUser({ clientId, content, status: "sending", attachments: this.unackedFiles.get(clientId) });
    }
    // A reply still streaming is rebuilt from the log: from its run_started on, every chunk. Its
    // stored text is a checkpoint that lags the state's last_seq, so it is not shown. Once per
    // reply: if the log no longer holds its events, the server resyncs and the stored text stays.
    const streaming = messages.filter((m) => m.role === "agent" && m.status === "streaming" && m.seq);
    if (streaming.some((m) => !this.replayed.has(m.id))) {
      for (const message of streaming) {
        this.replayed.add(message.id);
        this.setText(this.records.get(message.id), "");
      }
      this.socket.replayFrom(Math.min(...streaming.map((m) => m.seq)) - 1);
    }
    this.scrollToEnd(true);
  }

  renderStored(message) {
    const meta = message.metadata || {};
    if (message.type === "tool_call") {
      this.onToolCall({ ...meta, stored: true });
      return;
    }
    if (message.type === "tool_result") {
      this.onToolResult({ ...meta, result: parseJson(message.content), is_error: meta.is_error });
      return;
    }
    if (message.role === "user") {
      const record = this.addUser({
        id: message.id,
        clientId: message.client_message_id,
        content: message.content,
        seq: message.seq,
        attachments: meta.attachments,
      });
      this.setSiblings(record, message.sibling_ids);
    } else if (message.role === "agent") {
      const record = this.addAgent({
        id: message.id,
        agentId: message.agent_id,
        status: message.status,
        runId: meta.run_id,
      });
      this.setText(record, message.content, { now: true });
      this.setMeta(record, meta);
      if (meta.error && meta.error.message) {
        record.errorEl.textContent = meta.error.message; // why it failed, after a reload too
        record.errorEl.hidden = false;
      }
      this.setOpinion(record, message.opinion);
      this.setSiblings(record, message.sibling_ids);
    } else if (message.content) {
      this.addNote(message.content, message.role);
    }
  }

  /** A message the server did not take (too long, rate limited, ...): it leaves the list and its
   * text goes back to the composer, so nothing typed is lost; the error's toast says why. */
  refused(clientId) {
    const record = this.byClientId.get(clientId);
    this.unacked.delete(clientId);
    this.unackedFiles.delete(clientId);
    if (!record || record.id) return;
    this.byClientId.delete(clientId);
    record.el.remove();
    this.view.restoreDraft(record.content);
  }

  onAck(data) {
    if (!data.client_message_id) return;
    this.unacked.delete(data.client_message_id);
    this.unackedFiles.delete(data.client_message_id);
    const record = this.byClientId.get(data.client_message_id);
    if (record && data.message_id) this.bindUser(record, data.message_id);
  }

  onUserMessage(data, seq) {
    if (this.conversation && this.conversation.status === "expired") {
      this.conversation.status = "active"; // a new message revived it
      this.view.onConversationChanged(this.conversation, this.agents);
    }
    const known = this.records.get(data.messageId);
    if (known) {
      if (typeof seq === "number" && known.seq !== seq) this.place(known, seq); // its seq, at last
      return;
    }
    const record = data.client_message_id && this.byClientId.get(data.client_message_id);
    if (record) {
      this.unacked.delete(data.client_message_id);
      this.unackedFiles.delete(data.client_message_id);
      this.bindUser(record, data.messageId);
      if (typeof seq === "number") this.place(record, seq); // the one sent from here: to its place
      return;
    }
    this.addUser({ id: data.messageId, clientId: data.client_message_id, content: data.content, seq });
  }

  onRunStarted(data) {
    this.runs.add(data.run_id);
    let record = this.records.get(data.message_id);
    if (record) {
      // Rebuilding from the log: the reply starts over from its first chunk.
      if (record.status === "streaming") this.setText(record, "");
    } else {
      record = this.addAgent({ id: data.message_id, agentId: data.agent_id, status: "streaming" });
    }
    record.runId = data.run_id;
    this.byRunId.set(data.run_id, record);
  }

  onChunk(data) {
    if (!data.chunk) return;
    let record = this.records.get(data.messageId);
    if (!record) record = this.addAgent({ id: data.messageId, agentId: data.agent_id, status: "streaming" });
    if (record.status !== "streaming") return;
    const follow = this.nearEnd();
    record.view.append(data.chunk);
    record.follow = record.follow || follow;
  }

  onAgentMessage(data) {
    let record = this.records.get(data.messageId);
    if (!record) record = this.addAgent({ id: data.messageId, agentId: data.agent_id, status: data.status });
    const follow = this.nearEnd();
    this.setText(record, data.content || "", { now: true });
    this.setStatus(record, data.status);
    this.setMeta(record, data.metadata);
    this.scrollToEnd(follow);
  }

  onRunFinished(data) {
    this.runs.delete(data.run_id);
    if (this.branchRuns.delete(data.run_id)) this.reload(); // the new branch's siblings, as stored
    const record = this.records.get(data.message_id) || this.byRunId.get(data.run_id);
    if (!record) return;
    if (record.status === "streaming") {
      record.view.flush();
      this.setStatus(record, data.status === "completed" ? "complete" : data.status === "failed" ? "error" : data.status);
    }
    if (data.error && data.error.message && data.status === "failed") {
      record.errorEl.textContent = data.error.message;
      record.errorEl.hidden = false;
    }
    this.view.onRunFinished?.(data, record); // the page: the list's preview, the first title
  }

  onToolCall(data) {
    const id = data.toolCallId;
    if (!id) return;
    if (!this.tools.has(id)) {
      const owner = this.records.get(data.messageId) || this.byRunId.get(data.run_id);
      const resultEl = h("span", { class: "tool-result" }, "waiting…");
      const el = h(
        "div",
        { class: "tool", dataset: { toolCallId: id, execution: data.execution || "server" } },
        h("span", { class: "tool-name" }, icon("tool", 13), ` ${data.tool}`),
        h("code", { class: "tool-args" }, shortJson(data.parameters || {}, 200)),
        h("span", { class: "tool-arrow", "aria-hidden": "true" }, "→"),
        resultEl,
      );
      if (data.execution === "client") {
        el.append(h("span", { class: "tool-where" }, "runs in this browser"));
      }
      if (owner) owner.toolsEl.append(el);
      else this.append(h("li", { class: "msg msg-tool" }, el));
      this.tools.set(id, { el, resultEl });
    }
    if (data.execution === "client" && !data.stored) this.answerTool(data);
  }

  onToolResult(data) {
    const tool = this.tools.get(data.toolCallId);
    if (!tool) return;
    tool.resultEl.textContent = shortJson(data.result, 300);
    tool.el.classList.toggle("tool-error", !!data.is_error);
  }

  /** A tool call waits for this person's decision: Approve and Deny buttons beside it. The first
   * decision anywhere wins (another tab, the REST API); the buttons go with approval_decided. */
  onApprovalRequired(data) {
    const tool = this.tools.get(data.toolCallId);
    if (!tool || tool.decisionEl) return;
    const decide = (kind) => () => {
      if (this.socket.send(kind, { toolCallId: data.toolCallId })) {
        for (const button of tool.decisionEl.querySelectorAll("button")) button.disabled = true;
      }
    };
    tool.decisionEl = h(
      "span",
      { class: "tool-approval", role: "group", "aria-label": `Approve ${data.tool}?` },
      h("button", { type: "button", class: "btn btn-primary tool-approve", onclick: decide("approve") }, "Approve"),
      h("button", { type: "button", class: "btn btn-danger tool-deny", onclick: decide("deny") }, "Deny"),
    );
    tool.resultEl.textContent = "waiting for your approval…";
    tool.el.append(tool.decisionEl);
  }

  onApprovalDecided(data) {
    const tool = this.tools.get(data.toolCallId);
    if (!tool) return;
    tool.decisionEl?.remove();
    tool.decisionEl = null;
    const words = { approved: "approved…", denied: "denied", timed_out: "not approved in time" };
    tool.resultEl.textContent = words[data.decision] || data.decision;
  }

  /** Answer a client tool call (once per call; the server keeps the first answer anyway). */
  answerTool(call) {
    const id = call.toolCallId;
    if (!id || this.toolsAnswered.has(id)) return;
    const run = CLIENT_TOOLS[call.tool];
    let result;
    let isError = false;
    try {
      result = run ? run(call.parameters || {}) : { error: `This page has no tool named ${call.tool}.` };
      isError = !run;
    } catch (err) {
      result = { error: String((err && err.message) || err) };
      isError = true;
    }
    if (this.socket.send("tool_result", { toolCallId: id, result, is_error: isError })) {
      this.toolsAnswered.add(id);
    }
  }

  // --- actions -------------------------------------------------------------------------------

  /** Send a message; ``attachments``: stored files ({file_id, name}) it carries. */
  send(content, attachments = []) {
    const clientId = uuid4();
    this.addUser({ clientId, content, status: "sending", attachments });
    this.unacked.set(clientId, content);
    if (attachments.length) this.unackedFiles.set(clientId, attachments);
    this.socket.send("user_message", { content, client_message_id: clientId, ...this.attachmentIds(clientId) });
    if (this.isAgentSession && this.conversation.status !== "active") {
      this.conversation.status = "active"; // a person's message resumes a stopped session
      this.view.onConversationChanged(this.conversation, this.agents);
    }
    this.scrollToEnd(true);
    this.updateControls();
  }

  /** Regenerate, continue or choose (``select``) a message: the server answers with a ``branch``
   * event (and the run's events), which redraws the page from the active path. */
  branch(action, record) {
    if (!record.id) return;
    if (!this.socket.send(action, { message_id: record.id })) {
      this.view.toast("Not connected; try again in a moment.", "error");
    }
  }

  /** Edit and resend: the new text is stored beside the old message and answered. */
  edit(record, content) {
    if (!record.id || !content.trim()) return;
    if (!this.socket.send("edit", { message_id: record.id, content, client_message_id: uuid4() })) {
      this.view.toast("Not connected; try again in a moment.", "error");
    }
  }

  onBranch(data) {
    if (data.run_id) this.branchRuns.add(data.run_id);
    if (data.action === "select") {
      this.reload();
      return;
    }
    if (data.action === "continue") return; // the continuation follows the cut reply
    // Regenerate, edit: the message and everything after it step off the active path.
    const record = this.records.get(data.message_id);
    if (!record) return;
    let el = record.el;
    while (el) {
      const next = el.nextElementSibling;
      if (el.dataset.messageId) this.records.delete(el.dataset.messageId);
      el.remove();
      el = next;
    }
  }

  async reload() {
    try {
      const detail = await this.api.getConversation(this.id);
      this.rebuild(detail.messages || []);
    } catch (err) {
      this.view.toast(err.message, "error");
    }
  }

  async stop() {
    if (this.socket.send("stop", {})) return;
    try {
      await this.api.stopConversation(this.id);
    } catch (err) {
      this.view.toast(err.message, "error");
    }
  }

  async rate(record, rating) {
    const next = record.opinion === rating ? null : rating;
    try {
      const result = await this.api.feedback(record.id, next);
      this.setOpinion(record, result.opinion);
    } catch (err) {
      this.view.toast(err.message, "error");
    }
  }

  updateControls() {
    const running = this.isAgentSession
      ? this.conversation.status === "active" && (this.runs.size > 0 || this.records.size > 0)
      : this.runs.size > 0;
    this.view.setRunning(running, this.isAgentSession);
  }

  // --- rendering -----------------------------------------------------------------------------

  agentInfo(agentId) {
    // The conversation's own list names its agents; the page's list adds what it lacks (colour).
    const known = { ...(this.view.agentInfo(agentId) || {}), ...(this.agents.get(agentId) || {}) };
    return Object.keys(known).length ? known : { name: "Agent", emoji: "🤖" };
  }

  nearEnd() {
    const list = this.list;
    return list.scrollHeight - list.scrollTop - list.clientHeight < 120;
  }

  scrollToEnd(follow) {
    if (follow) this.list.scrollTop = this.list.scrollHeight;
  }

  /** Put ``el`` in the list by its order key: after every item whose key is not greater. Keys are
   * seqs; a note said only here goes after everything known (``lastSeq + 0.5``), a message still
   * being sent at the very bottom (Infinity) until its seq is known. */
  append(el, key = this.placingKey()) {
    const follow = this.nearEnd();
    el.dataset.order = String(key);
    let before = this.list.lastElementChild;
    while (before && Number(before.dataset.order) > key) before = before.previousElementSibling;
    if (before) before.after(el);
    else this.list.prepend(el);
    this.scrollToEnd(follow);
  }

  placingKey() {
    if (typeof this.placing === "number") return this.placing;
    return (this.socket.lastSeq || 0) + 0.5;
  }

  /** A record's seq is known (its user_message event): move it there. */
  place(record, seq) {
    record.seq = seq;
    record.el.remove();
    this.append(record.el, seq);
  }

  attachmentIds(clientId) {
    const files = this.unackedFiles.get(clientId);
    return files && files.length ? { attachments: files.map((f) => f.file_id) } : {};
  }

  addUser({ id, clientId, content, seq, status, attachments }) {
    // What the person typed is shown as typed (plain text, line breaks kept), not as Markdown.
    const textEl = h("div", { class: "msg-text msg-plain" }, content);
    const files = Array.isArray(attachments) ? attachments : [];
    const chipsEl = h(
      "ul",
      { class: "attach-chips msg-attachments", hidden: !files.length, "aria-label": "Attached files" },
      ...files.map((f) => h("li", { class: "attach-chip", title: f.content_type || "" }, "📎 " + (f.name || "file"))),
    );
    const statusEl = h("span", { class: "msg-status" });
    const siblingsEl = h("span", { class: "msg-siblings", hidden: true });
    const editBtn = h("button", { type: "button", class: "msg-action msg-edit", title: "Edit and resend", "aria-label": "Edit and resend" }, "✎ Edit");
    editBtn.hidden = this.isAgentSession;
    const el = h(
      "li",
      { class: "msg msg-user", dataset: { role: "user" } },
      h("div", { class: "msg-head" }, h("span", { class: "msg-author" }, "You"), statusEl),
      textEl,
      chipsEl,
      h("div", { class: "msg-foot" }, siblingsEl, editBtn, copyButton(() => content, { label: "Copy message", className: "copy-msg" })),
    );
    const record = { kind: "user", el, textEl, statusEl, siblingsEl, id: null, clientId, seq, status: null, content };
    editBtn.addEventListener("click", () => this.openEditor(record));
    if (clientId) this.byClientId.set(clientId, record);
    if (id) this.bindUser(record, id);
    this.setStatus(record, status || "complete");
    // Sent from here and not yet numbered by the server: at the bottom until its seq is known.
    this.append(el, typeof seq === "number" ? seq : status === "sending" ? Infinity : this.placingKey());
    return record;
  }

  openEditor(record) {
    if (record.editor) return;
    const area = h("textarea", { class: "msg-edit-input", rows: "3", "aria-label": "Edited message" });
    area.value = record.content;
    const save = h("button", { type: "button", class: "btn btn-primary msg-edit-send" }, "Send");
    const cancel = h("button", { type: "button", class: "btn msg-edit-cancel" }, "Cancel");
    record.editor = h("div", { class: "msg-editor" }, area, h("div", { class: "msg-editor-actions" }, cancel, save));
    const close = () => {
      record.editor.remove();
      record.editor = null;
      record.textEl.hidden = false;
    };
    cancel.addEventListener("click", close);
    save.addEventListener("click", () => {
      const content = area.value;
      if (!content.trim()) return;
      close();
      this.edit(record, content);
    });
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        save.click();
      } else if (event.key === "Escape") close();
    });
    record.textEl.hidden = true;
    record.textEl.after(record.editor);
    area.focus();
  }

  /** "‹ 2/3 ›" on a message with siblings (other replies to the same message, other versions). */
  setSiblings(record, ids) {
    record.siblingIds = ids && ids.length ? ids : [record.id];
    const count = record.siblingIds.length;
    record.siblingsEl.hidden = count < 2;
    if (count < 2) return;
    const index = record.siblingIds.indexOf(record.id);
    const step = (delta, label, text) => {
      const target = record.siblingIds[index + delta];
      const button = h("button", { type: "button", class: `msg-action sib-${delta < 0 ? "prev" : "next"}`, "aria-label": label, title: label }, text);
      button.disabled = !target;
      button.addEventListener("click", () => target && this.branch("select", { id: target }));
      return button;
    };
    record.siblingsEl.replaceChildren(
      step(-1, "Previous version", "‹"),
      h("span", { class: "sib-count" }, `${index + 1}/${count}`),
      step(1, "Next version", "›"),
    );
  }

  bindUser(record, id) {
    record.id = id;
    record.el.dataset.messageId = id;
    this.records.set(id, record);
    if (record.status === "sending") this.setStatus(record, "complete");
  }

  addAgent({ id, agentId, status, runId }) {
    const agent = this.agentInfo(agentId);
    const textEl = h("div", { class: "msg-text msg-markdown" });
    const statusEl = h("span", { class: "msg-status" });
    const metaEl = h("span", { class: "msg-meta" });
    // Why the reply ended early, in words; ``actionsEl`` is where a "Continue" button goes.
    const cutActionsEl = h("span", { class: "msg-cut-actions" });
    const cutEl = h("div", { class: "msg-cut", hidden: true }, h("span", { class: "msg-cut-text" }), cutActionsEl);
    const errorEl = h("div", { class: "msg-error", hidden: true });
    const toolsEl = h("div", { class: "msg-tools" });
    const sourcesEl = h("div", { class: "msg-sources", hidden: true }); // metadata.sources (sources.js)
    const record = { kind: "agent", id, agentId, textEl, statusEl, metaEl, errorEl, toolsEl, sourcesEl, runId, opinion: null };
    record.view = new MarkdownView(textEl);
    record.cutEl = cutEl;
    record.cutActionsEl = cutActionsEl;
    record.view.onRender = () => {
      if (record.follow) this.scrollToEnd(true);
      record.follow = false;
    };
    const copy = copyButton(() => record.view.text, { label: "Copy message", className: "copy-msg" });
    const button = (kind, label, name) =>
      h("button", { type: "button", class: `fb fb-${kind}`, "aria-label": label, "aria-pressed": "false", title: label }, icon(name));
    const up = button("up", "Good reply", "thumbs-up");
    const down = button("down", "Bad reply", "thumbs-down");
    up.addEventListener("click", () => this.rate(record, "positive"));
    down.addEventListener("click", () => this.rate(record, "negative"));
    record.feedbackEl = h("span", { class: "msg-feedback", hidden: true }, up, down);
    record.siblingsEl = h("span", { class: "msg-siblings", hidden: true });
    record.regenerateEl = h("button", { type: "button", class: "msg-action msg-regenerate", title: "Regenerate", "aria-label": "Regenerate", hidden: true }, "↻ Regenerate");
    record.regenerateEl.addEventListener("click", () => this.branch("regenerate", record));
    record.upEl = up;
    record.downEl = down;
    record.el = h(
      "li",
      { class: "msg msg-agent", dataset: { role: "agent", messageId: id, agentId: agentId || "" } },
      h(
        "div",
        { class: "msg-head" },
        avatar(agent, "avatar-small"),
        h("span", { class: "msg-author" }, agent.name || "Agent"),
        statusEl,
      ),
      toolsEl,
      textEl,
      cutEl,
      errorEl,
      sourcesEl,
      h("div", { class: "msg-foot" }, record.siblingsEl, metaEl, copy, record.regenerateEl, record.feedbackEl),
    );
    if (agent.provider) this.setMeta(record, { provider: agent.provider, model: agent.model });
    this.records.set(id, record);
    if (runId) this.byRunId.set(runId, record);
    this.setStatus(record, status || "streaming");
    this.append(record.el);
    return record;
  }

  addNote(text, code) {
    this.append(h("li", { class: "msg msg-note", dataset: { code: code || "" } }, text));
  }

  setStatus(record, status) {
    record.status = status;
    record.el.dataset.status = status;
    record.statusEl.textContent = STATUS_LABELS[status] || "";
    if (record.kind === "agent") {
      record.feedbackEl.hidden = !(FINAL.has(status) && status !== "error");
      record.regenerateEl.hidden = !FINAL.has(status) || this.isAgentSession;
    }
  }

  /** Replace an agent reply's text (Markdown): now, or at the next animation frame. */
  setText(record, text, { now = false } = {}) {
    record.view.set(text);
    if (now) record.view.flush();
  }

  setMeta(record, meta) {
    const text = describeMeta(meta);
    if (text) record.metaEl.textContent = text;
    if (meta && "sources" in meta && record.sourcesEl) renderSources(record.sourcesEl, meta.sources);
    const reason = meta && meta.finish_reason;
    if (reason && record.cutEl) {
      record.cutEl.hidden = !FINISH_TEXT[reason];
      record.cutEl.dataset.finish = reason;
      record.cutEl.querySelector(".msg-cut-text").textContent = FINISH_TEXT[reason] || "";
      if (reason === "length" && !this.isAgentSession && !record.continueEl) {
        record.continueEl = h("button", { type: "button", class: "btn msg-continue" }, "Continue");
        record.continueEl.addEventListener("click", () => this.branch("continue", record));
        record.cutActionsEl.append(record.continueEl);
      }
      if (FINISH_TEXT[reason]) this.view.onReplyCut?.(record, reason);
    }
  }

  setOpinion(record, opinion) {
    record.opinion = opinion || null;
    record.el.dataset.opinion = record.opinion || "";
    record.upEl.setAttribute("aria-pressed", String(record.opinion === "positive"));
    record.downEl.setAttribute("aria-pressed", String(record.opinion === "negative"));
  }
}
