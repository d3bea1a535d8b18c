// ievents web pages: the little behaviour that plain HTML lacks. Everything works without it.
"use strict";

// A form marked data-autosubmit (the operator's account picker) applies as soon as a choice is made.
document.addEventListener("change", (event) => {
  const form = event.target.closest && event.target.closest("form[data-autosubmit]");
  if (form && event.target.tagName === "SELECT") form.submit();
});
