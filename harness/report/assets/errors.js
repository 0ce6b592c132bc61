window.__reportErrors = [];
function __showErrors() {
  var el = document.getElementById('report-errors');
  if (el && window.__reportErrors.length) { el.textContent = window.__reportErrors.join('\n'); el.hidden = false; }
}
function __reportError(msg) { window.__reportErrors.push(String(msg)); __showErrors(); }
window.onerror = function (msg, src, line) { __reportError(msg + ' (' + (src || '') + ':' + line + ')'); };
window.addEventListener('unhandledrejection', function (e) {
  __reportError('unhandled rejection: ' + ((e.reason && e.reason.message) || e.reason));
});
(function () {
  var original = console.error;
  console.error = function () {
    __reportError('console.error: ' + Array.prototype.slice.call(arguments).join(' '));
    return original.apply(console, arguments);
  };
})();
// Errors raised before the errors element existed (e.g. while plotly.js loaded) are shown once it does.
document.addEventListener('DOMContentLoaded', __showErrors);
