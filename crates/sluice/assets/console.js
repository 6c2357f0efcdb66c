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

  // ---- the live connection ----

  var statusEl = document.getElementById('live-status');

  function setStatus(text, state) {
    if (!statusEl) return;
    statusEl.hidden = false;
    statusEl.textContent = text;
    statusEl.classList.toggle('is-live', state === 'live');
    statusEl.classList.toggle('is-down', state === 'down');
  }

  // Opens /ws with a query and reconnects with backoff. onOpen runs on every (re)connection:
  // whatever changed before it (while the page loaded, or while disconnected) was not
  // announced, so the page catches up then; onMessage gets each parsed message.
  function live(query, onMessage, onOpen) {
    if (!('WebSocket' in window)) return;
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws' + query;
    var delay = 1000;
    function open() {
      var socket = new WebSocket(url);
      socket.onopen = function () {
        setStatus('Live', 'live');
        delay = 1000;
        onOpen();
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

  // Runs `task` (which returns a promise) soon, at most once per `every` ms, never twice at once.
  function throttled(every, task) {
    var running = false, again = false, last = 0, timer = null;
    function run() {
      timer = null;
      if (running) { again = true; return; }
      running = true;
      last = Date.now();
      task().catch(function () {}).then(function () {
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

  // The server's current rendering of a page, parsed.
  function fetchPage(src) {
    return fetch(src, { headers: { 'Accept': 'text/html' }, credentials: 'same-origin' })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (html) { return new DOMParser().parseFromString(html, 'text/html'); });
  }

  // ---- regions refreshed from the server (overview, event page) ----

  function liveRegions(every) {
    var regions = document.querySelectorAll('[data-live-refresh]');
    if (!regions.length) return;
    var src = regions[0].getAttribute('data-src');
    var schedule = throttled(every, function () {
      return fetchPage(src).then(function (fresh) {
        var current = document.querySelectorAll('[data-live-refresh]');
        for (var i = 0; i < current.length; i++) {
          var replacement = fresh.getElementById(current[i].id);
          // Never pull a region out from under someone using it.
          if (!replacement || current[i].contains(document.activeElement)) continue;
          current[i].replaceWith(document.importNode(replacement, true));
        }
        enhanceEditors(document);
      });
    });
    var head = document.querySelector('[data-live-refresh][data-event-id]');
    var query = head ? '?event_id=' + encodeURIComponent(head.getAttribute('data-event-id')) : '';
    live(query, function (message) {
      if (message.type === 'event.created' || message.type === 'event.updated') schedule();
    }, schedule);
  }

  // ---- the events list ----

  // Rows come from the server (one template, the same filters and order); on the first page new
  // ones are inserted, elsewhere only the rows shown are updated.
  function eventsList(body) {
    var insert = body.getAttribute('data-insert') === 'true';
    var type = body.getAttribute('data-type');
    var arrived = 0;

    function stateOf(row) {
      var badge = row.querySelector('[data-state-badge]');
      return badge ? badge.textContent : '';
    }

    function sync(fresh) {
      var freshBody = fresh.getElementById(body.id);
      if (!freshBody) return;
      var seen = {};
      var anchor = null;
      var rows = freshBody.querySelectorAll('tr[data-event-id]');
      for (var i = 0; i < rows.length; i++) {
        var id = rows[i].getAttribute('data-event-id');
        seen[id] = true;
        var existing = body.querySelector('tr[data-event-id="' + id + '"]');
        var row = document.importNode(rows[i], true);
        if (existing) {
          var changed = stateOf(existing) !== stateOf(row);
          if (existing.contains(document.activeElement)) {
            // Keep the focused link; refresh the cells around it.
            var oldBadge = existing.querySelector('[data-state-badge]');
            if (oldBadge) oldBadge.replaceWith(row.querySelector('[data-state-badge]'));
            row = existing;
          } else {
            existing.replaceWith(row);
          }
          if (changed) row.querySelector('[data-state-badge]').classList.add('is-updated');
          anchor = row;
        } else if (insert) {
          row.classList.add('is-new');
          body.insertBefore(row, anchor ? anchor.nextSibling : body.firstChild);
          anchor = row;
          arrived += 1;
        }
      }
      if (insert) {
        var shown = body.querySelectorAll('tr[data-event-id]');
        for (var j = 0; j < shown.length; j++) {
          if (!seen[shown[j].getAttribute('data-event-id')] && !shown[j].contains(document.activeElement)) {
            shown[j].remove();
          }
        }
        var empty = document.getElementById('events-empty');
        if (empty && body.querySelector('tr')) empty.remove();
      }
      refreshTimes(body);
      if (arrived) setStatus('Live · ' + arrived + ' new', 'live');
    }

    var schedule = throttled(1000, function () {
      return fetchPage(location.pathname + location.search).then(sync);
    });
    live(type ? '?event_type=' + encodeURIComponent(type) : '', function (message) {
      if (message.type !== 'event.created' && message.type !== 'event.updated') return;
      if (insert || body.querySelector('tr[data-event-id="' + Number(message.event_id) + '"]')) schedule();
    }, schedule);
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
    // Below the field's error message, so the message stays right under the field.
    (error || textarea).insertAdjacentElement('afterend', tools);

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
    // The overview counts a lot; it refreshes less often than an event's page.
    liveRegions(document.getElementById('overview-live') ? 10000 : 300);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
