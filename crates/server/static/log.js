// The access log's live updates: prepends rows sent by /log/stream; keeps the table bounded.
(function () {
  var table = document.getElementById('log');
  var url = table && table.getAttribute('data-stream');
  if (!url || !window.EventSource) return;
  var rows = document.getElementById('log-rows');
  var live = document.getElementById('live');
  var source = new EventSource(url);
  source.onopen = function () { if (live) live.textContent = 'live'; };
  source.onerror = function () { if (live) live.textContent = 'reconnecting…'; };
  source.onmessage = function (m) {
    var e = JSON.parse(m.data);
    if (document.getElementById('event-' + e.id)) return;
    var empty = document.getElementById('log-empty');
    if (empty) empty.remove();
    rows.insertAdjacentHTML('afterbegin', e.html);
    while (rows.rows.length > 500) rows.deleteRow(-1);
  };
})();
