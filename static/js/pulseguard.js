// PulseGuard dashboard glue: relative times, the live indicator, live frames, list refresh hints.
(function () {
  "use strict";

  function ago(date) {
    var s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    if (s < 5) return "just now";
    if (s < 60) return s + " s ago";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min ago";
    var h = Math.floor(m / 60);
    if (h < 48) return h + " h ago";
    return Math.floor(h / 24) + " days ago";
  }

  function tick() {
    document.querySelectorAll("time[data-relative]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) el.textContent = ago(d);
    });
  }

  function setLive(state, label) {
    var el = document.getElementById("live-indicator");
    if (!el) return;
    el.dataset.state = state;
    el.querySelector(".label").textContent = label;
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    if (!document.querySelector("[ws-connect]")) {
      // Pages that re-read themselves (LLM usage) say so; others are not live at all.
      var poll = document.querySelector("[data-poll-label]");
      if (poll) setLive("poll", poll.dataset.pollLabel);
      else if (document.querySelector("[data-refresh], [hx-trigger^='every']")) setLive("poll", "refreshes each minute");
      else setLive("off", "not live");
    }
  });
  // Codes the ws extension reconnects on; anything else ends live updates for this page.
  var RETRIED = [1006, 1011, 1012, 1013];
  var CLOSE_FORBIDDEN = 4403;
  var wasClosed = false;

  document.addEventListener("htmx:wsOpen", function () {
    setLive("on", "live");
    // Frames sent while the socket was down are lost: catch up once it is back.
    if (wasClosed) resync();
    wasClosed = false;
  });
  document.addEventListener("htmx:wsClose", function (evt) {
    wasClosed = true;
    var code = evt.detail && evt.detail.event ? evt.detail.event.code : 1006;
    if (code === CLOSE_FORBIDDEN) setLive("off", "no access: reload");
    else if (RETRIED.indexOf(code) >= 0) setLive("off", "reconnecting");
    else setLive("off", "not live: reload");
  });
  document.addEventListener("htmx:wsError", function () { setLive("off", "reconnecting"); });

  // Re-read the live parts of this page (same URL, same filters) and put them in place.
  var LIVE_IDS = ["fleet-counts", "fleet-table", "agent-head", "agent-body", "agent-events", "agent-now", "gpu-devices",
    "gpu-summary", "gpu-table", "telemetry-feed", "agent-work", "task-counts", "task-table", "task-head", "task-body"];
  function resync() {
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        LIVE_IDS.forEach(function (id) {
          var fresh = doc.getElementById(id), old = document.getElementById(id);
          if (fresh && old) {
            fresh = document.importNode(fresh, true);
            old.replaceWith(fresh);
            htmx.process(fresh);
          }
        });
        tick();
      })
      .catch(function () { /* the next frame or reconnect tries again */ });
  }
  document.addEventListener("htmx:afterSettle", tick);

  // A live frame is a list of out-of-band swaps. The ws extension swaps only the top-level
  // elements of a frame, and a <tr> cannot stand at the top level of HTML (the parser drops
  // it once a <section> came first), so rows arrive wrapped in <template>. htmx.swap()
  // handles both, exactly as it does for an HTTP response.
  document.addEventListener("htmx:wsBeforeMessage", function (evt) {
    if (!window.htmx || typeof htmx.swap !== "function") return; // let the extension try
    evt.preventDefault();
    var elt = evt.target;
    htmx.swap(elt, evt.detail.message, { swapStyle: "none" });
    htmx.trigger(elt, "htmx:wsAfterMessage", evt.detail);
  });

  // One re-read of a list at a time, and never a lost one: htmx drops a request on an
  // element that already has one in flight, so agents that joined while the first re-read
  // was on its way would never appear. A hint that comes in meanwhile runs once it is done.
  var refreshing = {};
  function refreshList(id) {
    var list = document.getElementById(id);
    if (!list) return;
    if (refreshing[id]) { refreshing[id] = "again"; return; }
    refreshing[id] = "busy";
    function done() {
      var again = refreshing[id] === "again";
      delete refreshing[id];
      if (again) refreshList(id);
    }
    htmx.ajax("GET", list.getAttribute("hx-get"), { source: list, target: list, swap: "outerHTML" })
      .then(done, done);
  }

  document.addEventListener("htmx:oobAfterSwap", function (evt) {
    tick();
    // evt.target is the element that came in; evt.detail.target the one it replaced.
    var incoming = evt.target;
    // The server says new agents joined: the list re-fetches itself with its own filters.
    if (incoming && incoming.id === "live-refresh" && incoming.dataset.refresh) {
      refreshList(incoming.dataset.refresh);
      return;
    }
    // A row or panel that changed under the operator's eyes glows for a moment.
    if (incoming && incoming.classList && (incoming.tagName === "TR" || incoming.tagName === "TBODY" || incoming.id === "agent-head")) {
      incoming.classList.remove("live-changed");
      void incoming.offsetWidth; // restart the animation
      incoming.classList.add("live-changed");
    }
  });
  document.addEventListener("animationend", function (evt) {
    if (evt.animationName !== "live-changed" || !evt.target.closest) return;
    var glowing = evt.target.closest(".live-changed");
    if (glowing) glowing.classList.remove("live-changed");
  });
  // Rows for agents not on this page have no target: that is expected, not an error.
  document.addEventListener("htmx:oobErrorNoTarget", function (evt) { evt.preventDefault(); });
})();
