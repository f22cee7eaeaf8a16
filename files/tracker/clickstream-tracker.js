/*
 * Clickstream tracker: include it in a shop page, no build step.
 *
 *   <script src="clickstream-tracker.js"></script>
 *   <script>
 *     const tracker = ClickstreamTracker.start({ endpoint: "https://<api>/clickstream" });
 *     tracker.pageView();                               // page_view (+ home/category views)
 *     tracker.track("product_view", { product: {...} }); // any event of the contract
 *     tracker.identify("user_2abc", "clerk_google");    // after login; identify(null) to log out
 *   </script>
 *
 * Elements with data-clickstream-event="add_to_cart_click" (and, optionally,
 * data-clickstream-product='{"id": ...}') are tracked on click.
 *
 * Events follow files/contract/clickstream-event.schema.json (the tracker shape) and carry an
 * eventId and an eventTimestamp, so that a retried batch is deduplicated by the warehouse, and
 * a sentAt when their batch leaves, so that a wrong device clock is corrected. They
 * are queued (in localStorage, so a reload loses nothing), sent in batches, retried with backoff
 * when the network or the ingest fails, and flushed with navigator.sendBeacon when the page is
 * hidden. A batch the ingest refuses as invalid (4xx) is dropped, with the reason on the console:
 * resending it would never succeed.
 */
