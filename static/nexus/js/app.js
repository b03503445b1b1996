// The Nexus chat page: agents, conversations, agent-to-agent sessions, and the open conversation.

import { createApi, describeError } from "./api.js";
import { ChatSession } from "./chat.js";
import { $, avatar, emojiSupported, formatWhen, h, icon } from "./dom.js";
import { setupApiKeys } from "./keys.js";
import { setupKnowledge } from "./knowledge.js";

const config = JSON.parse(document.getElementById("nexus-config").textContent);
const FALLBACK_PROVIDERS = ["local", "ollama", "openai", "gemini"];
const STATUS_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  connected: "Connected",
  offline: "Offline",
  closed: "Disconnected",
};

const els = {
  conn: $("#conn-state"),
  sidebar: $("#sidebar"),
  sidebarToggle: $("#sidebar-toggle"),
  scrim: $("#scrim"),
  agentList: $("#agent-list"),
  agentForm: $("#agent-form"),
  agentToggle: $("#new-agent-toggle"),
  providerSelect: $("#agent-provider"),
  conversationList: $("#conversation-list"),
  search: $("#conversation-search"),
  archivedToggle: $("#archived-toggle"),
  newChat: $("#new-chat"),
  sessionForm: $("#session-form"),
  sessionToggle: $("#new-session-toggle"),
  empty: $("#empty-state"),
  head: $("#chat-head"),
  title: $("#chat-title"),
  status: $("#chat-status"),
  chatAgents: $("#chat-agents"),
  agentPicker: $("#agent-picker"),
  agentPickerSelect: $("#agent-picker-select"),
  goal: $("#chat-goal"),
  renameBtn: $("#rename-btn"),
  renameForm: $("#rename-form"),
  titleBtn: $("#title-btn"),
  pinBtn: $("#pin-btn"),
  archiveBtn: $("#archive-btn"),
  exportMd: $("#export-md"),
  exportJson: $("#export-json"),
  deleteBtn: $("#delete-btn"),
  messages: $("#messages"),
  composer: $("#composer"),
  input: $("#composer-input"),
  sendBtn: $("#send-btn"),
  stopBtn: $("#stop-btn"),
  attachBtn: $("#attach-btn"),
  attachInput: $("#attach-input"),
  attachChips: $("#attach-chips"),
  toasts: $("#toasts"),
};

const state = {
  agents: [],
  conversations: [],
  selectedAgentId: localStorage.getItem("nexus.agent") || null,
  session: null,
  draft: null, // a new chat not stored yet: {agentId}; it becomes a conversation with its first message
  creating: false,
  attachments: [], // stored files the next message carries: [{file_id, name, content_type, size}]
  uploading: 0,
  search: "",
  showArchived: false,
};

const api = createApi({
  base: config.api,
  csrfToken: config.csrf_token,
  onSignedOut: () => {
    location.href = `${config.login_url}?next=${encodeURIComponent(location.pathname + location.hash)}`;
  },
});

// --- feedback to the person ----------------------------------------------------------------------

// One toast per distinct message: the same message again replaces the one shown (its timer starts
// over), it never stacks.
const liveToasts = new Map(); // `${kind}:${message}` -> {el, timer}

function toast(message, kind = "info") {
  const key = `${kind}:${message}`;
  const shown = liveToasts.get(key);
  if (shown) {
    clearTimeout(shown.timer);
    shown.el.remove();
  }
  const el = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  els.toasts.append(el);
  const timer = setTimeout(() => {
    el.remove();
    if (liveToasts.get(key)?.el === el) liveToasts.delete(key);
  }, kind === "error" ? 7000 : 4000);
  liveToasts.set(key, { el, timer });
}

