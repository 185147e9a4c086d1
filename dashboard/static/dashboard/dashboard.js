/*
 * Live updates for the dashboard.
 *
 * The page's WebSocket (htmx's ws extension, on <body>) carries small JSON
 * notifications: {"jobs": [[id, status, progress], ...], "resync", "created",
 * "workers"}. They are never rendered as they are. Instead, every element
 * with a data-live attribute re-requests its own fragment over HTTP (its
 * hx-trigger includes "live"), so what the page shows always comes from the
 * database, with the same permission checks as any request.
 *
 *   data-live="jobs"       refresh on any job event
 *   data-live="job:42"     refresh when job 42 changes
 *   data-live="workers"    refresh when a worker starts, stops or beats
 *
 * Refreshes are throttled per element (at most one a second, or every
 * data-live-interval ms, and always one after the last event), so a burst
 * of events costs a few requests. Every
 * (re)connect refreshes everything, so events missed while the socket was
 * down leave nothing stale.
 */
(function () {
  "use strict";

  var MIN_INTERVAL_MS = 1000; // per element; data-live-interval overrides it
  var timers = {};
  var lastRun = {};

  function liveElements() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live]"));
  }

  function refresh(id) {
    if (timers[id]) {
      return; // one is already scheduled; it will fetch the latest state
    }
    var current = document.getElementById(id);
    var interval = Number(current && current.getAttribute("data-live-interval")) || MIN_INTERVAL_MS;
    var wait = Math.max(0, (lastRun[id] || 0) + interval - Date.now());
    timers[id] = setTimeout(function () {
      timers[id] = null;
      lastRun[id] = Date.now();
      var element = document.getElementById(id); // the one in the page now, after earlier swaps
      if (element && window.htmx) {
        htmx.trigger(element, "live");
      }
    }, wait);
  }

  function wants(element, message) {
    var topics = (element.getAttribute("data-live") || "").split(/\s+/);
    var ids = (message.jobs || []).map(function (row) { return String(row[0]); });
    return topics.some(function (topic) {
      if (topic === "jobs") {
        return message.resync || ids.length > 0;
      }
      if (topic === "workers") {
        return message.workers;
      }
      if (topic.indexOf("job:") === 0) {
        return message.resync || ids.indexOf(topic.slice(4)) >= 0;
      }
      return false;
    });
  }

  // Progress moves often: set bars at once, before the throttled refresh.
  function showProgress(message) {
    (message.jobs || []).forEach(function (row) {
      var id = row[0];
      var progress = row[2];
      if (progress === null || progress === undefined) {
        return;
      }
      document.querySelectorAll('[data-progress-for="' + id + '"]').forEach(function (bar) {
        bar.setAttribute("aria-valuenow", progress);
        var fill = bar.querySelector("span");
        if (fill) {
          fill.style.width = progress + "%";
        }
      });
      document.querySelectorAll('[data-progress-text-for="' + id + '"]').forEach(function (text) {
        text.textContent = progress + "%";
      });
    });
  }

  function setStatus(state, text) {
    var badge = document.getElementById("live-status");
    if (badge) {
      badge.setAttribute("data-state", state);
      badge.textContent = text;
    }
  }

  document.addEventListener("htmx:wsBeforeMessage", function (event) {
    // Notifications only: stop the extension from swapping the text in as HTML.
    event.preventDefault();
    var message;
    try {
      message = JSON.parse(event.detail.message);
    } catch (error) {
      return;
    }
    showProgress(message);
    liveElements().forEach(function (element) {
      if (element.id && wants(element, message)) {
        refresh(element.id);
      }
    });
  });

  document.addEventListener("htmx:wsOpen", function () {
    setStatus("live", "Live");
    // Whatever happened while the socket was closed: re-read it all.
    liveElements().forEach(function (element) {
      if (element.id) {
        refresh(element.id);
      }
    });
  });

  document.addEventListener("htmx:wsClose", function () {
    setStatus("offline", "Reconnecting");
  });

  // A live table with checkboxes keeps the user's selection across refreshes.
  var checked = {};
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (target && target.hasAttribute("data-keep-checked")) {
      checked[target.id] = Array.prototype.map.call(
        target.querySelectorAll("input[type=checkbox]:checked"),
        function (box) { return box.name + "=" + box.value; }
      );
    }
  });
  document.addEventListener("htmx:afterSettle", function () {
    Object.keys(checked).forEach(function (id) {
      var element = document.getElementById(id);
      if (element) {
        element.querySelectorAll("input[type=checkbox]").forEach(function (box) {
          if (checked[id].indexOf(box.name + "=" + box.value) >= 0) {
            box.checked = true;
          }
        });
      }
      delete checked[id];
    });
  });
})();
