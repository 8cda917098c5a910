// arrowline monitor: follow a running run. The page is whole without this script; with it, a
// change of the run's or a task's state (server-sent events from /runs/{run}/events) redraws
// the page's main part from the server, so the graph, the timeline and the table stay current.
"use strict";
(function () {
  const url = document.body.dataset.live;
  if (!url || !window.EventSource) return;
  const status = document.getElementById("live-status");
  let busy = false;
  let again = false;

  async function redraw() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (response.ok) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("main");
        if (fresh) document.getElementById("main").replaceWith(fresh);
      }
    } finally {
      busy = false;
      if (again) { again = false; redraw(); }
    }
  }

  const source = new EventSource(url);
  status.textContent = "live";
  status.className = "live";
  // every event redraws, the first included: the run (or one of its tasks) may have moved
  // between the page's rendering and the stream's start
  source.addEventListener("state", function () { redraw(); });
  // between changes too, now and then: the wall time and the running bars grow
  const ticker = window.setInterval(redraw, 5000);
  source.addEventListener("end", function () {
    window.clearInterval(ticker);
    source.close();
    status.textContent = "";
    status.className = "";
    redraw();
  });
  source.onerror = function () { status.textContent = "reconnecting…"; };
})();