function setConnection(status, detail = {}) {
  let text = STATUS_TEXT[status] || status;
  if (status === "waiting") text = `Reconnecting in ${Math.ceil((detail.retryInMs || 0) / 1000)} s`;
  if (status === "closed" && detail.code === 4003) text = "Signed out";
  if (status === "closed" && detail.code === 4001) text = "Conversation unavailable";
  else if (status === "closed" && detail.code !== 4003 && detail.error && detail.error.message) {
    text = `Disconnected: ${detail.error.message}`; // refused for good: say why, stop retrying
  }
  els.conn.dataset.state = status;
  els.conn.textContent = text;
  els.conn.title = detail.attempt ? `attempt ${detail.attempt}` : "";
  if (status === "closed" && detail.code === 4003) api.listAgents().catch(() => {}); // redirects if signed out
}

function showFormErrors(form, error) {
  const box = form.querySelector("[data-role=errors]");
  box.textContent = error ? describeError(error) : "";
  box.hidden = !error;
}

// --- agents --------------------------------------------------------------------------------------

function agentInfo(id) {
  return state.agents.find((agent) => agent.id === id) || null;
}

/** Agents that can answer first (active, cooling down), then paused and failing ones; by name. */
function agentsInOrder() {
  const rank = (agent) => (agent.status === "active" ? 0 : agent.status === "cooldown" ? 1 : 2);
  return [...state.agents].sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}

function renderAgents() {
  const usable = agentsInOrder().filter((agent) => agent.status !== "paused" && agent.status !== "error");
  if (!agentInfo(state.selectedAgentId) && usable.length) state.selectedAgentId = usable[0].id;
  els.agentList.replaceChildren(
    ...agentsInOrder().map((agent) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: "pick" + (agent.id === state.selectedAgentId ? " is-selected" : ""),
            "aria-pressed": String(agent.id === state.selectedAgentId),
            dataset: { agentId: agent.id, status: agent.status },
            onclick: () => selectAgent(agent.id),
          },
          avatar(agent),
          h(
            "span",
            { class: "pick-body" },
            h("span", { class: "pick-name" }, agent.name),
            h("span", { class: "pick-sub" }, `${agent.provider} · ${agent.model}`),
          ),
          agent.status !== "active" ? h("span", { class: `badge badge-${agent.status}` }, agent.status) : null,
        ),
      ),
    ),
  );
  if (!state.agents.length) els.agentList.append(h("li", { class: "muted" }, "No agents yet: create one."));
  const options = () =>
    state.agents.map((agent) => h("option", { value: agent.id }, `${agent.emoji || ""} ${agent.name}`.trim()));
  const [first, second] = [els.sessionForm.elements.agent_a, els.sessionForm.elements.agent_b];
  const keep = [first.value, second.value];
  first.replaceChildren(...options());
  second.replaceChildren(...options());
  first.value = keep[0] || (usable[0] && usable[0].id) || "";
  second.value = keep[1] || (usable[1] && usable[1].id) || (usable[0] && usable[0].id) || "";
}

function selectAgent(id) {
  state.selectedAgentId = id;
  localStorage.setItem("nexus.agent", id);
  renderAgents();
  if (state.draft) showDraft(); // the unsent new chat goes to the agent just picked
}

async function loadAgents() {
  try {
    state.agents = await api.listAgents();
  } catch (err) {
    toast(`Agents: ${describeError(err)}`, "error");
  }
  renderAgents();
}

let providersAsked = false;
async function loadProviders() {
  providersAsked = true;
  let names = FALLBACK_PROVIDERS;
  try {
    const providers = await api.listProviders();
    if (Array.isArray(providers) && providers.length) names = providers.map((p) => p.name);
  } catch (err) {
    /* the fallback list is fine for a form */
  }
  const chosen = els.providerSelect.value; // the person may have picked one meanwhile
  els.providerSelect.replaceChildren(...names.map((name) => h("option", { value: name }, name)));
  if (names.includes(chosen)) els.providerSelect.value = chosen;
}

function toggleForm(form, button, open) {
  form.hidden = !open;
  button.setAttribute("aria-expanded", String(open));
  if (open) form.querySelector("input, select, textarea").focus();
}

