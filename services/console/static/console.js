/* RefNet console: the few things a page does by itself (no framework, no inline script, CSP script-src 'self').
 *  - sign-out after inactivity: a warning before the server's idle limit, then the expiry page;
 *  - the quick exit: the link works without this; Escape pressed three times quickly leaves too;
 *  - the inbox refreshes its rows every few seconds without reloading the page.
 */
(function () {
  "use strict";
  var body = document.body;
  var exitUrl = body.getAttribute("data-exit-url") || "/exit";

  // Quick exit: replace (not push) so that Back does not return here.
  var escapes = [];
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") { return; }
    var now = Date.now();
    escapes = escapes.filter(function (t) { return now - t < 1500; });
    escapes.push(now);
    if (escapes.length >= 3) { window.location.replace(exitUrl); }
  });
  var exitLink = document.getElementById("quick-exit");
  if (exitLink) {
    exitLink.addEventListener("click", function (event) {
      event.preventDefault();
      window.location.replace(exitLink.getAttribute("href"));
    });
  }

  // Inactivity: the server ends the session after its idle time; the page says so shortly before.
  var idle = parseInt(body.getAttribute("data-idle-seconds") || "0", 10);
  var warn = parseInt(body.getAttribute("data-warn-seconds") || "0", 10);
  if (idle > 0) {
    var warning = document.getElementById("idle-warning");
    var stay = document.getElementById("idle-stay");
    if (stay) {
      stay.setAttribute("href", window.location.pathname + window.location.search);
    }
    window.setTimeout(function () {
      if (warning) { warning.hidden = false; if (stay) { stay.focus(); } }
    }, Math.max(0, idle - warn) * 1000);
    window.setTimeout(function () { window.location.replace("/auth/expired"); }, idle * 1000);
  }

  // The inbox: its rows again every few seconds (the request does not count as activity on the server).
  var inbox = document.getElementById("inbox");
  if (inbox && window.fetch) {
    var url = inbox.getAttribute("data-refresh-url");
    var every = parseInt(inbox.getAttribute("data-refresh-seconds") || "10", 10) * 1000;
    var refresh = function () {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } }).then(function (answer) {
        if (answer.status === 401) { window.location.replace("/signin?expired=true"); return null; }
        return answer.ok ? answer.text() : null;
      }).then(function (html) {
        if (html !== null && html !== undefined) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var table = fresh.querySelector("table");
          var current = inbox.querySelector("table");
          if (table && current && table.outerHTML !== current.outerHTML) {
            current.replaceWith(document.importNode(table, true));
          }
        }
      }).catch(function () { /* offline for a moment: the next round tries again */ });
    };
    window.setInterval(refresh, every);
  }
})();
