// Highlight the documents required by the options chosen on the request form.
(function () {
  "use strict";
  var form = document.getElementById("request-form");
  if (!form) { return; }
  var rules = {
    close_account: function () { return form.elements.close_account.checked; },
    replacement: function () {
      return form.elements.replacement_serial_number.value.trim() !== "" ||
        form.elements.reason.value === "device_replacement";
    },
    authorisation: function () { return !form.elements.applicant_is_legal_rep.checked; }
  };
  var fields = {
    close_account: ["contract", "bank_statement"],
    replacement: ["replacement_documents"],
    authorisation: ["authorisation_letter"]
  };
  function update() {
    Object.keys(rules).forEach(function (key) {
      var on = rules[key]();
      var item = document.querySelector('[data-doc="' + key + '"]');
      if (item) { item.classList.toggle("is-required", on); }
      fields[key].forEach(function (name) {
        var input = form.elements[name];
        var wrapper = input && input.closest(".mb-3");
        if (wrapper) { wrapper.classList.toggle("d-none", !on && !input.value); }
      });
    });
  }
  form.addEventListener("change", update);
  form.addEventListener("input", update);
  update();
})();