async function createAgent(event) {
  event.preventDefault();
  const form = els.agentForm;
  const values = Object.fromEntries(new FormData(form).entries());
  const fields = {
    name: values.name.trim(),
    emoji: values.emoji.trim(),
    provider: values.provider,
    model: values.model.trim(),
    system_prompt: values.system_prompt.trim(),
  };
  // Staff only: the page shows these two fields to staff alone (the server refuses them to others).
  const baseUrl = (values.base_url || "").trim();
  const keyVariable = (values.api_key_env || "").trim();
  if (baseUrl) fields.base_url = baseUrl;
  if (keyVariable) fields.config = { api_key_env: keyVariable };
  // A colour only when the person picked one (else the server derives one from the agent's id).
  if (form.elements.colour && form.elements.colour.dataset.picked === "true") fields.colour = values.colour;
  try {
    const agent = await api.createAgent(fields);
    showFormErrors(form, null);
    form.reset();
    delete form.elements.colour.dataset.picked;
    toggleForm(form, els.agentToggle, false);
    state.agents = [...state.agents, agent];
    selectAgent(agent.id);
    await loadAgents();
    toast(`${agent.name} is ready.`);
  } catch (err) {
    showFormErrors(form, err);
  }
}

// --- conversations ------------------------------------------------------------------------------

function conversationLabel(conversation) {
  if (conversation.title) return conversation.title;
  const names = (conversation.agents || []).map((a) => a.name).join(" ⇄ ");
  return names ? `Chat with ${names}` : "New conversation";
}

/** When a conversation last saw a message (its creation before the first). */
function lastActivity(conversation) {
  return conversation.last_message_at || conversation.created_at || "";
}

/** The server's order: pinned first, then the most recent activity. */
function sortConversations() {
  const when = (conversation) => Date.parse(lastActivity(conversation)) || 0;
  state.conversations.sort((a, b) => Number(!!b.pinned) - Number(!!a.pinned) || when(b) - when(a));
}

function renderConversations() {
  const current = state.session && state.session.id;
  els.conversationList.replaceChildren(
    ...state.conversations.map((conversation) =>
      h(
        "li",
        {},
        h(
          "a",
          {
            href: `#c=${conversation.id}`,
            class: "conv" + (conversation.id === current ? " is-selected" : ""),
            "aria-current": conversation.id === current ? "page" : null,
            dataset: { conversationId: conversation.id, sessionType: conversation.session_type },
          },
          h("span", { class: "avatars" }, (conversation.agents || []).slice(0, 3).map((a) => avatar(a))),
          h(
            "span",
            { class: "pick-body" },
            h(
              "span",
              { class: "conv-line" },
              conversation.pinned ? h("span", { class: "conv-pin", title: "Pinned", role: "img", "aria-label": "Pinned" }, icon("pin", 12)) : null,
              h("span", { class: "conv-title" }, conversationLabel(conversation)),
              lastActivity(conversation)
                ? h(
                    "time",
                    {
                      class: "conv-when",
                      datetime: lastActivity(conversation),
                      title: new Date(lastActivity(conversation)).toLocaleString(),
                    },
                    formatWhen(lastActivity(conversation)),
                  )
                : null,
            ),
            h(
              "span",
              { class: "pick-sub conv-preview" },
              conversation.preview ||
                (conversation.session_type === "agent_agent" ? `agents · ${conversation.status}` : conversation.status),
            ),
          ),
        ),
      ),
    ),
  );
  if (!state.conversations.length) {
    const empty = state.search
      ? "No conversation matches."
      : state.showArchived
        ? "No archived conversations."
        : "No conversations yet.";
    els.conversationList.append(h("li", { class: "muted" }, empty));
  }
}

let listRequest = 0;
async function loadConversations() {
  const ticket = ++listRequest; // typing fast: only the newest answer is shown
  try {
    const conversations = await api.listConversations({ search: state.search, archived: state.showArchived });
    if (ticket !== listRequest) return;
    state.conversations = conversations;
  } catch (err) {
    if (ticket !== listRequest) return;
    toast(`Conversations: ${describeError(err)}`, "error");
  }
  renderConversations();
}

