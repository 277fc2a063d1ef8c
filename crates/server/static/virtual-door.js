// A virtual door's panel: reads the door's state every second and shows it.
(function(){
  var url = document.currentScript.getAttribute("data-state");
  function set(id, text){ var e = document.getElementById(id); if (e && e.textContent !== text) e.textContent = text; }
  function tick(){
    fetch(url, {credentials: "same-origin"}).then(function(r){ return r.ok ? r.json() : null; }).then(function(v){
      if (!v) return;
      set("power", v.powered ? "on" : "off");
      set("network", v.network ? "connected" : "cut");
      set("ntp", !v.ntp ? "blocked" : (v.ntp_last || "not asked yet"));
      set("clock", v.clock_valid ? (v.clock_utc + " \u00b1 " + v.clock_error_ms + " ms, from " + v.clock_source) : "not set");
      set("lock", v.unlocked ? "open" : "locked");
      set("feedback", v.feedback || "\u2014");
      set("decision", v.last_decision ? (v.last_decision[0] + " \u2192 " + v.last_decision[1]) : "\u2014");
      set("generation", String(v.generation));
      set("outbox", String(v.outbox));
      set("last-sync", v.last_sync || "\u2014");
      set("door-position", (v.door_open ? "open" : "closed") + (v.contact ? "" : " (no contact fitted: the controller does not see it)"));
      set("alarm", v.alarm || "\u2014");
      set("lockdown", v.lockdown ? "LOCKDOWN" : "no");
      var green = v.feedback === "granted";
      document.getElementById("led-green").classList.toggle("green", green);
      document.getElementById("led-red").classList.toggle("red", !green && !!v.feedback);
    }).catch(function(){});
  }
  setInterval(tick, 1000);
})();
