// The "Print" button of a page made to be printed (backup codes).
(function () {
  var button = document.getElementById("print");
  if (button) button.addEventListener("click", function () { window.print(); });
})();