function upsertConversation(conversation) {
  const index = state.conversations.findIndex((c) => c.id === conversation.id);
  if (index >= 0) state.conversations[index] = { ...state.conversations[index], ...conversation };
  else if (state.search || state.showArchived || conversation.archived) return; // not in the list shown
  else state.conversations.unshift(conversation);
  sortConversations();
  renderConversations();
}

/** A message just went by in conversation ``id``: it moves up the list with its preview. */
function noteActivity(id, text) {
  const known = state.conversations.find((c) => c.id === id);
  if (!known) return;
  const preview = text.replace(/\s+/g, " ").trim();
  const fields = { id, last_message_at: new Date().toISOString() };
  if (preview) fields.preview = preview.length > 100 ? `${preview.slice(0, 99)}…` : preview;
  upsertConversation(fields);
}

/** "New chat": an empty composer bound to the chosen agent; nothing is stored until it is used. */
function newChat() {
  const agent = agentInfo(state.selectedAgentId);
  if (!agent) {
    toast("Create or pick an agent first.", "error");
    return;
  }
  if (state.session) state.session.close();
  state.session = null;
  state.draft = { agentId: agent.id };
  showDraft();
  closeSidebar();
  els.input.focus();
}

function showDraft() {
  const agent = agentInfo(state.selectedAgentId);
  if (!agent || !state.draft) return;
  state.draft.agentId = agent.id;
  cancelRename();
  if (location.hash) history.replaceState(null, "", location.pathname);
  els.title.textContent = "New chat";
  els.chatAgents.replaceChildren(
    h(
      "span",
      { class: "chip", title: `${agent.provider} · ${agent.model}`, dataset: { agentId: agent.id } },
      avatar(agent, "avatar-small"),
      h("span", { class: "chip-name" }, agent.name),
      h("span", { class: "chip-sub" }, `${agent.provider} · ${agent.model}`),
    ),
  );
  els.goal.hidden = true;
  els.status.hidden = true;
  els.empty.hidden = true;
  els.head.hidden = false;
  els.head.dataset.draft = "true";
  els.composer.hidden = false;
  els.composer.dataset.agentId = agent.id;
  els.stopBtn.hidden = true;
  els.input.placeholder = `Message ${agent.name}…`;
  els.messages.replaceChildren();
  setConnection("idle");
  renderConversations();
}

/** The first message of a new chat: the conversation is created now, then the message is sent. */
async function createFromDraft(content) {
  const agentId = state.draft.agentId;
  state.creating = true;
  els.sendBtn.disabled = true;
  try {
    const conversation = await api.createConversation({ session_type: "human_agent", agents: [agentId] });
    state.draft = null;
    upsertConversation(conversation);
    const session = openConversation(conversation.id);
    session.send(content, takeAttachments());
    noteActivity(conversation.id, content);
    return true;
  } catch (err) {
    toast(describeError(err), "error"); // the draft and its text stay: sending again retries
    return false;
  } finally {
    state.creating = false;
    els.sendBtn.disabled = false;
  }
}

async function startSession(event) {
  event.preventDefault();
  const form = els.sessionForm;
  const values = Object.fromEntries(new FormData(form).entries());
  const settings = {
    max_turns: Number(values.max_turns) || 6,
    cooldown_seconds: Number(values.cooldown_seconds) || 0,
  };
  if (values.goal.trim()) settings.goal = values.goal.trim();
  if (values.termination_phrase.trim()) settings.termination_phrase = values.termination_phrase.trim();
  const opening = values.opening.trim() || values.goal.trim() || "Let's begin.";
  try {
    const conversation = await api.createConversation({
      session_type: "agent_agent",
      agents: [values.agent_a, values.agent_b],
      title: (values.goal.trim() || "Agent session").slice(0, 80),
      settings,
    });
    showFormErrors(form, null);
    toggleForm(form, els.sessionToggle, false);
    upsertConversation(conversation);
    const session = openConversation(conversation.id);
    session.send(opening);
  } catch (err) {
    showFormErrors(form, err);
  }
}

