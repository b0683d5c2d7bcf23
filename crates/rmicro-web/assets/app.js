// rmicro web: the page's one script. It swaps in the live fragments the server
// renders (already escaped there) as they arrive over Server-Sent Events, and
// runs the call forms. Nothing here builds markup from data: replies and errors
// are shown with textContent.
"use strict";

(function () {
  const connection = document.getElementById("connection");
  let open = 0;
  function showConnection() {
    if (!connection) return;
    connection.dataset.state = open > 0 ? "live" : "reconnecting";
    connection.textContent = open > 0 ? "live" : "reconnecting…";
  }

  document.querySelectorAll("[data-events]").forEach(function (section) {
    const source = new EventSource(section.dataset.events);
    let counted = false;
    source.addEventListener("open", function () {
      if (!counted) { open += 1; counted = true; }
      showConnection();
    });
    source.addEventListener("error", function () {
      if (counted) { open -= 1; counted = false; }
      showConnection();
    });
    source.addEventListener("fragment", function (event) {
      section.innerHTML = event.data;
      section.dataset.updates = String(Number(section.dataset.updates || 0) + 1);
    });
  });

  // Shows a form's outcome: `reply` (text, or null for none) or the error.
  function show(form, result, reply) {
    const output = form.querySelector(".result");
    const error = form.querySelector(".error");
    const replyBox = form.querySelector(".reply");
    output.hidden = false;
    output.dataset.state = result.ok ? "ok" : "error";
    form.querySelector(".latency").textContent = result.note ||
      ((result.ok ? (form.dataset.done || "done") : "failed") + " in " + result.latency_ms.toFixed(1) + " ms");
    error.hidden = result.ok;
    if (replyBox) {
      replyBox.hidden = !result.ok;
      replyBox.textContent = result.ok ? reply : "";
    }
    if (!result.ok) {
      form.querySelector(".error-id").textContent = result.error.id;
      form.querySelector(".error-code").textContent = String(result.error.code) + " " + (result.error.status || "");
      form.querySelector(".error-detail").textContent = result.error.detail;
    }
  }

  // Parses a box's JSON, or shows why it is not JSON and gives null.
  function parsed(form, text) {
    try {
      return { value: JSON.parse(text) };
    } catch (e) {
      show(form, {
        ok: false, note: "not sent",
        error: { id: "rmicro.web", code: 400, status: "Bad Request", detail: "the request is not JSON: " + e.message },
      }, null);
      return null;
    }
  }

  // Posts `body` to `url` and shows the answer.
  async function post(form, url, body, replyOf) {
    const button = form.querySelector("button");
    button.disabled = true;
    form.querySelector(".result").dataset.state = "calling";
    try {
      const answer = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const result = await answer.json();
      show(form, result, result.ok ? replyOf(result) : null);
    } catch (e) {
      show(form, {
        ok: false, note: "no answer from the dashboard",
        error: { id: "rmicro.web", code: "—", status: "", detail: String(e) },
      }, null);
    } finally {
      button.disabled = false;
    }
  }

  document.querySelectorAll("form.call").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const request = parsed(form, form.querySelector("textarea").value);
      if (!request) return;
      post(form, "/api/call", {
        service: form.dataset.service,
        endpoint: form.dataset.endpoint,
        request: request.value,
        address: form.querySelector("input[name=address]").value.trim() || null,
        stream: form.dataset.stream === "true",
      }, function (result) {
        return JSON.stringify(result.reply, null, 2);
      });
    });
  });

  document.querySelectorAll("form.publish").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const message = parsed(form, form.querySelector("textarea").value);
      if (!message) return;
      post(form, "/api/publish", {
        topic: form.querySelector("input[name=topic]").value.trim(),
        message: message.value,
      }, function () {
        return null;
      });
    });
  });
})();
