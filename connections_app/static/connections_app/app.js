// Progressive enhancement only: every page works, and the server validates, without this file.
document.documentElement.classList.add("js");

document.addEventListener("DOMContentLoaded", () => {
  errorSummary();
  formatChecks();
  needsTicked();
  const form = document.getElementById("request-form");
  if (form) {
    form.addEventListener("click", (event) => {
      const add = event.target.closest(".add-row");
      if (add) {
        event.preventDefault(); // in place, instead of the server round trip used without JS
        addRow(add);
        return;
      }
      const remove = event.target.closest(".remove-row");
      if (remove) {
        const fieldset = remove.closest(".params");
        remove.closest(".param-row").remove();
        renumber(fieldset);
        const addButton = fieldset.querySelector(".add-row");
        addButton.disabled = false;
        addButton.focus(); // the row and its button are gone: focus goes to Add
        return;
      }
      const check = event.target.closest(".check-ref");
      if (check) {
        event.preventDefault();
        checkReference(form, check);
      }
    });
  }
  document.querySelectorAll("button[data-once]").forEach((button) => {
    button.form.addEventListener("submit", (event) => {
      // Only the button that sent the form waits; Reject beside Approve stays usable.
      if (!event.submitter || event.submitter === button) button.disabled = true;
    });
  });
});

// The error summary is focused, so that it is seen and read first; its links focus their
// field (GOV.UK's error summary), opening a folded section that holds it.
function errorSummary() {
  const summary = document.querySelector(".error-summary");
  if (!summary) return;
  summary.focus();
  // A form posted from a page whose address has a #fragment (the skip link's #main) comes back
  // with it, and the browser then moves the focus to that target: take it back, once.
  window.addEventListener("load", () => {
    if (!summary.contains(document.activeElement)) summary.focus();
  }, { once: true });
  summary.addEventListener("click", (event) => {
    const link = event.target.closest("a[href^='#']");
    if (!link) return;
    const target = document.getElementById(decodeURIComponent(link.hash.slice(1)));
    if (!target) return;
    event.preventDefault();
    const details = target.closest("details");
    if (details) details.open = true;
    const label = document.querySelector(`label[for="${CSS.escape(target.id)}"]`);
    const legend = target.closest("fieldset")?.querySelector("legend");
    (legend && target.type === "radio" ? legend : label || target).scrollIntoView();
    target.focus({ preventScroll: true });
  });
}

// A field's format is said when it is left (data-pattern, data-pattern-message), not only
// after Save; the server stays the judge.
function formatChecks() {
  document.querySelectorAll("input[data-pattern]").forEach((input) => {
    const pattern = new RegExp(`^(?:${input.dataset.pattern})$`);
    input.addEventListener("blur", () => {
      const wrong = input.value !== "" && !pattern.test(input.value);
      const id = `${input.id}_jserror`;
      let message = document.getElementById(id);
      const described = (input.getAttribute("aria-describedby") || "").split(" ").filter((x) => x && x !== id);
      if (wrong) {
        if (!message) {
          message = document.createElement("p");
          message.id = id;
          message.className = "js-error";
          input.closest(".control")?.before(message) ?? input.before(message);
        }
        message.textContent = input.dataset.patternMessage;
        described.push(id);
        input.setAttribute("aria-invalid", "true");
      } else {
        message?.remove();
        if (!input.closest(".has-error")) input.removeAttribute("aria-invalid");
      }
      if (described.length) input.setAttribute("aria-describedby", described.join(" "));
      else input.removeAttribute("aria-describedby");
    });
  });
}

// A button that needs a box ticked first (Approve anyway): without JavaScript the server asks.
function needsTicked() {
  document.querySelectorAll("button[data-needs]").forEach((button) => {
    const box = document.getElementById(button.dataset.needs);
    if (!box) return;
    const sync = () => { button.disabled = !box.checked; };
    box.addEventListener("change", sync);
    sync();
  });
}

function addRow(add) {
  const fieldset = add.closest(".params");
  const total = fieldset.querySelector('input[name$="-TOTAL_FORMS"]');
  if (Number(total.value) >= Number(add.dataset.max)) return;
  const html = fieldset.querySelector(".row-template").innerHTML.replaceAll("__prefix__", total.value);
  fieldset.querySelector(".rows").insertAdjacentHTML("beforeend", html);
  total.value = String(Number(total.value) + 1);
  add.disabled = Number(total.value) >= Number(add.dataset.max);
  const rows = fieldset.querySelectorAll(".rows .param-row");
  rows[rows.length - 1].querySelector('input[name$="-key"]').focus(); // type the key at once
}

// Rows stay numbered 0..n-1 and TOTAL_FORMS stays n, so removed rows never count toward the
// server's 100-row limit (it refuses a form count above it, whatever the rows hold).
function renumber(fieldset) {
  const prefix = fieldset.dataset.prefix;
  const numbered = new RegExp(`(${prefix})-\\d+-`);
  const rows = fieldset.querySelectorAll(".rows .param-row");
  rows.forEach((row, index) => {
    row.querySelectorAll("[name], [id], [for], button[value], [data-target], [aria-describedby]").forEach((element) => {
      // A Check button's value names its field; an input's value is what the user typed.
      const attributes = ["name", "id", "for", "data-target", "aria-describedby"];
      if (element.tagName === "BUTTON") attributes.push("value");
      for (const attribute of attributes) {
        const text = element.getAttribute(attribute);
        if (text && numbered.test(text)) {
          element.setAttribute(attribute, text.replace(new RegExp(numbered, "g"), `$1-${index}-`));
        }
      }
    });
  });
  fieldset.querySelector('input[name$="-TOTAL_FORMS"]').value = String(rows.length);
}

async function checkReference(form, button) {
  const input = document.getElementById(button.dataset.target);
  const out = document.getElementById("check-" + button.value);
  const secret = button.closest(".param-row")?.querySelector('input[name$="-is_secret"]');
  if (secret && !secret.checked) {
    out.textContent = "Only a secret row's value is a Vault reference; this one is sent as typed.";
    return;
  }
  const body = new FormData();
  body.append("reference", input.value);
  body.append("csrfmiddlewaretoken", form.querySelector("[name=csrfmiddlewaretoken]").value);
  out.textContent = "Checking…";
  try {
    const response = await fetch(form.dataset.checkUrl, { method: "POST", body, credentials: "same-origin" });
    const result = await response.json();
    const span = document.createElement("span");
    if (result.ok) {
      span.className = "ok";
      let text = `Resolves: ${result.mount}/ (KV v${result.kv_version})`;
      if (result.version) text += `, version ${result.version}`;
      if (result.updated) text += `, updated ${result.updated}`;
      span.textContent = text;
    } else {
      span.className = "bad";
      span.dataset.code = result.code;
      span.textContent = result.message;
    }
    out.replaceChildren(span);
  } catch (error) {
    out.textContent = "The check could not reach the server.";
  }
}