// --- the open conversation ----------------------------------------------------------------------

const view = {
  messages: els.messages,
  toast,
  restoreDraft(text) {
    if (!els.input.value.trim()) els.input.value = text; // never over what was typed since
  },
  agentInfo,
  onSocketStatus: setConnection,
  onConversationChanged(conversation, agents) {
    if (!conversation) return;
    els.title.textContent = conversationLabel({ ...conversation, agents: [...agents.values()] });
    els.status.textContent = conversation.status === "expired" ? "idle" : conversation.status;
    els.status.title = conversation.status === "expired" ? "Expired after inactivity: a new message revives it." : "";
    els.status.dataset.status = conversation.status;
    els.status.hidden = conversation.status === "active" && conversation.session_type !== "agent_agent";
    const separator = conversation.session_type === "agent_agent" ? " ⇄ " : ", ";
    els.chatAgents.replaceChildren(
      ...[...agents.values()].flatMap((agent, index) => [
        ...(index ? [h("span", { class: "sep", "aria-hidden": "true" }, separator)] : []),
        h(
          "span",
          { class: "chip", title: `${agent.provider} · ${agent.model}`, dataset: { agentId: agent.id } },
          avatar(agent, "avatar-small"),
          h("span", { class: "chip-name" }, agent.name),
          h("span", { class: "chip-sub" }, `${agent.provider} · ${agent.model}`),
        ),
      ]),
    );
    renderAgentPicker(conversation, agents);
    const goal = conversation.settings && conversation.settings.goal;
    els.goal.hidden = !goal;
    els.goal.textContent = goal ? `Goal: ${goal}` : "";
    els.input.placeholder =
      conversation.session_type === "agent_agent"
        ? "Interject, or resume the session…"
        : conversation.status === "expired"
          ? "This chat went idle: send a message to continue it…"
          : "Message…";
    upsertConversation({ id: conversation.id, title: conversation.title, status: conversation.status });
    showFiling(conversation);
  },
  onRunFinished(data, record) {
    const session = state.session;
    if (!session || !record) return;
    noteActivity(session.id, record.textEl.textContent || ""); // the rendered reply: plain text
    autoTitle(session);
  },
  setRunning(running, agentSession) {
    els.stopBtn.hidden = !running;
    els.stopBtn.textContent = agentSession ? "Stop session" : "Stop";
  },
};

// --- who answers the open chat ---------------------------------------------------------------------

/** "Answered by": a person's chat only; the conversation's primary agent, and the agents that can
 * take over (the sidebar's pick is for new chats). */
function renderAgentPicker(conversation, agents) {
  const human = conversation.session_type !== "agent_agent";
  els.agentPicker.hidden = !human;
  if (!human) return;
  const primary = [...agents.values()][0] || null;
  const choices = agentsInOrder().filter(
    (agent) => (agent.status !== "paused" && agent.status !== "error") || (primary && agent.id === primary.id),
  );
  if (primary && !choices.some((agent) => agent.id === primary.id)) choices.unshift(primary);
  els.agentPickerSelect.replaceChildren(
    ...choices.map((agent) =>
      h("option", { value: agent.id }, `${(emojiSupported() && agent.emoji) || ""} ${agent.name}`.trim()),
    ),
  );
  els.agentPickerSelect.value = primary ? primary.id : "";
}

async function switchAgent() {
  const session = state.session;
  const agentId = els.agentPickerSelect.value;
  if (!session || !session.conversation || !agentId) return;
  els.agentPickerSelect.disabled = true;
  try {
    const conversation = await api.setConversationAgent(session.id, agentId);
    if (state.session !== session) return;
    session.setAgents(conversation.agents.map((agent) => ({ ...agent, id: agent.agent_id })));
    // Every tab (this one too) notes the change from its system event agent_changed.
    upsertConversation(conversation);
  } catch (err) {
    toast(describeError(err), "error");
    if (state.session === session && session.conversation) renderAgentPicker(session.conversation, session.agents);
  } finally {
    els.agentPickerSelect.disabled = false;
  }
}

