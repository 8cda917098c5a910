// arrowline monitor: follow a running run. The page is whole without this script; with it, a
// change of the run's or a task's state (server-sent events from /runs/{run}/events) redraws
// the page's main part from the server, so the graph, the timeline and the table stay current.
"use strict";
(function () {
  const url = document.body.dataset.live;
  if (!url || !window.EventSource) return;
  const status = document.getElementById("live-status");
  const shown = document.getElementById("run-state");
  const shownState = shown ? shown.textContent.trim() : "";
  let first = true;
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
  source.addEventListener("state", function (event) {
    let now = {};
    try { now = JSON.parse(event.data); } catch (e) { now = {}; }
    // the first event is the state when the stream opened: the page already shows it, unless
    // the run moved between the page's rendering and the stream's start
    if (first && now.state === shownState) { first = false; return; }
    first = false;
    redraw();
  });
  source.addEventListener("end", function () {
    source.close();
    status.textContent = "";
    status.className = "";
    redraw();
  });
  source.onerror = function () { status.textContent = "reconnecting…"; };
})();
