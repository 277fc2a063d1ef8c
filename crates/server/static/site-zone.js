// The site form on the first run: preselects the browser's own time zone when the picker has it
// and nothing is chosen yet.
(function () {
  var select = document.getElementById('timezone');
  if (!select || select.value || !window.Intl) return;
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  for (var i = 0; i < select.options.length; i++) {
    if (select.options[i].value === zone) { select.value = zone; return; }
  }
})();
