// Progressive enhancement only: the form works and validates on the server without this file.
document.documentElement.classList.add("js");

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("request-form");
  if (form) {
    form.addEventListener("click", (event) => {
      const add = event.target.closest(".add-row");
      if (add) {
        event.preventDefault(); // in place, instead of the server round trip used without JS
        const fieldset = add.closest(".params");
        const total = fieldset.querySelector('input[name$="-TOTAL_FORMS"]');
        if (Number(total.value) >= Number(add.dataset.max)) return;
        const html = fieldset.querySelector(".row-template").innerHTML.replaceAll("__prefix__", total.value);
        fieldset.querySelector(".rows").insertAdjacentHTML("beforeend", html);
        total.value = String(Number(total.value) + 1);
        add.disabled = Number(total.value) >= Number(add.dataset.max);
        return;
      }
      const remove = event.target.closest(".remove-row");
      if (remove) {
        const fieldset = remove.closest(".params");
        remove.closest(".param-row").remove();
        renumber(fieldset);
        fieldset.querySelector(".add-row").disabled = false;
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
    button.form.addEventListener("submit", () => { button.disabled = true; });
  });
});

// Rows stay numbered 0..n-1 and TOTAL_FORMS stays n, so removed rows never count toward the
// server's 100-row limit (it refuses a form count above it, whatever the rows hold).
function renumber(fieldset) {
  const prefix = fieldset.dataset.prefix;
  const numbered = new RegExp(`(${prefix})-\\d+-`);
  const rows = fieldset.querySelectorAll(".rows .param-row");
  rows.forEach((row, index) => {
    row.querySelectorAll("[name], [id], [for], button[value], [data-target]").forEach((element) => {
      // A Check button's value names its field; an input's value is what the user typed.
      const attributes = ["name", "id", "for", "data-target"];
      if (element.tagName === "BUTTON") attributes.push("value");
      for (const attribute of attributes) {
        const text = element.getAttribute(attribute);
        if (text && numbered.test(text)) {
          element.setAttribute(attribute, text.replace(numbered, `$1-${index}-`));
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
