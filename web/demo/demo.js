/* The demo shop starts the widget with what scripts/demo.sh put in the URL's fragment:
 *   /demo/#token=<customer JWT>&gateways=ws://h:1/ws,ws://h:2/ws&lang=zh
 * A real site puts data-token-url on the script tag instead (docs/web.md). The fragment is
 * never sent to a server, so the token stays out of access logs. */
(function () {
  'use strict';
  var p = new URLSearchParams(location.hash.slice(1));
  var token = p.get('token');
  if (!token) return;
  document.getElementById('demo-hint').hidden = true;
  window.KefuWidget.init({
    token: token,
    gateways: p.get('gateways') || undefined,
    lang: p.get('lang') || undefined,
    topic: p.get('topic') || undefined,
    open: p.get('open') === '1'
  });
})();
