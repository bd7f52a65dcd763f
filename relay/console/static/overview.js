// The overview refreshes itself every 15 seconds while it is visible (a local file: the CSP allows no inline script).
"use strict";
const REFRESH_MS = 15000;
setInterval(() => {
  if (!document.hidden && !document.activeElement?.matches("input, select, textarea")) {
    window.location.reload();
  }
}, REFRESH_MS);
