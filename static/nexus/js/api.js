// The REST API, with the session cookie (same origin) and Django's CSRF token on unsafe methods.
// Every error comes back as an ApiError carrying the server's {detail, code, errors}.

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super((body && body.detail) || `Request failed (${status})`);
    this.status = status;
    this.code = (body && body.code) || "http_" + status;
    this.errors = (body && body.errors) || null;
    this.retryAfter = retryAfter ? Number(retryAfter) : null;
  }
}

function csrfFromCookie() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export function createApi({ base, csrfToken, onSignedOut }) {
  async function request(method, path, body) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method !== "GET" && method !== "HEAD") {
      headers["X-CSRFToken"] = csrfFromCookie() || csrfToken;
    }
    let response;
    try {
      response = await fetch(base + path, init);
    } catch (err) {
      throw new ApiError(0, { detail: "The server cannot be reached.", code: "network" });
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data, response.headers.get("Retry-After"));
      if (response.status === 401 || (response.status === 403 && error.code === "not_authenticated")) {
        onSignedOut && onSignedOut();
      }
      throw error;
    }
    return data;
  }

  const results = (page) => (Array.isArray(page) ? page : (page && page.results) || []);

  return {
    request,
    listAgents: async () => results(await request("GET", "agents/?page_size=100")),
    createAgent: (fields) => request("POST", "agents/", fields),
    listProviders: () => request("GET", "providers/"),
    /** The sidebar's list: pinned first, then by last activity; `search` over titles and messages. */
    listConversations: async ({ search = "", archived = false } = {}) => {
      const query = new URLSearchParams({ page_size: "50" });
      if (search) query.set("search", search);
      if (archived) query.set("archived", "1");
      return results(await request("GET", `conversations/?${query}`));
    },
    createConversation: (fields) => request("POST", "conversations/", fields),
    getConversation: (id) => request("GET", `conversations/${id}/`),
    renameConversation: (id, title) => request("PATCH", `conversations/${id}/`, { title }),
    updateConversation: (id, fields) => request("PATCH", `conversations/${id}/`, fields),
    deleteConversation: (id) => request("DELETE", `conversations/${id}/`),
    setConversationAgent: (id, agentId) => request("POST", `conversations/${id}/agent/`, { agent_id: agentId }),
    generateTitle: (id) => request("POST", `conversations/${id}/generate-title/`),
    /** The automatic title after the first exchange: kept if the conversation has one already. */
    titleIfUntitled: (id) => request("POST", `conversations/${id}/generate-title/`, { mode: "untitled" }),
    exportUrl: (id, format) => `${base}conversations/${id}/export/?format=${format}`,
    stopConversation: (id) => request("POST", `conversations/${id}/stop/`, {}),
    /** Store a file (multipart, no JSON): the stored file, {id, name, content_type, size}. */
    uploadFile: async (file) => {
      const form = new FormData();
      form.append("file", file, file.name);
      form.append("folder", "attachments");
      let response;
      try {
        response = await fetch(base + "files/", {
          method: "POST",
          body: form,
          credentials: "same-origin",
          headers: { Accept: "application/json", "X-CSRFToken": csrfFromCookie() || csrfToken },
        });
      } catch (err) {
        throw new ApiError(0, { detail: "The server cannot be reached.", code: "network" });
      }
      let data = null;
      try {
        data = await response.json();
      } catch (err) {
        data = null;
      }
      if (!response.ok) throw new ApiError(response.status, data, response.headers.get("Retry-After"));
      return data;
    },
    feedback: (messageId, rating) => request("POST", `messages/${messageId}/feedback/`, { rating }),
  };
}

/** A message from an ApiError, with its field errors flattened. */
export function describeError(error) {
  if (!(error instanceof ApiError)) return String((error && error.message) || error);
  const parts = [error.message];
  const collect = (value, prefix) => {
    if (Array.isArray(value)) value.forEach((v) => collect(v, prefix));
    else if (value && typeof value === "object")
      Object.entries(value).forEach(([k, v]) => collect(v, k === "non_field_errors" ? prefix : k));
    else if (value) parts.push(prefix ? `${prefix}: ${value}` : String(value));
  };
  if (error.errors) collect(error.errors, "");
  // The server's own message usually says when already ("Try again in 56 s."): say it once.
  if (error.status === 429 && error.retryAfter && !/try again/i.test(error.message)) {
    parts.push(`Try again in ${error.retryAfter} s.`);
  }
  return parts.join(" ");
}
