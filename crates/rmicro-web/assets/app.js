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

  document.querySelectorAll("form.call").forEach(function (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const output = form.querySelector(".result");
      const reply = form.querySelector(".reply");
      const error = form.querySelector(".error");
      const latency = form.querySelector(".latency");
      const button = form.querySelector("button");
      const text = form.querySelector("textarea").value;
      let request;
      try {
        request = JSON.parse(text);
      } catch (e) {
        output.hidden = false;
        output.dataset.state = "error";
        error.hidden = false;
        reply.hidden = true;
        latency.textContent = "not sent";
        form.querySelector(".error-id").textContent = "rmicro.web";
        form.querySelector(".error-code").textContent = "400";
        form.querySelector(".error-detail").textContent = "the request is not JSON: " + e.message;
        return;
      }
      button.disabled = true;
      output.dataset.state = "calling";
      try {
        const answer = await fetch("/api/call", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({
            service: form.dataset.service,
            endpoint: form.dataset.endpoint,
            request: request,
            address: form.querySelector("input[name=address]").value.trim() || null,
            stream: form.dataset.stream === "true",
          }),
        });
        const result = await answer.json();
        output.hidden = false;
        latency.textContent = (result.ok ? "replied" : "failed") + " in " + result.latency_ms.toFixed(1) + " ms";
        if (result.ok) {
          output.dataset.state = "ok";
          error.hidden = true;
          reply.hidden = false;
          reply.textContent = JSON.stringify(result.reply, null, 2);
        } else {
          output.dataset.state = "error";
          reply.hidden = true;
          error.hidden = false;
          form.querySelector(".error-id").textContent = result.error.id;
          form.querySelector(".error-code").textContent = String(result.error.code) + " " + (result.error.status || "");
          form.querySelector(".error-detail").textContent = result.error.detail;
        }
      } catch (e) {
        output.hidden = false;
        output.dataset.state = "error";
        reply.hidden = true;
        error.hidden = false;
        latency.textContent = "no answer from the dashboard";
        form.querySelector(".error-id").textContent = "rmicro.web";
        form.querySelector(".error-code").textContent = "—";
        form.querySelector(".error-detail").textContent = String(e);
      } finally {
        button.disabled = false;
      }
    });
  });
})();
