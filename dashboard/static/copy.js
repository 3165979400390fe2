// Shows the copy buttons and copies the text they point at. Everything
// works without it.
document.querySelectorAll("button.copy").forEach(function (b) {
  b.hidden = false;
  b.addEventListener("click", function () {
    var el = document.getElementById(b.dataset.copy);
    if (el && navigator.clipboard) navigator.clipboard.writeText(el.textContent);
  });
});
