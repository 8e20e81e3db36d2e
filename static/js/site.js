// Progressive enhancements only; every page works without JavaScript.
(function () {
  "use strict";
  // Confirmation for irreversible merchant actions (withdraw).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });
  // Submit the language switch as soon as a language is chosen.
  var select = document.getElementById("language-select");
  if (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  }
  // Buttons only needed without JavaScript.
  document.querySelectorAll(".js-hidden").forEach(function (el) { el.classList.add("d-none"); });
})();