function openConversation(id) {
  if (state.session && state.session.id === id) return state.session;
  if (state.session) state.session.close();
  state.draft = null;
  delete els.head.dataset.draft;
  delete els.composer.dataset.agentId;
  cancelRename();
  const session = new ChatSession({ id, config, api, view });
  state.session = session;
  if (location.hash !== `#c=${id}`) history.replaceState(null, "", `#c=${id}`);
  const known = state.conversations.find((c) => c.id === id);
  els.title.textContent = known ? conversationLabel(known) : "…";
  els.chatAgents.replaceChildren();
  els.agentPicker.hidden = true;
  els.goal.hidden = true;
  els.status.hidden = true;
  els.empty.hidden = true;
  els.head.hidden = false;
  els.composer.hidden = false;
  els.stopBtn.hidden = true;
  els.exportMd.href = api.exportUrl(id, "md");
  els.exportJson.href = api.exportUrl(id, "json");
  if (known) showFiling(known);
  session.start();
  renderConversations();
  closeSidebar();
  els.input.focus();
  return session;
}

function closeConversation() {
  if (state.session) state.session.close();
  state.session = null;
  state.draft = null;
  delete els.head.dataset.draft;
  history.replaceState(null, "", location.pathname);
  els.empty.hidden = false;
  els.head.hidden = true;
  els.composer.hidden = true;
  els.messages.replaceChildren();
  setConnection("idle");
  renderConversations();
}

// --- attachments: files uploaded through /api/files/, sent with the next message ----------------

function renderAttachments() {
  els.attachChips.replaceChildren(
    ...state.attachments.map((file, index) =>
      h(
        "li",
        { class: "attach-chip" },
        "📎 " + file.name,
        h(
          "button",
          {
            type: "button",
            class: "attach-remove",
            "aria-label": `Remove ${file.name}`,
            onclick: () => {
              state.attachments.splice(index, 1);
              renderAttachments();
            },
          },
          "×",
        ),
      ),
    ),
  );
  els.attachChips.hidden = state.attachments.length === 0;
}

function takeAttachments() {
  const files = state.attachments;
  state.attachments = [];
  renderAttachments();
  return files;
}

async function attachFiles() {
  const chosen = Array.from(els.attachInput.files || []);
  els.attachInput.value = "";
  for (const file of chosen) {
    state.uploading += 1;
    try {
      const stored = await api.uploadFile(file);
      state.attachments.push({ file_id: stored.id, name: stored.name, content_type: stored.content_type, size: stored.size });
      renderAttachments();
    } catch (err) {
      toast(`${file.name}: ${describeError(err)}`, "error");
    } finally {
      state.uploading -= 1;
    }
  }
}

async function sendMessage(event) {
  event.preventDefault();
  const content = els.input.value.trim();
  if (!content || state.creating) return;
  if (state.uploading) {
    toast("Wait for the files to finish uploading.", "info");
    return;
  }
  const session = state.session;
  if (!session) {
    if (!state.draft) newChat();
    if (!state.draft || !(await createFromDraft(content))) return;
  } else {
    session.send(content, takeAttachments());
    noteActivity(session.id, content);
  }
  els.input.value = "";
  autosize();
}

// --- titles, pins, the archive -------------------------------------------------------------------

const titled = new Set(); // conversations whose automatic title was already asked for

