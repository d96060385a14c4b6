// postline console: shows the fields that apply to the choices made (no build step, no CDN).
// Every element with data-when='{"select name": ["value", ...], ...}' is shown only while
// each named select has one of the listed values; hidden inputs are disabled so they are
// not sent. A port input with data-ports shows the default port of its protocol and
// security as its placeholder. Without JavaScript every field stays visible.
(function () {
  "use strict";
  function valueOf(form, name) {
    var el = form.elements.namedItem(name);
    return el ? el.value : "";
  }
  function update(form) {
    form.querySelectorAll("[data-when]").forEach(function (el) {
      var when = JSON.parse(el.getAttribute("data-when"));
      var show = Object.keys(when).every(function (name) {
        return when[name].indexOf(valueOf(form, name)) >= 0;
      });
      el.hidden = !show;
      el.querySelectorAll("input,select,textarea").forEach(function (input) {
        // an input inside a still-hidden ancestor stays disabled
        input.disabled = !show || !!input.closest("[hidden]");
      });
    });
    form.querySelectorAll("input[data-ports]").forEach(function (input) {
      var ports = JSON.parse(input.getAttribute("data-ports"));
      var key = valueOf(form, input.getAttribute("data-protocol")) + "+" +
        valueOf(form, input.getAttribute("data-security"));
      input.placeholder = ports[key] ? String(ports[key]) : "";
    });
  }
  function confirmSubmit(event) {
    var text = event.target.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { event.preventDefault(); }
  }
  function poll(el) {
    var url = el.getAttribute("data-poll");
    var every = parseInt(el.getAttribute("data-every") || "2000", 10);
    function tick() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { el.innerHTML = html; } })
        .catch(function () {})
        .finally(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }
  // a macro field shows what it expands to while it is typed (the server expands it;
  // a secret comes back as ***)
  function resolveAsTyped(input) {
    var output = input.form.querySelector("output[for='" + input.id + "']");
    var timer = null;
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        if (input.value.indexOf("${") < 0) { output.textContent = ""; return; }
        fetch("/resolve?value=" + encodeURIComponent(input.value),
              {credentials: "same-origin"})
          .then(function (r) { return r.ok ? r.text() : ""; })
          .then(function (text) { output.textContent = text; })
          .catch(function () {});
      }, 250);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input[data-resolve]").forEach(resolveAsTyped);
    document.querySelectorAll("form[data-dynamic]").forEach(function (form) {
      update(form);
      form.addEventListener("change", function () { update(form); });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", confirmSubmit);
    });
    document.querySelectorAll("[data-poll]").forEach(poll);
  });
})();
