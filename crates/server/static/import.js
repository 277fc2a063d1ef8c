// The import page: a chosen file is read into the text box, so the form posts its text (the
// preview shows what importing it would do before anything is stored).
(function () {
  var file = document.getElementById('file');
  var data = document.getElementById('data');
  if (!file || !data || !window.FileReader) return;
  file.addEventListener('change', function () {
    var chosen = file.files && file.files[0];
    if (!chosen) return;
    var reader = new FileReader();
    reader.onload = function () { data.value = reader.result; };
    reader.readAsText(chosen);
  });
})();
