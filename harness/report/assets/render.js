(function () {
  var charts = JSON.parse(document.getElementById('report-chart-data').textContent);
  var done = 0;
  document.body.dataset.chartsExpected = charts.length;
  document.body.dataset.chartsRendered = 0;
  if (typeof Plotly === 'undefined') { __reportError('plotly.js did not load'); return; }
  charts.forEach(function (chart) {
    try {
      Plotly.newPlot(chart.id, chart.data, chart.layout, {responsive: true, displaylogo: false})
        .then(function () { done += 1; document.body.dataset.chartsRendered = done; },
              function (err) { __reportError(chart.id + ': ' + err); });
    } catch (err) { __reportError(chart.id + ': ' + err); }
  });
})();
