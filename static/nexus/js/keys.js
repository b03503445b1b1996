// The "API keys" panel: create a personal API key (its secret is shown once), list and revoke them.
// Keys are managed over REST (/api/keys/) with the page's session; docs/v1.md.

import { describeError } from "./api.js";
import { $, formatWhen, h } from "./dom.js";

export function setupApiKeys({ api, toast }) {
  const els = {
    toggle: $("#new-key-toggle"),
    form: $("#key-form"),
    list: $("#key-list"),
    secret: $("#key-secret"),
    secretValue: $("#key-secret-value"),
  };
  if (!els.form) return;
  const errors = els.form.querySelector("[data-role=errors]");

  function showErrors(error) {
    errors.hidden = !error;
    errors.textContent = error ? describeError(error) : "";
  }

  function toggle(open) {
    els.form.hidden = !open;
    els.toggle.setAttribute("aria-expanded", String(open));
    if (open) els.form.elements.name.focus();
  }

  function render(keys) {
    if (!keys.length) {
      els.list.replaceChildren(h("li", { class: "key-empty" }, "No keys yet."));
      return;
    }
    els.list.replaceChildren(
      ...keys.map((key) => {
        const when = key.expires_at ? `expires ${formatWhen(key.expires_at)}` : "never expires";
        const revoke =
          key.status === "active"
            ? h("button", { type: "button", class: "btn btn-ghost btn-small btn-danger", onclick: () => revokeKey(key) }, "Revoke")
            : null;
        return h(
          "li",
          { class: "key-item", dataset: { id: key.id, status: key.status } },
          h(
            "div",
            { class: "key-main" },
            h("span", { class: "key-name" }, key.name),
            h("code", { class: "key-prefix" }, `${key.prefix}…`),
          ),
          h("div", { class: "key-meta" }, `${key.scopes.join(", ")} · ${key.status === "active" ? when : key.status}`),
          revoke,
        );
      }),
    );
  }

  async function load() {
    try {
      const page = await api.request("GET", "keys/");
      render(page.results || []);
    } catch (err) {
      toast(describeError(err), "error");
    }
  }

  async function createKey(event) {
    event.preventDefault();
    const form = els.form;
    const scopes = [];
    if (form.elements.scope_v1.checked) scopes.push("v1");
    if (form.elements.scope_api.checked) scopes.push("api");
    const days = form.elements.expires_in_days.value.trim();
    const body = { name: form.elements.name.value.trim(), scopes };
    body.expires_in_days = days ? Number(days) : null;
    try {
      const created = await api.request("POST", "keys/", body);
      showErrors(null);
      form.reset();
      toggle(false);
      els.secretValue.textContent = created.key;
      els.secret.hidden = false;
      await load();
    } catch (err) {
      showErrors(err);
    }
  }

  async function revokeKey(key) {
    if (!window.confirm(`Revoke the key "${key.name}"? Programs using it stop working.`)) return;
    try {
      await api.request("DELETE", `keys/${key.id}/`);
      toast(`The key "${key.name}" is revoked.`);
      await load();
    } catch (err) {
      toast(describeError(err), "error");
    }
  }

  els.toggle.addEventListener("click", () => toggle(els.form.hidden));
  els.form.addEventListener("submit", createKey);
  els.form.querySelector("[data-action=cancel]").addEventListener("click", () => toggle(false));
  els.secret.querySelector("[data-action=copy]").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(els.secretValue.textContent);
      toast("Copied.");
    } catch (err) {
      toast("Select the key and copy it by hand.", "error");
    }
  });
  els.secret.querySelector("[data-action=dismiss]").addEventListener("click", () => {
    els.secretValue.textContent = ""; // the secret leaves the page
    els.secret.hidden = true;
  });
  return load();
}
