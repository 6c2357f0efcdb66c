// sluice console: enhancements only. Every page works without this script; with it, lists and
// event pages update live over /ws, relative times stay current, and JSON fields are checked
// as you type. No framework, no build step.
(function () {
  'use strict';

  // ---- relative times ----

  function relative(iso) {
    var at = Date.parse(iso);
    if (isNaN(at)) return null;
    var seconds = Math.round((Date.now() - at) / 1000);
    var amount = Math.abs(seconds);
    var text;
    if (amount < 5) return 'just now';
    if (amount < 60) text = amount + ' s';
    else if (amount < 3600) text = Math.floor(amount / 60) + ' min';
    else if (amount < 86400) text = Math.floor(amount / 3600) + ' h';
    else if (amount < 172800) text = '1 day';
    else text = Math.floor(amount / 86400) + ' days';
    return seconds < 0 ? 'in ' + text : text + ' ago';
  }

  function refreshTimes(root) {
    var times = (root || document).querySelectorAll('time[data-relative]');
    for (var i = 0; i < times.length; i++) {
      var text = relative(times[i].getAttribute('datetime'));
      if (text !== null && times[i].textContent !== text) times[i].textContent = text;
    }
  }

  function timeElement(date) {
    var time = document.createElement('time');
    time.setAttribute('datetime', date.toISOString());
    time.setAttribute('data-relative', '');
    time.title = date.toISOString().replace('T', ' ').replace('Z', ' UTC');
    time.textContent = relative(date.toISOString());
    return time;
  }

  // ---- the live connection ----

  var statusEl = document.getElementById('live-status');

  function setStatus(text, state) {
    if (!statusEl) return;
    statusEl.hidden = false;
    statusEl.textContent = text;
    statusEl.classList.toggle('is-live', state === 'live');
    statusEl.classList.toggle('is-down', state === 'down');
  }

  // Opens /ws with a query and reconnects with backoff; calls onMessage with each parsed
  // message and onReconnect after a reconnection (messages may have been missed meanwhile).
  function live(query, onMessage, onReconnect) {
    if (!('WebSocket' in window)) return;
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws' + query;
    var delay = 1000;
    var opened = false;
    function open() {
      var socket = new WebSocket(url);
      socket.onopen = function () {
        setStatus('Live', 'live');
        delay = 1000;
        if (opened && onReconnect) onReconnect();
        opened = true;
      };
      socket.onmessage = function (event) {
        var message;
        try { message = JSON.parse(event.data); } catch (e) { return; }
        onMessage(message);
      };
      socket.onclose = function () {
        setStatus('Reconnecting…', 'down');
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 15000);
      };
    }
    open();
  }

  // ---- regions refreshed from the server ----

  // Re-fetches the page a region came from and swaps in the fresh copies of every live region,
  // at most once per `every` ms.
  function refresher(every) {
    var regions = document.querySelectorAll('[data-live-refresh]');
    if (!regions.length) return null;
    var src = regions[0].getAttribute('data-src');
    var running = false, again = false, last = 0, timer = null;
    function run() {
      timer = null;
      if (running) { again = true; return; }
      running = true;
      last = Date.now();
      fetch(src, { headers: { 'Accept': 'text/html' }, credentials: 'same-origin' })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null) return;
          var fresh = new DOMParser().parseFromString(html, 'text/html');
          var current = document.querySelectorAll('[data-live-refresh]');
          for (var i = 0; i < current.length; i++) {
            var replacement = fresh.getElementById(current[i].id);
            // Never pull a region out from under someone using it.
            if (!replacement || current[i].contains(document.activeElement)) continue;
            current[i].replaceWith(document.importNode(replacement, true));
          }
          enhanceEditors(document);
        })
        .catch(function () {})
        .then(function () {
          running = false;
          if (again) { again = false; schedule(); }
        });
    }
    function schedule() {
      if (timer) return;
      timer = setTimeout(run, Math.max(150, every - (Date.now() - last)));
    }
    return schedule;
  }

  // ---- the events list ----

  function eventsList(body) {
    var wanted = {
      state: body.getAttribute('data-state'),
      type: body.getAttribute('data-type'),
      externalId: body.getAttribute('data-external-id')
    };
    var insert = body.getAttribute('data-insert') === 'true';
    var arrived = 0;

    function cell(label, className) {
      var td = document.createElement('td');
      td.setAttribute('data-label', label);
      if (className) td.className = className;
      return td;
    }

    function badge(state) {
      var span = document.createElement('span');
      span.className = 'badge state-' + state;
      span.setAttribute('data-state-badge', '');
      span.textContent = state;
      return span;
    }

    function row(message) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-event-id', String(message.event_id));
      tr.className = 'is-new';
      var first = cell('Event');
      var link = document.createElement('a');
      link.className = 'ext-id';
      link.href = '/console/events/' + encodeURIComponent(message.event_id);
      link.textContent = message.external_id;
      var id = document.createElement('span');
      id.className = 'muted';
      id.textContent = '#' + message.event_id;
      first.append(link, ' ', id);
      var type = cell('Type');
      type.textContent = message.event_type;
      var state = cell('State');
      state.appendChild(badge(message.state));
      var received = cell('Received', 'num');
      received.textContent = '1';
      var attempts = cell('Attempts', 'num');
      attempts.setAttribute('data-attempts', '');
      attempts.textContent = '0';
      var created = cell('Created');
      created.appendChild(timeElement(new Date()));
      tr.append(first, type, state, received, attempts, created, cell('Last error', 'error-text'));
      return tr;
    }

    function matches(message) {
      return (!wanted.state || wanted.state === message.state) &&
        (!wanted.type || wanted.type === message.event_type) &&
        (!wanted.externalId || wanted.externalId === message.external_id);
    }

    var query = wanted.type ? '?event_type=' + encodeURIComponent(wanted.type) : '';
    live(query, function (message) {
      if (message.type !== 'event.created' && message.type !== 'event.updated') return;
      var existing = body.querySelector('tr[data-event-id="' + Number(message.event_id) + '"]');
      if (existing) {
        var current = existing.querySelector('[data-state-badge]');
        if (current && current.textContent !== message.state) {
          current.replaceWith(badge(message.state));
          existing.querySelector('[data-state-badge]').classList.add('is-updated');
        }
        // Each attempt announces itself with its id; count the ones not seen yet.
        var attempt = message.attempt_id ? String(message.attempt_id) : '';
        if (attempt && existing.getAttribute('data-attempt-id') !== attempt) {
          existing.setAttribute('data-attempt-id', attempt);
          var count = existing.querySelector('[data-attempts]');
          if (count && message.status === 'running') {
            count.textContent = String((Number(count.textContent) || 0) + 1);
          }
        }
        return;
      }
      if (message.type === 'event.created' && insert && matches(message)) {
        var empty = document.getElementById('events-empty');
        if (empty) empty.remove();
        body.insertBefore(row(message), body.firstChild);
        arrived += 1;
        setStatus('Live · ' + arrived + ' new', 'live');
      }
    });
  }

  // ---- JSON editors ----

  function enhanceEditors(root) {
    var editors = root.querySelectorAll('textarea[data-json-editor]:not([data-enhanced])');
    for (var i = 0; i < editors.length; i++) enhanceEditor(editors[i]);
  }

  function enhanceEditor(textarea) {
    textarea.setAttribute('data-enhanced', '');
    var error = document.getElementById(textarea.id + '-error');
    var serverMessage = error && error.hasAttribute('data-server-error') ? error.textContent : '';
    var tools = document.createElement('div');
    tools.className = 'json-tools';
    var format = document.createElement('button');
    format.type = 'button';
    format.textContent = 'Format JSON';
    var label = document.querySelector('label[for="' + textarea.id + '"]');
    format.setAttribute('aria-label', 'Format ' + (label ? label.textContent.trim() : 'JSON'));
    tools.appendChild(format);
    textarea.insertAdjacentElement('afterend', tools);

    function check() {
      var text = textarea.value.trim();
      if (!text) { show(''); return null; }
      try {
        var value = JSON.parse(text);
        // The server's message stays until the text changes.
        show(textarea.value === textarea.defaultValue ? serverMessage : '');
        return value;
      } catch (e) {
        show('Not valid JSON yet: ' + e.message);
        return undefined;
      }
    }

    function show(message) {
      if (!error) return;
      error.textContent = message;
      error.hidden = !message;
      if (message) textarea.setAttribute('aria-invalid', 'true');
      else textarea.removeAttribute('aria-invalid');
    }

    var pending = null;
    textarea.addEventListener('input', function () {
      clearTimeout(pending);
      pending = setTimeout(check, 400);
    });
    textarea.addEventListener('blur', check);
    format.addEventListener('click', function () {
      var value = check();
      if (value !== undefined && value !== null) {
        textarea.value = JSON.stringify(value, null, 2);
        check();
      }
      textarea.focus();
    });
  }

  // ---- start ----

  function start() {
    refreshTimes(document);
    setInterval(function () { refreshTimes(document); }, 15000);
    enhanceEditors(document);

    var events = document.querySelector('[data-live-events]');
    if (events) eventsList(events);

    var schedule = refresher(document.getElementById('overview-live') ? 5000 : 300);
    if (schedule) {
      var head = document.querySelector('[data-event-id][data-live-refresh]');
      var query = head ? '?event_id=' + encodeURIComponent(head.getAttribute('data-event-id')) : '';
      live(query, function (message) {
        if (message.type === 'event.created' || message.type === 'event.updated') schedule();
      }, schedule);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
