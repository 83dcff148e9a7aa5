/* kefu customer chat widget: a launcher button and a chat panel on any site, talking to
 * kefu-gateway over its public WebSocket protocol (docs/protocol.md). No build step, no library.
 *
 *   <script src="https://chat.example.com/widget.js" data-token-url="/kefu-token" async></script>
 *
 * Attributes of the script tag (docs/web.md): data-token (a customer JWT), data-token-url (a URL
 * on the site that answers a fresh token, as text or JSON {"token": ...}), data-gateways (the
 * WebSocket URLs, space-separated; default: /ws on the script's own origin), data-lang (zh|en;
 * default: the browser's language), data-topic (conv.open's topic), data-manual (do nothing
 * until the page calls KefuWidget.init({...}) with the same options in camelCase).
 *
 * Delivery follows the protocol's client rules: every message carries a client id (cid) and is
 * re-sent with the same cid until acknowledged, so it is stored once; per conversation the
 * widget keeps `last` (the newest message it holds in order) and fills any gap with
 * `history after=last` (a push whose `prev` is not `last`, a `resync`, a reconnect). */
(function () {
  'use strict';
  if (window.KefuWidget) return;

  var script = document.currentScript;
  var base = script && script.src ? new URL('.', script.src) : new URL('/', location.href);

  var TEXT = {
    en: {
      title: 'Customer service', open: 'Chat with us', close: 'Minimise', end: 'End chat',
      placeholder: 'Type a message…', send: 'Send', connecting: 'Connecting…',
      reconnecting: 'Connection lost, reconnecting…', sending: 'Sending…', read: 'Read',
      failed: 'Not sent yet, will retry', bot: 'Assistant', you: 'You',
      waiting: 'Waiting for an agent…', queue: 'You are number {n} in the queue ({w} waiting)', queueShort: 'Number {n} in the queue',
      assigned: '{name} is serving you', typing: '{name} is typing…',
      closed: 'The chat has ended.', newchat: 'Start a new chat',
      endq: 'End this chat?', yes: 'End', no: 'Cancel',
      rate: 'How was our service?', comment: 'Anything to tell us? (optional)', submit: 'Submit',
      thanks: 'Thank you for your feedback!', noauth: 'Chat is not available right now.',
      agent: 'Agent', botting: 'Our assistant is answering', ready: 'Ask us anything',
      stars: ['Very poor', 'Poor', 'Fair', 'Good', 'Excellent']
    },
    zh: {
      title: '在线客服', open: '联系客服', close: '最小化', end: '结束会话',
      placeholder: '请输入消息…', send: '发送', connecting: '正在连接…',
      reconnecting: '连接已断开，正在重连…', sending: '发送中…', read: '已读',
      failed: '暂未发出，将自动重试', bot: '智能助手', you: '我',
      waiting: '正在为您转接人工客服…', queue: '您排在第 {n} 位（共 {w} 人排队）', queueShort: '排队中：第 {n} 位',
      assigned: '客服 {name} 为您服务', typing: '{name} 正在输入…',
      closed: '会话已结束。', newchat: '开始新的会话',
      endq: '确定结束本次会话吗？', yes: '结束', no: '取消',
      rate: '请为本次服务评分', comment: '还有什么想告诉我们的吗？（选填）', submit: '提交',
      thanks: '感谢您的评价！', noauth: '客服暂时无法连接。',
      agent: '客服', botting: '智能助手为您服务', ready: '有问题随时问我们',
      stars: ['非常不满意', '不满意', '一般', '满意', '非常满意']
    }
  };

  function fmt(s, v) {
    return s.replace(/\{(\w+)\}/g, function (_, k) { return v[k] != null ? v[k] : ''; });
  }

  /* Stream ids "<ms>-<seq>" compared as numbers (docs/protocol.md, Missed pushes). */
  function idCmp(a, b) {
    var x = a.split('-'), y = b.split('-');
    var d = Number(x[0]) - Number(y[0]);
    return d !== 0 ? d : Number(x[1]) - Number(y[1]);
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function Widget(opts) {
    this.opts = opts;
    var lang = (opts.lang || navigator.language || 'en').toLowerCase();
    this.lang = lang.indexOf('zh') === 0 ? 'zh' : 'en';
    this.t = TEXT[this.lang];
    var gws = opts.gateways;
    if (typeof gws === 'string') gws = gws.split(/[\s,]+/).filter(Boolean);
    if (!gws || !gws.length) {
      gws = [(base.protocol === 'https:' ? 'wss://' : 'ws://') + base.host + '/ws'];
    }
    this.gateways = gws;
    this.gw = 0;              // index of the gateway tried next
    this.ws = null;
    this.live = false;        // welcome received on this.ws
    this.syncing = false;     // a catch-up is running: pushes wait in this.held
    this.held = [];
    this.reqs = {};
    this.nextReq = 1;
    this.failures = 0;
    this.conv = null;         // the conversation shown
    this.last = null;         // newest message id held in order ('' = none yet)
    this.state = null;        // bot | waiting | assigned | closed
    this.agentName = '';
    this.me = null;
    this.outbox = [];         // {cid, text, node, sent}: not yet acknowledged, in order
    this.cidSeq = 0;
    this.cidBase = Math.random().toString(36).slice(2, 10);
    this.lastTyping = 0;
    this.readSent = '';
    this.build();
    this.connect();
  }

  Widget.prototype.build = function () {
    var t = this.t, self = this;
    if (!document.querySelector('link[data-kefu-widget]')) {
      var css = document.createElement('link');
      css.rel = 'stylesheet';
      css.href = new URL('widget.css', base).href;
      css.setAttribute('data-kefu-widget', '');
      document.head.appendChild(css);
    }
    var root = this.root = el('div', 'kefu-w');
    root.id = 'kefu-widget';
    root.setAttribute('lang', this.lang === 'zh' ? 'zh-CN' : 'en');
    var launcher = this.launcher = el('button', 'kefu-launcher');
    launcher.type = 'button';
    launcher.setAttribute('aria-label', t.open);
    launcher.appendChild(el('span', 'kefu-launcher-icon'));
    launcher.appendChild(el('span', 'kefu-launcher-text', t.open));
    this.badge = el('span', 'kefu-badge');
    this.badge.hidden = true;
    launcher.appendChild(this.badge);
    launcher.onclick = function () { self.show(true); };

    var panel = this.panel = el('section', 'kefu-panel');
    panel.setAttribute('role', 'dialog');
    panel.setAttribute('aria-label', t.title);
    panel.hidden = true;
    var head = el('header', 'kefu-head');
    var titles = el('div', 'kefu-titles');
    titles.appendChild(el('div', 'kefu-title', this.opts.title || t.title));
    this.sub = el('div', 'kefu-sub', t.connecting);
    titles.appendChild(this.sub);
    head.appendChild(titles);
    this.endBtn = el('button', 'kefu-end', t.end);
    this.endBtn.type = 'button';
    this.endBtn.onclick = function () { self.askEnd(); };
    head.appendChild(this.endBtn);
    var min = el('button', 'kefu-min', '×');
    min.type = 'button';
    min.setAttribute('aria-label', t.close);
    min.onclick = function () { self.show(false); };
    head.appendChild(min);
    panel.appendChild(head);

    this.banner = el('div', 'kefu-banner');
    this.banner.hidden = true;
    panel.appendChild(this.banner);
    this.list = el('div', 'kefu-msgs');
    this.list.setAttribute('aria-live', 'polite');
    panel.appendChild(this.list);
    this.typingEl = el('div', 'kefu-typing');
    this.typingEl.hidden = true;
    panel.appendChild(this.typingEl);

    var form = this.form = el('form', 'kefu-compose');
    var input = this.input = el('textarea', 'kefu-input');
    input.rows = 1;
    input.placeholder = t.placeholder;
    input.setAttribute('aria-label', t.placeholder);
    input.oninput = function () { self.typing(); };
    input.onkeydown = function (e) {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        self.submit();
      }
    };
    form.appendChild(input);
    var send = el('button', 'kefu-send', t.send);
    send.type = 'submit';
    form.appendChild(send);
    form.onsubmit = function (e) { e.preventDefault(); self.submit(); };
    panel.appendChild(form);

    this.restart = el('button', 'kefu-restart', t.newchat);
    this.restart.type = 'button';
    this.restart.hidden = true;
    this.restart.onclick = function () { self.newChat(); };
    panel.appendChild(this.restart);

    root.appendChild(panel);
    root.appendChild(launcher);
    document.body.appendChild(root);
    document.addEventListener('visibilitychange', function () { self.markRead(); });
  };

  Widget.prototype.show = function (open) {
    this.panel.hidden = !open;
    this.launcher.hidden = open;
    this.root.classList.toggle('kefu-open', open);
    if (open) {
      this.badge.hidden = true;
      this.unread = 0;
      if (this.live && !this.conv) this.openConv();
      this.scroll();
      this.input.focus();
      this.markRead();
    }
  };

  /* ---- connection ---- */

  Widget.prototype.token = function () {
    var o = this.opts;
    if (o.token && typeof o.token === 'function') return Promise.resolve(o.token());
    if (o.tokenUrl) {
      return fetch(o.tokenUrl, { credentials: 'include', cache: 'no-store' }).then(function (r) {
        if (!r.ok) throw new Error('token URL answered ' + r.status);
        return r.text();
      }).then(function (s) {
        s = s.trim();
        return s.charAt(0) === '{' ? JSON.parse(s).token : s;
      });
    }
    return Promise.resolve(o.token);
  };

  Widget.prototype.connect = function () {
    var self = this;
    this.status(this.failures ? this.t.reconnecting : this.t.connecting);
    this.token().then(function (tok) {
      if (!tok) throw new Error('no token');
      var url = self.gateways[self.gw % self.gateways.length];
      var ws = self.ws = new WebSocket(url, 'kefu.v1.json');
      var opened = false;
      ws.onopen = function () {
        opened = true;
        ws.send(JSON.stringify({ type: 'hello', token: tok }));
      };
      ws.onmessage = function (e) {
        if (ws !== self.ws) return;
        var m;
        try { m = JSON.parse(e.data); } catch (err) { return; }
        self.frame(m);
      };
      ws.onclose = function (e) {
        if (ws !== self.ws) return;
        self.dropped(opened, e.code);
      };
    }).catch(function () {
      self.dropped(false, 0);
    });
  };

  /* The connection is gone (or never came): answers still awaited will not come, so their
   * messages stay in the outbox and are re-sent with the same cid after the catch-up. */
  Widget.prototype.dropped = function (opened, code) {
    var self = this;
    this.ws = null;
    this.live = false;
    this.syncing = false;
    this.held = [];
    var reqs = this.reqs;
    this.reqs = {};
    Object.keys(reqs).forEach(function (k) { reqs[k].reject(new Error('disconnected')); });
    this.outbox.forEach(function (m) { m.sent = false; });
    this.failures++;
    // another node next, unless this one was fine for a while (a drain: 1001 also moves on)
    if (!opened || code !== 1000) this.gw = (this.gw + 1) % this.gateways.length;
    var delay = Math.min(5000, 250 * Math.pow(2, Math.min(this.failures - 1, 5)));
    if (this.failures <= this.gateways.length) delay = 150; // each node once, at once
    clearTimeout(this.retryTimer);
    var renewable = this.opts.tokenUrl || typeof this.opts.token === 'function';
    if ((code === 4401 || code === 4402) && !renewable) {
      this.status(this.t.noauth);   // the same token would be refused again
      return;
    }
    this.status(this.t.reconnecting);
    this.retryTimer = setTimeout(function () { self.connect(); }, delay * (0.75 + Math.random() / 2));
  };

  Widget.prototype.request = function (frame) {
    var self = this;
    return new Promise(function (resolve, reject) {
      if (!self.ws || self.ws.readyState !== 1) return reject(new Error('disconnected'));
      frame.req = self.nextReq++;
      self.reqs[frame.req] = { resolve: resolve, reject: reject };
      self.ws.send(JSON.stringify(frame));
    });
  };

  Widget.prototype.frame = function (m) {
    if (m.req != null && this.reqs[m.req]) {
      var r = this.reqs[m.req];
      delete this.reqs[m.req];
      if (m.type === 'error') {
        // the session's token expired: a new connection fetches a fresh one (data-token-url)
        if (m.code === 'unauthorized' && this.live && this.ws) this.ws.close(4000, 'token expired');
        var err = new Error(m.message || m.code);
        err.code = m.code;
        err.retryMs = m.retry_ms;
        r.reject(err);
      } else {
        r.resolve(m);
      }
      return;
    }
    if (m.type === 'welcome') {
      this.live = true;
      this.failures = 0;
      this.me = m.user;
      this.catchUp();
      return;
    }
    if (this.syncing) {
      this.held.push(m);   // applied after the catch-up (rules 1-3)
      return;
    }
    this.push(m);
  };

  /* After a welcome and on a resync: find the conversation (conv.list), fetch what was missed
   * (history after=last), re-send the unacknowledged messages, then apply the held pushes. */
  Widget.prototype.catchUp = function () {
    var self = this;
    if (this.syncing) return;
    this.syncing = true;
    this.status(this.t.connecting);
    this.request({ type: 'conv.list' }).then(function (a) {
      var convs = a.convs || [];
      var mine = null;
      convs.forEach(function (c) { if (c.conv === self.conv) mine = c; });
      if (!mine && !self.conv && convs.length) {
        convs.sort(function (x, y) { return (y.created || 0) - (x.created || 0); });
        mine = convs[0];
        self.setConv(mine.conv);
      }
      if (mine) {
        self.setState(mine.state, { agent_name: mine.agent_name || self.agentName, quiet: true });
      } else if (self.conv && self.state !== 'closed') {
        self.setState('closed', {});  // it was closed while we were away
      }
      return self.conv ? self.fill() : null;
    }).then(function () {
      self.syncing = false;
      var held = self.held;
      self.held = [];
      held.forEach(function (m) { self.push(m); });
      self.status(null);
      if (!self.state) self.sub.textContent = self.t.ready;
      self.flush();
      if (!self.conv && !self.panel.hidden) self.openConv();
    }).catch(function () {
      self.syncing = false;
      if (self.ws) self.ws.close(); // start over on a fresh connection
    });
  };

  /* history after=last, page after page, showing what is new (rule 3). */
  Widget.prototype.fill = function () {
    var self = this, conv = this.conv;
    var f = { type: 'history', conv: conv, limit: 100 };
    if (this.last) f.after = this.last;
    return this.request(f).then(function (a) {
      if (conv !== self.conv) return;
      (a.msgs || []).forEach(function (m) { self.place(m, true); });
      if (a.more) return self.fill();
    });
  };

  Widget.prototype.setConv = function (id) {
    this.conv = id;
    this.last = '';
    this.readSent = '';
  };

  Widget.prototype.openConv = function () {
    var self = this;
    if (this.opening) return;
    this.opening = true;
    var f = { type: 'conv.open' };
    if (this.opts.topic) f.topic = this.opts.topic;
    this.request(f).then(function (a) {
      self.opening = false;
      self.setConv(a.conv);
      self.setState(a.state, {});
      self.flush();
    }).catch(function () { self.opening = false; });
  };

  Widget.prototype.newChat = function () {
    this.list.textContent = '';
    this.conv = null;
    this.last = null;
    this.state = null;
    this.agentName = '';
    this.restart.hidden = true;
    this.form.hidden = false;
    this.endBtn.hidden = false;
    if (this.live) this.openConv();
  };

  /* ---- pushes ---- */

  Widget.prototype.push = function (m) {
    switch (m.type) {
    case 'msg':
      if (m.conv !== this.conv) return;
      if (m.prev === this.last || (this.last && idCmp(m.id, this.last) <= 0)) this.place(m, false);
      else this.fill().catch(function () {});   // a gap: something was missed
      return;
    case 'resync':
      if (!m.conv || m.conv === this.conv) this.catchUpAgain();
      return;
    case 'conv.state':
      if (m.conv === this.conv) this.setState(m.state, m);
      return;
    case 'queue.position':
      if (m.conv === this.conv && this.state === 'waiting') {
        this.notice(fmt(this.t.queue, { n: m.position, w: m.waiting }), 'kefu-queue');
        this.sub.textContent = fmt(this.t.queueShort, { n: m.position });
      }
      return;
    case 'typing':
      if (m.conv === this.conv && m.from && m.from.id !== this.me) this.showTyping(m.from);
      return;
    case 'read':
      if (m.conv === this.conv && m.from && m.from.id !== this.me) this.showRead(m.id);
      return;
    case 'survey.request':
      if (m.conv === this.conv) this.survey(m);
      return;
    }
  };

  Widget.prototype.catchUpAgain = function () {
    var self = this;
    if (this.syncing) return;
    this.syncing = true;
    Promise.resolve(this.conv ? this.fill() : null).then(function () {
      return self.request({ type: 'conv.list' });
    }).then(function (a) {
      (a.convs || []).forEach(function (c) {
        if (c.conv === self.conv) self.setState(c.state, { agent_name: c.agent_name, quiet: true });
      });
    }).catch(function () {}).then(function () {
      self.syncing = false;
      var held = self.held;
      self.held = [];
      held.forEach(function (m) { self.push(m); });
    });
  };

  Widget.prototype.setState = function (state, m) {
    var t = this.t, prev = this.state;
    this.state = state;
    if (m.agent_name) this.agentName = m.agent_name;
    if (state === prev && m.quiet) { this.status(null); return; }
    if (state === 'waiting') {
      this.sub.textContent = t.waiting;
      if (prev !== 'waiting' && !m.quiet) this.notice(t.waiting, 'kefu-wait');
    } else if (state === 'assigned') {
      var name = this.agentName || t.agent;
      this.sub.textContent = fmt(t.assigned, { name: name });
      if (prev !== 'assigned' || m.agent) this.notice(fmt(t.assigned, { name: name }), 'kefu-assigned');
    } else if (state === 'closed') {
      this.sub.textContent = t.closed;
      if (prev !== 'closed') this.notice(t.closed, 'kefu-closed');
      this.form.hidden = true;
      this.endBtn.hidden = true;
      this.restart.hidden = false;
      this.typingEl.hidden = true;
    } else if (state === 'bot') {
      this.sub.textContent = t.botting;
    }
  };

  Widget.prototype.status = function (text) {
    this.banner.hidden = !text;
    this.banner.textContent = text || '';
    this.root.classList.toggle('kefu-offline', !!text);
  };

  /* ---- messages ---- */

  /* Shows a stored message once, in id order. Our own message (same cid as a bubble shown
   * while it was being sent) takes over that bubble. Advances last when in order. */
  Widget.prototype.place = function (m, fromHistory) {
    if (this.list.querySelector('[data-id="' + m.id + '"]')) {
      if (!this.last || idCmp(m.id, this.last) > 0) this.last = m.id;
      return;
    }
    var mine = m.from && m.from.id === this.me && m.from.role === 'customer';
    var node = null;
    if (mine && m.cid) {
      for (var i = 0; i < this.outbox.length; i++) {
        if (this.outbox[i].cid === m.cid) {
          node = this.outbox[i].node;
          this.outbox.splice(i, 1);
          break;
        }
      }
      if (!node) node = this.list.querySelector('[data-cid="' + CSS.escape(m.cid) + '"]');
    }
    if (!node) node = this.bubble(m.text, mine, m.from);
    node.classList.remove('kefu-pending', 'kefu-failed');
    node.setAttribute('data-id', m.id);
    if (m.cid) node.setAttribute('data-cid', m.cid);
    this.insert(node, m.id);
    if (!this.last || idCmp(m.id, this.last) > 0) this.last = m.id;
    if (!mine) {
      this.typingEl.hidden = true;
      if (!fromHistory || this.panel.hidden) this.bump();
      this.markRead();
    }
    this.scroll();
  };

  Widget.prototype.insert = function (node, id) {
    var kids = this.list.children;
    for (var i = 0; i < kids.length; i++) {
      var k = kids[i], kid = k.getAttribute('data-id');
      if (k === node) continue;
      if ((kid && idCmp(kid, id) > 0) || k.classList.contains('kefu-pending')) {
        this.list.insertBefore(node, k);
        return;
      }
    }
    this.list.appendChild(node);
  };

  Widget.prototype.bubble = function (text, mine, from) {
    var t = this.t;
    var row = el('div', 'kefu-msg ' + (mine ? 'kefu-mine' : from && from.role === 'bot' ? 'kefu-bot' : 'kefu-theirs'));
    if (!mine) {
      var who = from && from.role === 'bot' ? (from.name || t.bot) : (from && from.name) || t.agent;
      row.appendChild(el('div', 'kefu-from', who));
    }
    row.appendChild(el('div', 'kefu-text', text));
    row.appendChild(el('div', 'kefu-meta'));
    return row;
  };

  Widget.prototype.notice = function (text, cls) {
    var last = this.list.lastElementChild;
    if (last && last.classList.contains('kefu-note') && last.textContent === text) return;
    if (cls === 'kefu-queue' && last && last.classList.contains('kefu-queue')) {
      last.textContent = text;
      return;
    }
    this.list.appendChild(el('div', 'kefu-note ' + (cls || ''), text));
    this.scroll();
  };

  Widget.prototype.scroll = function () {
    this.list.scrollTop = this.list.scrollHeight;
  };

  Widget.prototype.bump = function () {
    if (!this.panel.hidden) return;
    this.unread = (this.unread || 0) + 1;
    this.badge.textContent = String(this.unread);
    this.badge.hidden = false;
  };

  Widget.prototype.submit = function () {
    var text = this.input.value.trim();
    if (!text || this.state === 'closed') return;
    this.input.value = '';
    this.lastTyping = 0;   // the next keystroke starts a new message: say so at once
    var cid = 'w-' + this.cidBase + '-' + (++this.cidSeq);
    var node = this.bubble(text, true);
    node.classList.add('kefu-pending');
    node.setAttribute('data-cid', cid);
    node.querySelector('.kefu-meta').textContent = this.t.sending;
    this.list.appendChild(node);
    this.scroll();
    this.outbox.push({ cid: cid, text: text, node: node, sent: false, conv: this.conv });
    if (!this.conv && this.live) this.openConv();
    this.flush();
  };

  /* Sends what is unacknowledged, oldest first, keeping at most 8 in flight (the gateway
   * recognises a re-sent cid among the sender's last 16: docs/protocol.md). */
  Widget.prototype.flush = function () {
    var self = this;
    if (!this.live || this.syncing || !this.conv) return;
    var inflight = 0;
    this.outbox.forEach(function (m) {
      if (m.sent) { inflight++; return; }
      if (inflight >= 8) return;
      m.sent = true;
      m.conv = m.conv || self.conv;
      inflight++;
      self.request({ type: 'msg.send', conv: m.conv, text: m.text, cid: m.cid }).then(function (a) {
        if (a.dup || a.prev !== self.last) {
          // stored earlier (dup) or something came between: history puts it in its place
          m.node.setAttribute('data-id', a.id);
          m.node.classList.remove('kefu-pending');
          m.node.querySelector('.kefu-meta').textContent = '';
          self.outbox = self.outbox.filter(function (x) { return x !== m; });
          self.insert(m.node, a.id);
          return self.fill();
        }
        self.place({ id: a.id, prev: a.prev, cid: m.cid, text: m.text, from: { id: self.me, role: 'customer' } }, false);
        m.node.querySelector('.kefu-meta').textContent = '';
      }).catch(function (err) {
        m.sent = false;
        if (err && err.code === 'conflict') { // the conversation was closed meanwhile
          m.node.classList.add('kefu-failed');
          self.outbox = self.outbox.filter(function (x) { return x !== m; });
          return;
        }
        if (m.node.classList.contains('kefu-pending')) {
          m.node.querySelector('.kefu-meta').textContent = self.t.failed;
        }
        if (err && (err.code === 'overloaded' || err.code === 'unavailable' || err.code === 'rate_limited')) {
          setTimeout(function () { self.flush(); }, err.retryMs || 1000);
        }
      }).then(function () { self.flush(); });
    });
  };

  Widget.prototype.typing = function () {
    var now = Date.now();
    if (!this.live || !this.conv || this.state === 'closed' || now - this.lastTyping < 3000) return;
    this.lastTyping = now;
    this.request({ type: 'typing', conv: this.conv }).catch(function () {});
  };

  Widget.prototype.showTyping = function (from) {
    var self = this;
    this.typingEl.textContent = fmt(this.t.typing, { name: from.name || this.agentName || this.t.agent });
    this.typingEl.hidden = false;
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(function () { self.typingEl.hidden = true; }, 5000);
  };

  /* Tells the other side what we have read: the newest message, when the panel is visible. */
  Widget.prototype.markRead = function () {
    if (!this.live || !this.conv || !this.last || this.panel.hidden || document.hidden) return;
    if (this.readSent && idCmp(this.last, this.readSent) <= 0) return;
    this.readSent = this.last;
    this.request({ type: 'read', conv: this.conv, id: this.last }).catch(function () {});
  };

  /* The agent read up to id: "Read" under our newest message at or before it. */
  Widget.prototype.showRead = function (id) {
    var mine = this.list.querySelectorAll('.kefu-mine[data-id]'), mark = null;
    for (var i = 0; i < mine.length; i++) {
      if (idCmp(mine[i].getAttribute('data-id'), id) <= 0) mark = mine[i];
    }
    if (!mark) return;
    var old = this.list.querySelectorAll('.kefu-read');
    for (var j = 0; j < old.length; j++) { old[j].classList.remove('kefu-read'); old[j].querySelector('.kefu-meta').textContent = ''; }
    mark.classList.add('kefu-read');
    mark.querySelector('.kefu-meta').textContent = this.t.read;
  };

  /* ---- ending and rating ---- */

  Widget.prototype.askEnd = function () {
    var self = this, t = this.t;
    if (!this.conv || this.state === 'closed' || this.list.querySelector('.kefu-confirm')) return;
    var box = el('div', 'kefu-confirm');
    box.appendChild(el('span', null, t.endq));
    var yes = el('button', 'kefu-yes', t.yes), no = el('button', 'kefu-no', t.no);
    yes.type = no.type = 'button';
    no.onclick = function () { box.remove(); };
    yes.onclick = function () {
      box.remove();
      self.request({ type: 'conv.close', conv: self.conv }).then(function () {
        self.setState('closed', {});
      }).catch(function (err) {
        if (err && err.code === 'conflict') self.setState('closed', {});
      });
    };
    box.appendChild(yes);
    box.appendChild(no);
    this.list.appendChild(box);
    this.scroll();
  };

  Widget.prototype.survey = function (m) {
    var self = this, t = this.t, stars = 0;
    if (this.list.querySelector('.kefu-survey')) return;
    var box = el('form', 'kefu-survey');
    box.appendChild(el('div', 'kefu-survey-q', t.rate));
    var row = el('div', 'kefu-stars');
    var buttons = [];
    for (var i = 1; i <= (m.max || 5); i++) {
      (function (n) {
        var b = el('button', 'kefu-star', '★');
        b.type = 'button';
        b.title = t.stars[n - 1] || String(n);
        b.setAttribute('aria-label', n + ' · ' + b.title);
        b.setAttribute('data-stars', String(n));
        b.onclick = function () {
          stars = n;
          buttons.forEach(function (x, k) { x.classList.toggle('kefu-on', k < n); });
          send.disabled = false;
        };
        buttons.push(b);
        row.appendChild(b);
      })(i);
    }
    box.appendChild(row);
    var comment = el('textarea', 'kefu-comment');
    comment.placeholder = t.comment;
    comment.maxLength = 1000;
    box.appendChild(comment);
    var send = el('button', 'kefu-rate', t.submit);
    send.type = 'submit';
    send.disabled = true;
    box.appendChild(send);
    box.onsubmit = function (e) {
      e.preventDefault();
      if (!stars) return;
      send.disabled = true;
      var f = { type: 'conv.rate', conv: m.conv, stars: stars };
      if (comment.value.trim()) f.comment = comment.value.trim();
      self.request(f).then(function () {
        box.replaceWith(el('div', 'kefu-note kefu-thanks', t.thanks));
      }).catch(function (err) {
        if (err && err.code === 'conflict') box.replaceWith(el('div', 'kefu-note kefu-thanks', t.thanks));
        else send.disabled = false;
      });
    };
    this.list.appendChild(box);
    this.scroll();
    if (this.panel.hidden) this.bump();
  };

  /* ---- the page's handle ---- */

  var instance = null;
  window.KefuWidget = {
    /* init({token | tokenUrl, gateways, lang, topic, title, open}): token may be a function
     * returning a token or a promise of one. */
    init: function (opts) {
      if (instance) return instance;
      instance = new Widget(opts || {});
      if (opts && opts.open) instance.show(true);
      return instance;
    },
    open: function () { if (instance) instance.show(true); },
    close: function () { if (instance) instance.show(false); }
  };

  var d = script ? script.dataset : {};
  if (script && !('manual' in d) && (d.token || d.tokenUrl)) {
    var start = function () {
      window.KefuWidget.init({
        token: d.token, tokenUrl: d.tokenUrl, gateways: d.gateways, lang: d.lang,
        topic: d.topic, title: d.title, open: 'open' in d
      });
    };
    if (document.body) start();
    else document.addEventListener('DOMContentLoaded', start);
  }
})();
