// Keyboard shortcuts and double-submit guard for the rater page (no inline script: CSP).
(function () {
  "use strict";
  var form = document.getElementById("choice-form");
  if (!form) return;
  var keys = {};
  Array.prototype.forEach.call(form.querySelectorAll("button[data-keys]"), function (button) {
    button.getAttribute("data-keys").split(" ").forEach(function (k) { keys[k] = button; });
  });
  var sent = false;
  form.addEventListener("submit", function (event) {
    if (sent) { event.preventDefault(); return; }
    sent = true;
    form.classList.add("sending");
  });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    var target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
    var button = keys[event.key.toLowerCase()];
    if (!button) return;
    event.preventDefault();
    if (form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
  });
})();