/** After a reply in an untitled chat: its title from the first message (the server keeps any title). */
async function autoTitle(session) {
  const conversation = session.conversation;
  if (!conversation || conversation.title || conversation.session_type !== "human_agent") return;
  if (titled.has(session.id)) return;
  titled.add(session.id);
  try {
    const result = await api.titleIfUntitled(session.id);
    if (!result.title) return;
    conversation.title = result.title;
    if (state.session === session && els.renameForm.hidden) els.title.textContent = result.title;
    upsertConversation({ id: session.id, title: result.title });
  } catch (err) {
    /* the title can wait: the list shows the agent's name meanwhile */
  }
}

/** The pin and archive buttons for the open conversation. */
function showFiling(conversation) {
  const known = state.conversations.find((c) => c.id === conversation.id) || {};
  const pinned = conversation.pinned ?? known.pinned ?? false;
  const archived = conversation.archived ?? known.archived ?? false;
  els.pinBtn.textContent = pinned ? "Unpin" : "Pin";
  els.pinBtn.setAttribute("aria-pressed", String(!!pinned));
  els.archiveBtn.textContent = archived ? "Unarchive" : "Archive";
  els.archiveBtn.setAttribute("aria-pressed", String(!!archived));
}

async function fileConversation(fields) {
  const session = state.session;
  if (!session) return;
  try {
    const conversation = await api.updateConversation(session.id, fields);
    if (session.conversation) Object.assign(session.conversation, { pinned: conversation.pinned, archived: conversation.archived });
    showFiling(conversation);
    if ("archived" in fields) {
      // It leaves the list it was in (or joins it): the list is asked again.
      toast(conversation.archived ? "Conversation archived." : "Conversation back in the list.");
      await loadConversations();
    } else {
      upsertConversation(conversation);
    }
  } catch (err) {
    toast(describeError(err), "error");
  }
}

let searchTimer = null;
function onSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    const search = els.search.value.trim();
    if (search === state.search) return;
    state.search = search;
    loadConversations();
  }, 250);
}

function toggleArchived() {
  state.showArchived = !state.showArchived;
  els.archivedToggle.setAttribute("aria-pressed", String(state.showArchived));
  els.archivedToggle.classList.toggle("is-on", state.showArchived);
  loadConversations();
}

function startRename() {
  if (!state.session) return;
  els.renameForm.elements.title.value = els.title.textContent;
  els.title.hidden = true;
  els.renameForm.hidden = false;
  els.renameForm.elements.title.select();
}

function cancelRename() {
  els.renameForm.hidden = true;
  els.title.hidden = false;
}

async function saveRename(event) {
  event.preventDefault();
  const title = els.renameForm.elements.title.value.trim();
  const session = state.session;
  if (!title || !session) return;
  try {
    const conversation = await api.renameConversation(session.id, title);
    if (session.conversation) session.conversation.title = conversation.title;
    els.title.textContent = conversation.title;
    upsertConversation(conversation);
    cancelRename();
  } catch (err) {
    toast(describeError(err), "error");
  }
}

async function suggestTitle() {
  const session = state.session;
  if (!session) return;
  els.titleBtn.disabled = true;
  try {
    const result = await api.generateTitle(session.id);
    if (session.conversation) session.conversation.title = result.title;
    els.title.textContent = result.title;
    upsertConversation({ id: session.id, title: result.title });
  } catch (err) {
    toast(describeError(err), "error");
  } finally {
    els.titleBtn.disabled = false;
  }
}

let deleteArmed = null;
async function deleteConversation() {
  const session = state.session;
  if (!session) return;
  if (deleteArmed !== session.id) {
    // Two clicks, no dialog: the first arms the button for a few seconds.
    deleteArmed = session.id;
    els.deleteBtn.textContent = "Confirm delete";
    els.deleteBtn.classList.add("is-armed");
    setTimeout(() => {
      deleteArmed = null;
      els.deleteBtn.textContent = "Delete";
      els.deleteBtn.classList.remove("is-armed");
    }, 4000);
    return;
  }
  deleteArmed = null;
  els.deleteBtn.textContent = "Delete";
  els.deleteBtn.classList.remove("is-armed");
  try {
    await api.deleteConversation(session.id);
    state.conversations = state.conversations.filter((c) => c.id !== session.id);
    closeConversation();
    toast("Conversation deleted.");
  } catch (err) {
    toast(describeError(err), "error");
  }
}

