// servicelab's UI: every change goes to the lab's JSON API with the session's CSRF token.
//
// Markup asks for behaviour with data attributes, so pages carry no inline script (the
// Content-Security-Policy forbids it):
//   data-api-method + data-path   on a <form> or <button>: send that request to the API
//   data-body="json"              send the form's fields as a JSON body
//   data-confirm                  ask first
//   data-then                     after success: reload | refresh:<selector> | go:<path> |
//                                 secret-reload (show the new token once, then reload)
//   data-deploy, data-upload, data-project-token, #logs   the richer forms below
(() => {
  "use strict";

  const body = document.body;
  const base = body.dataset.base || "";
  const csrf = body.dataset.csrf || "";

  // -- talking to the API ---------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function readEnvelope(response) {
    let payload = null;
    try {
      payload = await response.json();
    } catch (_) {
      payload = null;
    }
    if (!response.ok) {
      const message =
        (payload && payload.errors && payload.errors.message) ||
        `The lab answered HTTP ${response.status}.`;
      if (response.status === 401) {
        const next = encodeURIComponent(location.pathname + location.search);
        location.assign(`${base}/login?next=${next}`);
      }
      throw new ApiError(message, response.status);
    }
    return payload || {};
  }

  async function api(method, path, data) {
    const headers = { Accept: "application/json", "X-CSRF-Token": csrf };
    const init = { method, headers, credentials: "same-origin" };
    if (data !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(data);
    }
    let response;
    try {
      response = await fetch(base + path, init);
    } catch (_) {
      throw new ApiError("The lab did not answer: check the connection and try again.", 0);
    }
    return readEnvelope(response);
  }

  // -- messages -------------------------------------------------------------------------

  const flashBox = document.getElementById("flash");

  function flash(message, kind = "ok") {
    if (!flashBox || !message) return;
    const item = document.createElement("div");
    item.className = `flash-item ${kind}`;
    item.setAttribute("role", kind === "error" ? "alert" : "status");
    const text = document.createElement("span");
    text.textContent = message;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "icon";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "✕";
    close.addEventListener("click", () => item.remove());
    item.append(text, close);
    flashBox.append(item);
    if (kind !== "error") setTimeout(() => item.remove(), 6000);
  }

  // -- generic API forms and buttons ----------------------------------------------------

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, (_, key) => encodeURIComponent(values[key] ?? ""));
  }

  function formValues(form) {
    const values = {};
    for (const element of form.elements) {
      if (!element.name || element.disabled || element.type === "submit") continue;
      if (element.type === "checkbox") {
        values[element.name] = element.checked;
      } else if (element.type === "radio") {
        if (element.checked) values[element.name] = element.value;
      } else if (element.type === "password") {
        values[element.name] = element.value; // spaces are part of a password
      } else {
        values[element.name] = element.value.trim();
      }
    }
    return values;
  }

  function jsonBody(form, values, usedInPath) {
    const out = {};
    for (const [key, value] of Object.entries(values)) {
      if (usedInPath.has(key) || value === "") continue;
      const element = form.elements[key];
      const numeric = element && (element.type === "number" || "number" in element.dataset);
      out[key] = numeric && typeof value === "string" ? Number(value) : value;
    }
    return out;
  }

  function refresh(selector) {
    const target = document.querySelector(selector);
    if (target && window.htmx) window.htmx.trigger(target, "refresh");
  }

  function then(action, payload) {
    if (!action) return;
    const data = payload && payload.data;
    if (action === "reload") {
      location.reload();
    } else if (action.startsWith("refresh:")) {
      refresh(action.slice("refresh:".length));
    } else if (action.startsWith("go:")) {
      const values = data && typeof data === "object" ? data : {};
      location.assign(base + fill(action.slice(3), values));
    } else if (action === "secret-reload") {
      showSecret(typeof data === "string" ? data : data.token, () => location.reload());
    }
  }

  async function runApi(element, form) {
    const confirmText = element.dataset.confirm;
    if (confirmText && !window.confirm(confirmText)) return;
    // An unnamed input with data-same-as="<name>" must repeat that field (passwords).
    const mismatch = form && [...form.querySelectorAll("[data-same-as]")].find(
      (input) => input.value !== form.elements[input.dataset.sameAs].value,
    );
    if (mismatch) {
      flash("The two new passwords differ: type the same one twice.", "error");
      return;
    }
    const values = form ? formValues(form) : {};
    const template = element.dataset.path;
    const usedInPath = new Set([...template.matchAll(/\{(\w+)\}/g)].map((m) => m[1]));
    const path = fill(template, values);
    const data = form && element.dataset.body === "json" ? jsonBody(form, values, usedInPath) : undefined;
    const busy = form ? form.querySelector("[type=submit]") : element;
    if (busy) busy.disabled = true;
    try {
      const payload = await api(element.dataset.apiMethod, path, data);
      flash(payload.metadata && payload.metadata.message);
      if (form) form.reset();
      then(element.dataset.then, payload);
    } catch (error) {
      flash(error.message, "error");
    } finally {
      if (busy) busy.disabled = false;
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.matches("form[data-api-method]")) {
      event.preventDefault();
      if (form.reportValidity()) runApi(form, form);
    } else if (form.matches("form[data-deploy]")) {
      event.preventDefault();
      deploy(form);
    } else if (form.matches("form[data-upload]")) {
      event.preventDefault();
      upload(form);
    } else if (form.matches("form[data-project-token]")) {
      event.preventDefault();
      createProjectToken(form);
    }
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-api-method]");
    if (button && !button.form) {
      event.preventDefault();
      const menu = button.closest("details");
      if (menu) menu.open = false;
      runApi(button, null);
      return;
    }
    const opener = event.target.closest("[data-open-dialog]");
    if (opener) {
      const menu = opener.closest("details");
      if (menu) menu.open = false;
      openDialog(opener.dataset.openDialog);
      return;
    }
    const closer = event.target.closest("[data-close-dialog]");
    if (closer) {
      closer.closest("dialog").close();
      return;
    }
    const copier = event.target.closest("[data-copy]");
    if (copier) {
      copy(document.querySelector(copier.dataset.copy).textContent, copier);
      return;
    }
    const adder = event.target.closest("[data-add-row]");
    if (adder) {
      addRow(document.querySelector(adder.dataset.addRow));
      return;
    }
    const remover = event.target.closest("[data-remove-row]");
    if (remover) {
      const row = remover.closest("tr");
      const rows = row.parentElement.querySelectorAll("tr");
      if (rows.length > 1) row.remove();
      else row.querySelectorAll("input").forEach((input) => (input.type === "checkbox" ? (input.checked = false) : (input.value = "")));
    }
  });

  // Close open menus on a click elsewhere.
  document.addEventListener("click", (event) => {
    document.querySelectorAll("details.usermenu[open], details.more[open]").forEach((menu) => {
      if (!menu.contains(event.target)) menu.open = false;
    });
  });

  // A table that refreshes itself must not close a menu the user has open.
  document.addEventListener("htmx:beforeRequest", (event) => {
    const target = event.detail.elt;
    if (target && target.querySelector && target.querySelector("details[open]")) {
      event.preventDefault();
    }
  });

  // A fragment that cannot refresh says why, once (not every 2 s).
  let lastFragmentError = "";
  document.addEventListener("htmx:responseError", (event) => {
    // DOMParser makes an inert document: nothing in the response can run or load.
    const parsed = new DOMParser().parseFromString(event.detail.xhr.responseText || "", "text/html");
    const message = parsed.body.textContent.trim() || `The lab answered HTTP ${event.detail.xhr.status}.`;
    if (message !== lastFragmentError) flash(message, "error");
    lastFragmentError = message;
  });
  document.addEventListener("htmx:afterSwap", () => (lastFragmentError = ""));

  // -- dialogs, secrets, copying ---------------------------------------------------------

  function openDialog(id) {
    const dialog = document.getElementById(id);
    if (!dialog) return;
    if (id === "project-token-dialog") loadProjectOptions(dialog);
    dialog.showModal();
  }

  function showSecret(secret, onClose) {
    const dialog = document.getElementById("secret-dialog");
    dialog.querySelector("#secret-value").textContent = secret;
    if (onClose) dialog.addEventListener("close", onClose, { once: true });
    // The secret leaves the page when the dialog closes: it is shown only once.
    dialog.addEventListener("close", () => (dialog.querySelector("#secret-value").textContent = ""), { once: true });
    dialog.showModal();
  }

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = label), 1500);
  }

  async function loadProjectOptions(dialog) {
    const select = dialog.querySelector("[data-project-options]");
    const current = body.dataset.project || select.value;
    try {
      const payload = await api("GET", "/api/projects");
      select.replaceChildren();
      for (const project of payload.data || []) {
        const option = new Option(project.name, project.name, false, project.name === current);
        select.append(option);
      }
      if (!select.options.length) select.append(new Option("(no projects yet)", ""));
    } catch (error) {
      flash(error.message, "error");
    }
  }

  async function createProjectToken(form) {
    const values = formValues(form);
    if (!values.project) {
      flash("Choose a project first (create one on the Projects page).", "error");
      return;
    }
    const data = { name: values.name || "UI project token" };
    if (values.expiresIn) data.expiresIn = Number(values.expiresIn);
    try {
      const payload = await api("POST", `/api/projects/${encodeURIComponent(values.project)}/tokens`, data);
      form.closest("dialog").close();
      form.reset();
      showSecret(payload.data.token);
    } catch (error) {
      flash(error.message, "error");
    }
  }

  // -- deploy form ------------------------------------------------------------------------

  function addRow(table) {
    const tbody = table.querySelector("tbody");
    const row = tbody.querySelector("tr").cloneNode(true);
    row.querySelectorAll("input").forEach((input) => (input.type === "checkbox" ? (input.checked = false) : (input.value = "")));
    tbody.append(row);
    row.querySelector("input").focus();
  }

  function showSource(form) {
    const source = form.querySelector("input[name=source]:checked").value;
    form.querySelectorAll("[data-source]").forEach((field) => {
      field.hidden = field.dataset.source !== source;
    });
  }

  document.querySelectorAll("form[data-deploy]").forEach((form) => {
    form.addEventListener("change", (event) => {
      if (event.target.name === "source") showSource(form);
    });
    showSource(form);
  });

  function deploySpec(form) {
    const values = formValues(form);
    const spec = { env: {}, secretKeys: [], resources: {} };
    const source = values.source;
    const where = (values[source] || "").trim();
    if (!values.name) throw new ApiError("Give the service a name (letters, digits and '-').");
    if (!where) {
      throw new ApiError(source === "image" ? "Give the Docker image to run." : "Give the code to run: a path, a VCS URL or a data key.");
    }
    spec[source] = where;
    for (const row of form.querySelectorAll(".param-row")) {
      const key = row.querySelector("[name=param-key]").value.trim();
      const value = row.querySelector("[name=param-value]").value;
      if (!key) {
        if (value) throw new ApiError("A parameter has a value but no name.");
        continue;
      }
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
        throw new ApiError(`Parameter name "${key}" must be letters, digits and _ (not starting with a digit).`);
      }
      spec.env[key] = value;
      if (row.querySelector("[name=param-secret]").checked) spec.secretKeys.push(key);
    }
    if (values.port) {
      const port = Number(values.port);
      spec.ports = [port];
      spec.connectionPort = port;
      if (source === "code" && !("PORT" in spec.env)) spec.env.PORT = String(port);
    }
    if (values.cpus) spec.resources.cpus = Number(values.cpus);
    if (values.memory) spec.resources.memory = values.memory;
    if (values.gpus) spec.resources.gpus = Number(values.gpus);
    if (form.elements["keep-prefix"]?.checked) spec.stripPrefix = false;
    // A replace keeps what the form leaves empty (the lab merges a PUT into the service).
    for (const key of ["env", "resources"]) if (!Object.keys(spec[key]).length) delete spec[key];
    if (!spec.secretKeys.length) delete spec.secretKeys;
    return { name: values.name.toLowerCase(), spec };
  }

  async function deploy(form) {
    const project = encodeURIComponent(form.dataset.project);
    const button = form.querySelector("[type=submit]");
    button.disabled = true;
    try {
      const { name, spec } = deploySpec(form);
      const path = `/api/projects/${project}/services/${encodeURIComponent(name)}`;
      let exists = true;
      try {
        await api("GET", path);
      } catch (error) {
        if (error.status !== 404) throw error;
        exists = false;
      }
      if (exists && !window.confirm(`A service named ${name} exists. Replace it with this one?`)) return;
      const payload = await api("PUT", path, spec);
      flash(`${payload.metadata.message || "Deployed."} ${name} is starting.`);
      form.reset();
      form.querySelectorAll(".param-row").forEach((row, i) => (i > 0 ? row.remove() : null));
      showSource(form);
      refresh("#services");
    } catch (error) {
      flash(error.message, "error");
    } finally {
      button.disabled = false;
    }
  }

  // -- upload with progress ----------------------------------------------------------------

  function upload(form) {
    const file = form.elements.file.files[0];
    if (!file) {
      flash("Choose a file to upload.", "error");
      return;
    }
    const params = new URLSearchParams({
      dataType: form.elements.dataType.value,
      fileName: form.elements.fileName.value.trim() || file.name,
    });
    const project = encodeURIComponent(form.dataset.project);
    const box = form.parentElement.querySelector(".upload-progress");
    const bar = box.querySelector("progress");
    const label = box.querySelector("[data-progress-label]");
    const button = form.querySelector("[type=submit]");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${base}/api/projects/${project}/files/upload?${params}`);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const percent = Math.round((event.loaded / event.total) * 100);
      bar.value = percent;
      label.textContent = `${percent} %`;
    });
    const done = () => {
      button.disabled = false;
      box.hidden = true;
    };
    xhr.addEventListener("load", () => {
      done();
      let payload = null;
      try {
        payload = JSON.parse(xhr.responseText);
      } catch (_) {
        payload = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        flash((payload && payload.metadata && payload.metadata.message) || "Uploaded.");
        form.reset();
        refresh("#files");
      } else {
        flash((payload && payload.errors && payload.errors.message) || `Upload failed (HTTP ${xhr.status}).`, "error");
      }
    });
    xhr.addEventListener("error", () => {
      done();
      flash("The upload was interrupted: check the connection and try again.", "error");
    });
    const data = new FormData();
    data.append("file", file);
    bar.value = 0;
    label.textContent = "0 %";
    box.hidden = false;
    button.disabled = true;
    xhr.send(data);
  }

  // -- logs, followed live -------------------------------------------------------------------

  const MAX_LOG_CHARS = 400000;

  async function followLogs(pre) {
    const state = document.getElementById("logs-state");
    const again = document.querySelector("[data-logs-restart]");
    const controller = new AbortController();
    window.addEventListener("pagehide", () => controller.abort(), { once: true });
    pre.textContent = "";
    again.hidden = true;
    state.textContent = "following…";
    try {
      const response = await fetch(pre.dataset.logsUrl, {
        headers: { Accept: "text/plain" },
        credentials: "same-origin",
        signal: controller.signal,
      });
      if (!response.ok) await readEnvelope(response);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24;
        pre.append(value);
        if (pre.textContent.length > MAX_LOG_CHARS) {
          pre.textContent = pre.textContent.slice(-MAX_LOG_CHARS / 2);
        }
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      state.textContent = "the log stream ended";
    } catch (error) {
      if (error.name === "AbortError") return;
      state.textContent = error.message;
    }
    again.hidden = false;
  }

  const logs = document.getElementById("logs");
  if (logs) {
    followLogs(logs);
    document.querySelector("[data-logs-restart]").addEventListener("click", () => followLogs(logs));
  }
})();
