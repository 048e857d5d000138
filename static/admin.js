// The page that shows a new key's access token once (admin/keys.html). A file, not an inline
// script, so a Content-Security-Policy without 'unsafe-inline' allows it.
"use strict";

// Reloading must not send the form again (a second key): make this entry a plain GET of the
// keys page, which never shows a token.
history.replaceState(null, "", location.href);

document.querySelectorAll("input.select-on-focus").forEach((input) => {
  input.addEventListener("focus", () => input.select());
});

const copyStatus = document.getElementById("copy-status");
document.querySelectorAll("button[data-copy]").forEach((button) => {
  button.hidden = false; // without this script there is nothing to click; select-and-copy still works
  button.addEventListener("click", async () => {
    const input = document.getElementById(button.dataset.copy);
    input.focus();
    input.select();
    let copied = false;
    try {
      await navigator.clipboard.writeText(input.value); // needs https or localhost
      copied = true;
    } catch {
      copied = document.execCommand("copy");
    }
    const what = document.querySelector(`label[for="${input.id}"]`).textContent;
    copyStatus.textContent = copied ? `${what}: copied.` : "Press Ctrl+C (or ⌘C) to copy.";
  });
});