(function (global) {
  "use strict";

  var CLIENT_KEY = "clickstream.clientId";
  var SESSION_KEY = "clickstream.session";
  var QUEUE_KEY = "clickstream.queue";
  var SESSION_IDLE_MS = 30 * 60 * 1000;
  var MAX_QUEUE = 1000;

  function uuid() {
    if (global.crypto && global.crypto.randomUUID) {
      return global.crypto.randomUUID();
    }
    var bytes = new Uint8Array(16);
    global.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) {
      return (b + 0x100).toString(16).slice(1);
    }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" +
      hex.slice(16, 20) + "-" + hex.slice(20);
  }

  function readJson(storage, key, fallback) {
    try {
      var text = storage.getItem(key);
      return text ? JSON.parse(text) : fallback;
    } catch (error) {
      return fallback;
    }
  }

  function writeJson(storage, key, value) {
    try {
      storage.setItem(key, JSON.stringify(value));
    } catch (error) {
      /* storage full or disabled: the in-memory queue still works */
    }
  }

  function Tracker(options) {
    this.endpoint = options.endpoint;
    this.batchSize = options.batchSize || 20;
    this.flushIntervalMs = options.flushIntervalMs || 5000;
    this.maxBackoffMs = options.maxBackoffMs || 60000;
    this.userId = options.userId || null;
    this.identitySource = options.identitySource || null;
    this.queue = readJson(global.localStorage, QUEUE_KEY, []);
    this.inFlight = false;
    this.failures = 0;
    this.retryAt = 0;
    this.firstVisit = false;
    this.clientId = global.localStorage.getItem(CLIENT_KEY);
    if (!this.clientId) {
      this.clientId = uuid();
      this.firstVisit = true;
      global.localStorage.setItem(CLIENT_KEY, this.clientId);
    }
    var self = this;
    this.timer = global.setInterval(function () { self.flush(); }, this.flushIntervalMs);
    global.document.addEventListener("visibilitychange", function () {
      if (global.document.visibilityState === "hidden") { self.flushWithBeacon(); }
    });
    global.addEventListener("pagehide", function () { self.flushWithBeacon(); });
    global.document.addEventListener("click", function (event) { self.trackClick(event); }, true);
  }

  Tracker.prototype.sessionId = function () {
    var now = Date.now();
    var session = readJson(global.sessionStorage, SESSION_KEY, null);
    if (!session || now - session.lastActivity > SESSION_IDLE_MS) {
      session = { id: uuid() };
    }
    session.lastActivity = now;
    writeJson(global.sessionStorage, SESSION_KEY, session);
    return session.id;
  };

  Tracker.prototype.identify = function (userId, identitySource) {
    this.userId = userId || null;
    this.identitySource = userId ? (identitySource || null) : null;
  };

  Tracker.prototype.track = function (eventName, fields) {
    var event = {
      eventId: uuid(),
      eventTimestamp: new Date().toISOString(),
      eventName: eventName,
      pageUrl: global.location.href,
      referrer: global.document.referrer || null,
      userId: this.userId,
      userLoginState: this.userId ? "logged_in" : "anonymous",
      identitySource: this.identitySource,
      clientId: this.clientId,
      sessionId: this.sessionId(),
      isFirstVisit: this.firstVisit
    };
    for (var name in fields || {}) {
      if (Object.prototype.hasOwnProperty.call(fields, name)) { event[name] = fields[name]; }
    }
    this.queue.push(event);
    if (this.queue.length > MAX_QUEUE) { this.queue.splice(0, this.queue.length - MAX_QUEUE); }
    writeJson(global.localStorage, QUEUE_KEY, this.queue);
    if (this.queue.length >= this.batchSize) { this.flush(); }
    return event.eventId;
  };

  Tracker.prototype.pageView = function (viewName, fields) {
    this.track("page_view");
    if (viewName) { this.track(viewName, fields); }
  };

  Tracker.prototype.trackClick = function (event) {
    var element = event.target && event.target.closest &&
      event.target.closest("[data-clickstream-event]");
    if (!element) { return; }
    var fields = {
      element: {
        tag: element.tagName.toLowerCase(),
        id: element.id || null,
        role: element.getAttribute("role"),
        text: (element.textContent || "").trim().slice(0, 200) || null
      }
    };
    var product = element.getAttribute("data-clickstream-product");
    if (product) {
      try { fields.product = JSON.parse(product); } catch (error) { /* not JSON: no product */ }
    }
    this.track(element.getAttribute("data-clickstream-event"), fields);
  };

  Tracker.prototype.settle = function (count) {
    this.queue.splice(0, count);
    writeJson(global.localStorage, QUEUE_KEY, this.queue);
  };

  // Send the oldest batch; on success or a refusal it leaves the queue, on failure it waits.
  Tracker.prototype.flush = function () {
    if (this.inFlight || this.queue.length === 0 || Date.now() < this.retryAt) {
      return Promise.resolve();
    }
    var self = this;
    var batch = this.queue.slice(0, this.batchSize);
    this.inFlight = true;
    return global.fetch(this.endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: stampedBody(batch),
      keepalive: true
    }).then(function (response) {
      if (response.ok) {
        self.failures = 0;
        self.settle(batch.length);
      } else if (response.status >= 400 && response.status < 500 && response.status !== 429) {
        return response.text().then(function (reason) {
          global.console.error("clickstream: the ingest refused a batch:", response.status, reason);
          self.settle(batch.length);
        });
      } else {
        self.backOff();
      }
    }, function () {
      self.backOff();
    }).then(function () {
      self.inFlight = false;
      if (self.queue.length >= self.batchSize) { return self.flush(); }
    });
  };

  // The batch as it leaves now: each event stamped with sentAt, by the same device clock as its
  // eventTimestamp, so that the warehouse can correct a wrong clock (receive time minus the
  // time the event waited here). A resend gets the time of the resend.
  function stampedBody(batch) {
    var sentAt = new Date().toISOString();
    return JSON.stringify(batch.map(function (event) {
      var stamped = {};
      for (var name in event) {
        if (Object.prototype.hasOwnProperty.call(event, name)) { stamped[name] = event[name]; }
      }
      stamped.sentAt = sentAt;
      return stamped;
    }));
  }

  Tracker.prototype.backOff = function () {
    this.failures += 1;
    var delay = Math.min(this.maxBackoffMs, 1000 * Math.pow(2, this.failures - 1));
    this.retryAt = Date.now() + delay * (0.5 + Math.random() / 2);
  };

  // The page is going away: hand what is queued to the browser, which delivers it after the
  // page is gone. text/plain needs no CORS preflight; the ingest accepts it. A batch the browser
  // refuses (too large) stays queued for the next page load; event ids make a resend harmless.
  Tracker.prototype.flushWithBeacon = function () {
    if (!this.queue.length || !global.navigator.sendBeacon) { return; }
    var batch = this.queue.slice(0, 500);
    if (global.navigator.sendBeacon(this.endpoint, new Blob([stampedBody(batch)], { type: "text/plain" }))) {
      this.settle(batch.length);
    }
  };

  global.ClickstreamTracker = {
    start: function (options) {
      if (!options || !options.endpoint) { throw new Error("ClickstreamTracker needs an endpoint"); }
      return new Tracker(options);
    }
  };
})(window);
