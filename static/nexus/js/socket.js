// One conversation's WebSocket (SPEC section 4): cookie auth on the same origin, reconnection with
// exponential backoff and jitter, resume from the last seen seq, and dedupe by seq, so the page
// sees every conversation event exactly once and in order.

const NO_RETRY_CODES = new Set([4001, 4003]); // invalid session, authentication failed
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const RATE_LIMITED_MIN_MS = 10000;
const HEARTBEAT_MS = 15000;
const SILENCE_LIMIT_MS = 40000; // no frame at all for this long (pings included): the socket is dead

/** Exponential backoff with "equal jitter": half fixed, half random, so clients spread out. */
export function backoffDelay(attempt, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 16));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export class ConversationSocket {
  /**
   * @param {object} options
   * @param {string} options.path  e.g. /ws/conversations/<id>/
   * @param {(frame: object, info: {fresh: boolean}) => void} options.onFrame
   * @param {(status: string, detail: object) => void} options.onStatus
   */
  constructor({ path, onFrame, onStatus }) {
    this.path = path;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.lastSeq = null; // null until the first session_state
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.resyncing = false;
    this.retryTimer = null;
    this.heartbeatTimer = null;
    this.lastFrameAt = 0;
    this.status = "idle";
    this._onOnline = () => this.reconnectNow();
    this._onOffline = () => this._drop("offline");
    window.addEventListener("online", this._onOnline);
    window.addEventListener("offline", this._onOffline);
  }

  start() {
    this.stopped = false;
    this._open();
  }

  /** Close for good (the page switched conversations or is leaving). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this._stopHeartbeat();
    window.removeEventListener("online", this._onOnline);
    window.removeEventListener("offline", this._onOffline);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try {
        ws.close(1000, "bye");
      } catch (err) {
        /* already closed */
      }
    }
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.status === "connected";
  }

  /** Send a client frame; false when the socket is not open (the caller keeps it for later). */
  send(type, data = {}) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ type, data }));
    return true;
  }

  /**
   * Deliver every event after ``seq`` again, on a fresh socket opened with ``?last_seq=`` (used to
   * rebuild a reply mid-stream). Not a ``resume`` on this socket: it may already have sent live
   * events after its session_state, and a socket never goes back (the server would answer with a
   * resync, whose stored text lags the log). A socket that has sent nothing honours any position.
   */
  replayFrom(seq) {
    this.lastSeq = seq;
    this.resyncing = false;
    const ws = this.ws;
    this.ws = null;
    this._stopHeartbeat();
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try {
        ws.close(1000, "replay");
      } catch (err) {
        /* already closed */
      }
    }
    if (this.stopped) return;
    this.attempt = 0;
    this._open({ quiet: true });
  }

  /** Reconnect at once (the network came back, or the user asked). */
  reconnectNow() {
    if (this.stopped) return;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    this.attempt = 0;
    clearTimeout(this.retryTimer);
    this._open();
  }

  _setStatus(status, detail = {}) {
    this.status = status;
    this.onStatus(status, detail);
  }

  _open({ quiet = false } = {}) {
    clearTimeout(this.retryTimer);
    if (this.stopped) return;
    if (!navigator.onLine) {
      this._setStatus("offline");
      // The online event reconnects; this timer is a safety net if it never fires.
      this.retryTimer = setTimeout(() => this._open(), BACKOFF_CAP_MS);
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let url = `${scheme}//${location.host}${this.path}`;
    if (this.lastSeq !== null) url += `?last_seq=${this.lastSeq}`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this._scheduleRetry();
      return;
    }
    this.ws = ws;
    if (!quiet) {
      this._setStatus(this.attempt === 0 && this.lastSeq === null ? "connecting" : "reconnecting", {
        attempt: this.attempt,
      });
    }
    ws.onopen = () => {
      this.lastFrameAt = Date.now();
      this._startHeartbeat();
    };
    ws.onmessage = (event) => {
      if (ws === this.ws) this._receive(event.data);
    };
    ws.onclose = (event) => {
      if (ws === this.ws) this._closed(event);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  _receive(raw) {
    this.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch (err) {
      return;
    }
    if (!frame || typeof frame.type !== "string") return;
    switch (frame.type) {
      case "ping":
        this.send("pong");
        return;
      case "pong":
        return;
      case "connection":
        this.onFrame(frame, { fresh: false });
        return;
      case "session_state": {
        const fresh = this.lastSeq === null || this.resyncing;
        if (fresh) this.lastSeq = (frame.data && frame.data.last_seq) || 0;
        this.resyncing = false;
        this.attempt = 0;
        this._setStatus("connected");
        this.onFrame(frame, { fresh });
        return;
      }
      case "info":
        if (frame.data && frame.data.code === "resync") this.resyncing = true;
        break;
      default:
        break;
    }
    if (typeof frame.seq === "number") {
      if (this.lastSeq !== null && frame.seq <= this.lastSeq) return; // already seen
      if (this.lastSeq !== null && frame.seq > this.lastSeq + 1) {
        // The server promises no gaps; if one shows up anyway, ask for the missing events.
        this.send("resume", { last_seq: this.lastSeq });
        return;
      }
      this.lastSeq = frame.seq;
    }
    this.onFrame(frame, { fresh: false });
  }

  _closed(event) {
    this.ws = null;
    this._stopHeartbeat();
    if (this.stopped) return;
    if (NO_RETRY_CODES.has(event.code)) {
      this._setStatus("closed", { code: event.code, reason: event.reason });
      return;
    }
    this._scheduleRetry(event.code === 4004 ? RATE_LIMITED_MIN_MS : 0);
  }

  _scheduleRetry(minimum = 0) {
    if (this.stopped) return;
    if (!navigator.onLine) {
      this._setStatus("offline");
      return;
    }
    const delay = Math.max(minimum, backoffDelay(this.attempt));
    this.attempt += 1;
    this._setStatus("waiting", { retryInMs: delay, attempt: this.attempt });
    this.retryTimer = setTimeout(() => this._open(), delay);
  }

  /** Abandon the current socket now (offline, or silent too long) and reconnect later. */
  _drop(reason) {
    const ws = this.ws;
    this.ws = null;
    this._stopHeartbeat();
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try {
        ws.close(4000, reason);
      } catch (err) {
        /* ignore */
      }
    }
    if (this.stopped) return;
    if (reason === "offline") {
      clearTimeout(this.retryTimer);
      this._setStatus("offline");
    } else {
      this._scheduleRetry();
    }
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    this.heartbeatTimer = setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      const silent = Date.now() - this.lastFrameAt;
      if (silent > SILENCE_LIMIT_MS) this._drop("silent");
      else if (silent > HEARTBEAT_MS) this.send("ping");
    }, HEARTBEAT_MS / 3);
  }

  _stopHeartbeat() {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }
}