// --- layout -------------------------------------------------------------------------------------

function openSidebar() {
  els.sidebar.classList.add("is-open");
  els.scrim.hidden = false;
  els.sidebarToggle.setAttribute("aria-expanded", "true");
}

function closeSidebar() {
  els.sidebar.classList.remove("is-open");
  els.scrim.hidden = true;
  els.sidebarToggle.setAttribute("aria-expanded", "false");
}

function autosize() {
  els.input.style.height = "auto";
  els.input.style.height = `${Math.min(els.input.scrollHeight, 200)}px`;
}

function routeFromHash() {
  const match = location.hash.match(/^#c=([0-9a-f-]{36})$/i);
  if (match) openConversation(match[1].toLowerCase());
}

function bind() {
  els.sidebarToggle.addEventListener("click", () =>
    els.sidebar.classList.contains("is-open") ? closeSidebar() : openSidebar(),
  );
  els.scrim.addEventListener("click", closeSidebar);
  els.agentToggle.addEventListener("click", () => {
    // Provider checks can take a moment: ask only when someone is about to create an agent.
    if (!providersAsked) loadProviders();
    toggleForm(els.agentForm, els.agentToggle, els.agentForm.hidden);
  });
  els.agentForm.addEventListener("submit", createAgent);
  els.agentForm.elements.colour.addEventListener("input", (event) => {
    event.target.dataset.picked = "true";
  });
  els.agentForm.querySelector("[data-action=cancel]").addEventListener("click", () =>
    toggleForm(els.agentForm, els.agentToggle, false),
  );
  els.sessionToggle.addEventListener("click", () =>
    toggleForm(els.sessionForm, els.sessionToggle, els.sessionForm.hidden),
  );
  els.sessionForm.addEventListener("submit", startSession);
  els.sessionForm.querySelector("[data-action=cancel]").addEventListener("click", () =>
    toggleForm(els.sessionForm, els.sessionToggle, false),
  );
  els.newChat.addEventListener("click", newChat);
  els.composer.addEventListener("submit", sendMessage);
  els.attachBtn.addEventListener("click", () => els.attachInput.click());
  els.attachInput.addEventListener("change", attachFiles);
  els.input.addEventListener("input", autosize);
  els.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      els.composer.requestSubmit();
    }
  });
  els.stopBtn.addEventListener("click", () => state.session && state.session.stop());
  els.agentPickerSelect.addEventListener("change", switchAgent);
  els.renameBtn.addEventListener("click", startRename);
  els.renameForm.addEventListener("submit", saveRename);
  els.renameForm.querySelector("[data-action=cancel]").addEventListener("click", cancelRename);
  els.titleBtn.addEventListener("click", suggestTitle);
  els.pinBtn.addEventListener("click", () => fileConversation({ pinned: els.pinBtn.getAttribute("aria-pressed") !== "true" }));
  els.archiveBtn.addEventListener("click", () =>
    fileConversation({ archived: els.archiveBtn.getAttribute("aria-pressed") !== "true" }),
  );
  els.search.addEventListener("input", onSearch);
  els.archivedToggle.addEventListener("click", toggleArchived);
  els.deleteBtn.addEventListener("click", deleteConversation);
  window.addEventListener("hashchange", routeFromHash);
  window.addEventListener("pagehide", () => state.session && state.session.close());
  window.addEventListener("pageshow", (event) => event.persisted && location.reload());
}

async function boot() {
  bind();
  setConnection("idle");
  els.providerSelect.replaceChildren(...FALLBACK_PROVIDERS.map((name) => h("option", { value: name }, name)));
  await Promise.all([loadAgents(), loadConversations(), setupApiKeys({ api, toast }), setupKnowledge({ api, toast, base: config.api })]);
  routeFromHash();
  document.body.dataset.ready = "true";
}

boot();
