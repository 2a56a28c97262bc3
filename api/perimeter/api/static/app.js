// Perimeter workspace: upload (drag and drop or picker, per-file progress), the document library
// with live status, and a chat that streams grounded answers with clickable citations.
// Plain browser JavaScript on purpose: no build step, nothing fetched from outside the server.
"use strict";

(() => {
  const FINAL = new Set(["indexed", "failed"]);
  const POLL_BUSY_MS = 1000; // while something is uploading or being indexed
  const POLL_IDLE_MS = 10000; // otherwise: another client may have changed the library
  const HEALTH_MS = 30000;
  const UPLOAD_ROW_LINGER_MS = 4000; // a finished upload row stays briefly, then the list has it

  const $ = (id) => document.getElementById(id);
  const els = {
    health: $("health"),
    dropzone: $("dropzone"),
    pick: $("pick-files"),
    input: $("file-input"),
    uploads: $("uploads"),
    docList: $("doc-list"),
    docEmpty: $("doc-empty"),
    docCount: $("doc-count"),
    messages: $("messages"),
    form: $("ask-form"),
    question: $("question"),
    askButton: $("ask-button"),
    passage: $("passage"),
    passageTitle: $("passage-title"),
    passageClose: $("passage-close"),
    passageFilename: $("passage-filename"),
    passagePage: $("passage-page"),
    passageSection: $("passage-section"),
    passageScore: $("passage-score"),
    passageSnippet: $("passage-snippet"),
    announcer: $("announcer"),
    keyButton: $("key-button"),
    keyDialog: $("key-dialog"),
    keyForm: $("key-form"),
    keyInput: $("key-input"),
    keyReason: $("key-reason"),
    keyClear: $("key-clear"),
    collection: $("collection"),
    conversationTitle: $("conversation-title"),
    newConversation: $("new-conversation"),
  };
  // The collection (knowledge base) that uploads go to, the library shows and questions ask.
  let collection = "default";

  // Small DOM helper: h("li", {class: "x"}, "text", childNode)
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Icons are inline SVG paths: no icon font or emoji font may be assumed on the machine.
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TRASH_ICON = "M4 7h16M10 11v6M14 11v6M6 7l1 12a2 2 0 0 0 2 2h6a2 2 0 0 0 2-2l1-12M9 7V4h6v3";

  function icon(path) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "icon");
    const p = document.createElementNS(SVG_NS, "path");
    p.setAttribute("d", path);
    svg.append(p);
    return svg;
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
    return `${(n / (1024 * 1024)).toFixed(1)} MB`;
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (_) {
      /* not JSON: fall through */
    }
    return `${response.status} ${response.statusText}`;
  }

  // -- API key ------------------------------------------------------------------------------
  // Only for servers with authentication on: the embedded default never answers 401. The key
  // lives in sessionStorage (this tab only) and goes to this same origin alone.
  const KEY_STORAGE = "perimeter.apiKey";
  let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";
  els.keyButton.hidden = !apiKey;

  function authHeaders() {
    return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  }

  function askForKey(reason) {
    els.keyButton.hidden = false;
    els.keyReason.textContent = reason;
    els.keyInput.value = apiKey;
    if (!els.keyDialog.open) els.keyDialog.showModal();
  }

  function unauthorized() {
    askForKey(apiKey ? "The server refused this API key." : "This server asks for an API key.");
  }

  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      headers: { ...authHeaders(), ...(options.headers || {}) },
    });
    if (response.status === 401) unauthorized();
    return response;
  }

  els.keyButton.addEventListener("click", () => askForKey("Change or forget the API key."));
  els.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey = els.keyInput.value.trim();
    if (apiKey) sessionStorage.setItem(KEY_STORAGE, apiKey);
    else sessionStorage.removeItem(KEY_STORAGE);
    els.keyDialog.close();
    refreshHealth();
    refreshDocuments();
  });
  els.keyClear.addEventListener("click", () => {
    apiKey = "";
    sessionStorage.removeItem(KEY_STORAGE);
    els.keyInput.value = "";
    els.keyDialog.close();
  });

  // -- health ---------------------------------------------------------------------------------
  async function refreshHealth() {
    try {
      const response = await api("/readyz", { cache: "no-store" });
      if (response.status === 401) {
        els.health.textContent = "API key needed";
        els.health.dataset.state = "warn";
        return;
      }
      const body = await response.json();
      if (body.status === "ready") {
        els.health.textContent = "Ready";
        els.health.dataset.state = "ok";
      } else {
        const down = Object.entries(body.checks || {})
          .filter(([, ok]) => !ok)
          .map(([name]) => name.replace(/_/g, " "));
        els.health.textContent = `Degraded: ${down.join(", ") || "unknown"}`;
        els.health.dataset.state = "warn";
      }
    } catch (_) {
      els.health.textContent = "Server unreachable";
      els.health.dataset.state = "error";
    }
  }

  // -- documents ------------------------------------------------------------------------------
  const docs = new Map(); // id -> {record, row}
  const uploads = new Map(); // local key -> {row, bar, status, documentId, done}
  let pollTimer = null;

  function statusLabel(status) {
    return { queued: "queued", parsing: "parsing", embedding: "embedding", indexed: "indexed",
      failed: "failed" }[status] || status;
  }

  function docRow(record) {
    const badge = h("span", { class: "badge", "data-status": record.status });
    const meta = h("span", { class: "doc-meta" });
    const error = h("p", { class: "doc-error", hidden: true });
    const del = h(
      "button",
      {
        type: "button",
        class: "icon-button delete",
        "aria-label": `Delete ${record.filename}`,
        title: "Delete",
        onclick: () => deleteDocument(record.id),
      },
      icon(TRASH_ICON),
    );
    const row = h(
      "li",
      { class: "doc", "data-id": record.id },
      h("div", { class: "doc-main" },
        h("span", { class: "doc-name", title: record.filename }, record.filename),
        h("div", { class: "doc-sub" }, badge, meta)),
      del,
      error,
    );
    return { row, badge, meta, error };
  }

  function updateDocRow(entry, record) {
    entry.record = record;
    entry.parts.badge.textContent = statusLabel(record.status);
    entry.parts.badge.dataset.status = record.status;
    const bits = [formatBytes(record.size_bytes)];
    if (record.pages) bits.push(`${record.pages} page${record.pages === 1 ? "" : "s"}`);
    if (record.status === "indexed") {
      bits.push(`${record.chunk_count} chunk${record.chunk_count === 1 ? "" : "s"}`);
    }
    entry.parts.meta.textContent = bits.join(" · ");
    entry.parts.error.hidden = !record.error;
    entry.parts.error.textContent = record.error || "";
  }

  function renderDocuments(records) {
    const seen = new Set();
    records.forEach((record, index) => {
      seen.add(record.id);
      let entry = docs.get(record.id);
      if (!entry) {
        entry = { parts: docRow(record) };
        docs.set(record.id, entry);
      }
      updateDocRow(entry, record);
      // Keep the server's order (newest first) without rebuilding rows, so focus survives.
      const current = els.docList.children[index];
      if (current !== entry.parts.row) els.docList.insertBefore(entry.parts.row, current || null);
    });
    for (const [id, entry] of docs) {
      if (!seen.has(id)) {
        entry.parts.row.remove();
        docs.delete(id);
      }
    }
    els.docEmpty.hidden = records.length > 0;
    const indexed = records.filter((r) => r.status === "indexed").length;
    els.docCount.textContent = records.length
      ? `${indexed} of ${records.length} indexed`
      : "";
    // Upload rows follow their document's status until it is final.
    for (const upload of uploads.values()) {
      if (!upload.documentId || upload.done) continue;
      const entry = docs.get(upload.documentId);
      if (entry) setUploadStatus(upload, entry.record.status, entry.record.error);
    }
  }

  async function refreshDocuments() {
    try {
      const asked = collection;
      const query = new URLSearchParams({ limit: "1000", collection: asked });
      const response = await api(`/v1/documents?${query}`, { cache: "no-store" });
      if (!response.ok) throw new Error(await errorMessage(response));
      const body = await response.json();
      // The user may have switched collections while this was in flight.
      if (asked === collection) renderDocuments(body.documents);
    } catch (err) {
      console.warn("listing documents failed:", err);
    }
    schedulePoll();
  }

  function busy() {
    for (const entry of docs.values()) if (!FINAL.has(entry.record.status)) return true;
    for (const upload of uploads.values()) if (!upload.done) return true;
    return false;
  }

  function schedulePoll(delay) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(refreshDocuments, delay ?? (busy() ? POLL_BUSY_MS : POLL_IDLE_MS));
  }

  async function deleteDocument(id) {
    const entry = docs.get(id);
    const name = entry ? entry.record.filename : id;
    if (!window.confirm(`Delete “${name}”, its passages and its stored file?`)) return;
    const response = await api(`/v1/documents/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (!response.ok && response.status !== 404) {
      window.alert(`Could not delete ${name}: ${await errorMessage(response)}`);
    }
    refreshDocuments();
  }

  // -- uploads --------------------------------------------------------------------------------
  let uploadSeq = 0;

  function setUploadStatus(upload, status, detail) {
    upload.row.dataset.status = status;
    const text = {
      uploading: `Uploading ${detail ?? 0}%`,
      queued: "Uploaded · queued",
      parsing: "Parsing…",
      embedding: "Embedding…",
      indexed: "indexed",
      failed: `Failed${detail ? `: ${detail}` : ""}`,
      rejected: `Rejected: ${detail}`,
    }[status] || status;
    upload.status.textContent = text;
    if (status === "uploading") {
      upload.bar.value = detail ?? 0;
    } else {
      upload.bar.value = 100;
    }
    if (status === "indexed" || status === "failed" || status === "rejected") {
      upload.done = true;
      upload.bar.hidden = true;
      if (status === "indexed") {
        setTimeout(() => {
          upload.row.remove();
          uploads.delete(upload.key);
        }, UPLOAD_ROW_LINGER_MS);
      } else {
        upload.row.append(
          h("button", {
            type: "button",
            class: "icon-button dismiss",
            "aria-label": `Dismiss ${upload.name}`,
            onclick: () => {
              upload.row.remove();
              uploads.delete(upload.key);
            },
          }, "\u00D7"),
        );
      }
    }
  }

  function uploadFile(file) {
    const key = `u${++uploadSeq}`;
    const bar = h("progress", { max: 100, value: 0, "aria-label": `Upload of ${file.name}` });
    const status = h("span", { class: "upload-status" });
    const row = h(
      "li",
      { class: "upload", "data-key": key },
      h("div", { class: "upload-head" },
        h("span", { class: "upload-name", title: file.name }, file.name),
        h("span", { class: "upload-size" }, formatBytes(file.size))),
      bar,
      status,
    );
    const upload = { key, row, bar, status, name: file.name, documentId: null, done: false };
    uploads.set(key, upload);
    els.uploads.append(row);
    setUploadStatus(upload, "uploading", 0);

    // XMLHttpRequest, not fetch: only it reports upload progress.
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/documents");
    xhr.responseType = "json";
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) {
        setUploadStatus(upload, "uploading", Math.round((event.loaded / event.total) * 100));
      }
    });
    xhr.addEventListener("load", () => {
      const body = xhr.response;
      if (xhr.status === 202 && body && body.documents && body.documents.length) {
        const doc = body.documents[0];
        upload.documentId = doc.document_id;
        setUploadStatus(upload, doc.duplicate ? "queued" : doc.status);
        if (doc.duplicate) upload.status.textContent = "Already in the library";
        const known = docs.get(doc.document_id);
        if (known && FINAL.has(known.record.status)) {
          setUploadStatus(upload, known.record.status, known.record.error);
        }
      } else {
        if (xhr.status === 401) unauthorized();
        const message = body && body.error ? body.error.message : `HTTP ${xhr.status}`;
        setUploadStatus(upload, "rejected", message);
      }
      schedulePoll(0);
    });
    xhr.addEventListener("error", () => setUploadStatus(upload, "rejected", "network error"));
    const form = new FormData();
    form.append("files", file, file.name);
    form.append("collection", collection);
    xhr.send(form);
  }

  function uploadFiles(fileList) {
    for (const file of Array.from(fileList)) uploadFile(file);
    schedulePoll(POLL_BUSY_MS);
  }

  els.pick.addEventListener("click", () => els.input.click());
  els.input.addEventListener("change", () => {
    if (els.input.files && els.input.files.length) uploadFiles(els.input.files);
    els.input.value = ""; // choosing the same file again must fire change again
  });
  let dragDepth = 0; // dragenter/leave fire for every child element crossed
  els.dropzone.addEventListener("dragenter", (event) => {
    event.preventDefault();
    dragDepth += 1;
    els.dropzone.classList.add("dragging");
  });
  els.dropzone.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  els.dropzone.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) els.dropzone.classList.remove("dragging");
  });
  els.dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    els.dropzone.classList.remove("dragging");
    if (event.dataTransfer && event.dataTransfer.files.length) {
      uploadFiles(event.dataTransfer.files);
    }
  });
  // A file dropped beside the zone must not make the browser navigate away to it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  // -- passage panel --------------------------------------------------------------------------
  let openCitationButton = null;

  function showPassage(citation, button) {
    els.passageTitle.textContent = `Source [${citation.n}]`;
    els.passageFilename.textContent = citation.filename;
    els.passagePage.textContent = citation.page ?? "—";
    const hasSection = Boolean(citation.section);
    for (const node of els.passage.querySelectorAll(".section-row")) node.hidden = !hasSection;
    els.passageSection.textContent = citation.section || "";
    els.passageScore.textContent = Number(citation.score).toFixed(3);
    els.passageSnippet.textContent = citation.snippet;
    els.passage.hidden = false;
    document.body.classList.add("has-passage");
    if (openCitationButton) openCitationButton.setAttribute("aria-expanded", "false");
    openCitationButton = button || null;
    if (openCitationButton) openCitationButton.setAttribute("aria-expanded", "true");
    els.passageTitle.focus();
  }

  function closePassage() {
    els.passage.hidden = true;
    document.body.classList.remove("has-passage");
    if (openCitationButton) {
      openCitationButton.setAttribute("aria-expanded", "false");
      openCitationButton.focus();
      openCitationButton = null;
    }
  }

  els.passageClose.addEventListener("click", closePassage);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !els.passage.hidden) closePassage();
  });

  function citationButton(citation, label, extraClass) {
    const page = citation.page !== null && citation.page !== undefined ? `, page ${citation.page}` : "";
    const button = h(
      "button",
      {
        type: "button",
        class: `citation ${extraClass || ""}`.trim(),
        "aria-controls": "passage",
        "aria-expanded": "false",
        "aria-label": `Source ${citation.n}: ${citation.filename}${page}`,
        "data-n": citation.n,
      },
      label,
    );
    button.addEventListener("click", () => showPassage(citation, button));
    return button;
  }

  // -- chat -----------------------------------------------------------------------------------
  const MARKER = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/g;

  // The answer's own [n] markers become buttons when they name a source the answer was given.
  function renderAnswerText(container, text, byNumber) {
    container.textContent = "";
    let last = 0;
    for (const match of text.matchAll(MARKER)) {
      container.append(text.slice(last, match.index));
      const numbers = match[1].split(",").map((s) => Number(s.trim()));
      if (numbers.every((n) => byNumber.has(n))) {
        numbers.forEach((n) => container.append(citationButton(byNumber.get(n), `[${n}]`, "inline")));
      } else {
        container.append(match[0]);
      }
      last = match.index + match[0].length;
    }
    container.append(text.slice(last));
  }

  function verdictOf(result) {
    if (result.degraded) return ["warn", "The language model is unavailable: sources only."];
    if (result.abstained) return ["muted", "Not found in your documents."];
    // The same verdicts as the API and the OpenAI-compatible endpoint (unsupported_policy).
    const removed = (result.redacted_sentences || []).length;
    if (result.refused) {
      return ["warn", "No answer shown: the sources do not support one. Check the passages below."];
    }
    if (result.grounded && removed) {
      const s = removed === 1 ? "sentence" : "sentences";
      return ["ok", `Supported by the cited sources. ${removed} unsupported ${s} removed.`];
    }
    if (result.grounded) return ["ok", "Supported by the cited sources."];
    return ["warn", "Parts of this answer are not supported by the sources (listed below)."];
  }

  // Under the "annotate" policy the unsupported sentences stay in the answer: list them, each
  // with the verifier's reason, so none of them reads as supported.
  function unsupportedList(result) {
    if (result.refused || result.grounded) return null;
    const bad = (result.sentences || []).filter((s) => s.checked && !s.supported);
    if (!bad.length) return null;
    const list = h("ul", { class: "unsupported-list", "aria-label": "Not supported by the sources" });
    for (const s of bad) {
      const why = s.reasons && s.reasons.length ? ` (${s.reasons.join("; ")})` : "";
      list.append(h("li", {}, h("mark", { class: "unsupported" }, s.sentence), why));
    }
    return h("div", {}, h("p", { class: "cites-title" }, "Not supported by the sources"), list);
  }

  function renderAnswer(bubble, result, quiet) {
    const byNumber = new Map();
    for (const c of result.sources || []) byNumber.set(c.n, c);
    for (const c of result.citations || []) byNumber.set(c.n, c);
    renderAnswerText(bubble.text, (result.answer || "").trim(), byNumber);

    let listed = result.citations || [];
    let heading = "Sources";
    if (!listed.length && !result.abstained && (result.sources || []).length) {
      listed = result.sources;
      heading = "Retrieved passages";
    }
    bubble.cites.textContent = "";
    if (listed.length) {
      const list = h("ul", { class: "citation-list", "aria-label": heading });
      for (const c of listed) {
        const page = c.page !== null && c.page !== undefined ? ` · page ${c.page}` : "";
        list.append(h("li", {}, citationButton(c, `[${c.n}] ${c.filename}${page}`, "chip")));
      }
      bubble.cites.append(h("p", { class: "cites-title" }, heading), list);
    }
    const unsupported = unsupportedList(result);
    if (unsupported) bubble.cites.append(unsupported);
    if (result.search_query) {
      // A follow-up: say what it was searched as, so a surprising source can be understood.
      bubble.cites.append(h("p", { class: "searched" }, `Searched as: ${result.search_query}`));
    }
    const [tone, text] = verdictOf(result);
    bubble.verdict.dataset.tone = tone;
    bubble.verdict.textContent = text;
    bubble.verdict.hidden = false;
    if (quiet) return;
    const count = listed.length ? ` ${listed.length} source${listed.length === 1 ? "" : "s"}.` : "";
    els.announcer.textContent = `Answer: ${(result.answer || "").trim()} ${text}${count}`;
  }

  function addMessage(role) {
    const welcome = els.messages.querySelector(".welcome");
    if (welcome) welcome.remove();
    const text = h("div", { class: "msg-text" });
    const cites = h("div", { class: "msg-cites" });
    const verdict = h("p", { class: "verdict", hidden: true });
    const label = h("span", { class: "visually-hidden" }, role === "user" ? "You:" : "Perimeter:");
    const row = h("li", { class: `msg ${role}` }, label, text, cites, verdict);
    els.messages.append(row);
    row.scrollIntoView({ block: "end", behavior: "smooth" });
    return { row, text, cites, verdict };
  }

  // Server-Sent Events over fetch (EventSource cannot POST): events are separated by a blank
  // line, each with "event:" and "data:" lines.
  async function* sseEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      buffer = buffer.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of raw.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
      if (done) return;
    }
  }

  // -- conversation -------------------------------------------------------------------------
  // The server keeps the conversation (POST /v1/conversations); this browser remembers which
  // one is open, so a reload shows it again and follow-up questions keep their context.
  const CONVERSATION_STORAGE = "perimeter.conversation";
  let conversationId = null;

  function rememberConversation(record) {
    conversationId = record ? record.id : null;
    if (record) {
      localStorage.setItem(CONVERSATION_STORAGE, record.id);
      els.conversationTitle.textContent = record.title || "New conversation";
    } else {
      localStorage.removeItem(CONVERSATION_STORAGE);
      els.conversationTitle.textContent = "New conversation";
    }
  }

  function clearMessages() {
    els.messages.replaceChildren(
      h("li", { class: "welcome" },
        h("h3", {}, "Ask your documents"),
        h("p", {}, "Answers come only from the files in your library and cite their sources. "
          + "Select a citation to read the passage it points to. Follow-up questions "
          + "understand what came before; start a new conversation to change the subject.")),
    );
  }

  function startNewConversation() {
    rememberConversation(null);
    clearMessages();
    closePassage();
  }

  async function createConversation() {
    const response = await api("/v1/conversations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ collection }),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    const record = await response.json();
    rememberConversation(record);
    return record.id;
  }

  async function restoreConversation() {
    const id = localStorage.getItem(CONVERSATION_STORAGE);
    if (!id) return;
    try {
      const response = await api(`/v1/conversations/${encodeURIComponent(id)}`,
        { cache: "no-store" });
      if (response.status === 404) {
        rememberConversation(null); // deleted, expired, or another key's
        return;
      }
      if (!response.ok) throw new Error(await errorMessage(response));
      const record = await response.json();
      collection = record.collection;
      rememberConversation(record);
      for (const turn of record.turns || []) {
        addMessage("user").text.textContent = turn.question;
        renderAnswer(addMessage("assistant"), turn.response, true);
      }
    } catch (err) {
      console.warn("restoring the conversation failed:", err);
    }
  }

  async function ask(question) {
    const mine = addMessage("user");
    mine.text.textContent = question;
    const bubble = addMessage("assistant");
    bubble.row.setAttribute("aria-busy", "true");
    bubble.row.classList.add("streaming");
    els.askButton.disabled = true;
    let streamed = "";
    try {
      const send = async () => api("/v1/query", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({
          question, collection, stream: true,
          // With the language model down, the retrieved sources still answer (marked so).
          allow_degraded: true,
          conversation_id: conversationId || await createConversation(),
        }),
      });
      let response = await send();
      if (response.status === 404 && conversationId) {
        // The open conversation is gone (deleted elsewhere, or past retention): a new one.
        rememberConversation(null);
        response = await send();
      }
      if (!response.ok) throw new Error(await errorMessage(response));
      for await (const { event, data } of sseEvents(response)) {
        if (event === "token") {
          streamed += data.text;
          bubble.text.textContent = streamed;
          // Nothing streamed is verified yet: the final answer (redacted or refused when the
          // policy says so) replaces it once the verifier has read it.
          bubble.verdict.dataset.tone = "muted";
          bubble.verdict.textContent = "Checking against the sources…";
          bubble.verdict.hidden = false;
          bubble.row.scrollIntoView({ block: "end" });
        } else if (event === "answer") {
          renderAnswer(bubble, data);
          if (data.conversation_id && els.conversationTitle.textContent === "New conversation") {
            els.conversationTitle.textContent = mine.text.textContent;
          }
        } else if (event === "error") {
          throw new Error(data.error ? data.error.message : "the answer failed");
        }
      }
    } catch (err) {
      bubble.row.classList.add("error");
      bubble.verdict.dataset.tone = "error";
      bubble.verdict.textContent = `Error: ${err.message}`;
      bubble.verdict.hidden = false;
      els.announcer.textContent = `Error: ${err.message}`;
    } finally {
      bubble.row.classList.remove("streaming");
      bubble.row.removeAttribute("aria-busy");
      els.askButton.disabled = false;
      bubble.row.scrollIntoView({ block: "end" });
    }
  }

  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = els.question.value.trim();
    if (!question || els.askButton.disabled) return;
    els.question.value = "";
    ask(question);
  });
  els.question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      els.form.requestSubmit();
    }
  });

  async function refreshCollections() {
    try {
      const response = await api("/v1/collections", { cache: "no-store" });
      if (!response.ok) throw new Error(await errorMessage(response));
      const names = (await response.json()).collections.map((c) => c.name);
      if (!names.includes(collection)) collection = "default";
      els.collection.replaceChildren(...names.map((name) => h("option", { value: name }, name)));
      els.collection.value = collection;
    } catch (err) {
      console.warn("listing collections failed:", err);
    }
  }

  els.newConversation.addEventListener("click", () => {
    startNewConversation();
    els.question.focus();
  });

  els.collection.addEventListener("change", () => {
    collection = els.collection.value;
    // A conversation asks one collection: another collection starts a new conversation.
    if (conversationId) startNewConversation();
    renderDocuments([]);
    refreshDocuments();
  });
  els.collection.addEventListener("focus", refreshCollections);

  // -- start ----------------------------------------------------------------------------------
  (async () => {
    await restoreConversation(); // first: it decides the collection the page opens on
    refreshCollections();
    refreshHealth();
    setInterval(refreshHealth, HEALTH_MS);
    refreshDocuments();
  })();
})();
