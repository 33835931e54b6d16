// The rushorder console: polls GET /api/v1/admin/ops every second and draws it.
// Plain JavaScript, no library: the page loads nothing but what rushorder serves.
"use strict";

(() => {
  const FEED = "/api/v1/admin/ops";
  const REPLAY = FEED + "/replay";
  const EVERY_MS = 1000;
  // Readable by this page only: the pre-login token, then the session's (api/sessions.py).
  const CSRF_COOKIE = "rushorder_console_csrf";
  const COLOURS = ["#f85149", "#d29922", "#a371f7", "#db61a2", "#79c0ff", "#ffa657"];
  const PLACED_COLOUR = "#3fb950";
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let polling = false;

  // -- formatting ----------------------------------------------------------------------

  const number = (n, digits = 0) =>
    n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const rate = (n) => number(n, n < 10 ? 1 : 0);
  const ms = (v) => (v === null ? "\u2013" : v < 10 ? number(v, 1) : number(v));
  const mb = (bytes) => number(bytes / 1048576, bytes < 10485760 ? 1 : 0) + " MB";

  function age(seconds) {
    if (seconds < 60) return number(seconds, seconds < 10 ? 1 : 0) + " s";
    const m = Math.floor(seconds / 60);
    if (m < 60) return `${m} m ${Math.floor(seconds % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} m`;
  }

  function codes(byCode, digits) {
    const parts = Object.entries(byCode).map(([code, n]) => `${code} ${number(n, digits)}`);
    return parts.length ? parts.join(", ") : "none";
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function rows(table, items, toCells, empty) {
    const body = $(table).tBodies[0];
    body.replaceChildren();
    if (!items.length) {
      const tr = body.insertRow();
      const td = cell(empty, "note");
      td.colSpan = $(table).tHead.rows[0].cells.length;
      tr.append(td);
      return;
    }
    for (const item of items) {
      const tr = body.insertRow();
      tr.append(...toCells(item));
    }
  }

  // -- the chart: placed and each refusal code per second --------------------------------

  function colourOf(code, known) {
    if (!known.has(code)) known.set(code, COLOURS[known.size % COLOURS.length]);
    return known.get(code);
  }
  const chartColours = new Map();

  // The smallest of 4 x (1, 2, 2.5 or 5 x 10^k) that holds ``most``: round tick labels.
  function niceTop(most) {
    const raw = most / 4;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
    return 4 * step;
  }

  function drawChart(seconds) {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 960;
    const height = canvas.clientHeight || 220;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);

    const series = new Map([["placed", seconds.map((s) => s.placed)]]);
    for (const [i, s] of seconds.entries()) {
      for (const [code, n] of Object.entries(s.refused)) {
        if (!series.has(code)) series.set(code, new Array(seconds.length).fill(0));
        series.get(code)[i] = n;
      }
    }
    let most = 1;
    for (const values of series.values()) most = Math.max(most, ...values);
    const top = niceTop(most);

    const left = 46, right = 8, upper = 8, lower = 20;
    const w = width - left - right, h = height - upper - lower;
    const x = (i) => left + (seconds.length > 1 ? (i * w) / (seconds.length - 1) : 0);
    const y = (v) => upper + h - (v * h) / top;

    g.font = "11px system-ui, sans-serif";
    g.strokeStyle = "#2a3542";
    g.fillStyle = "#8a99a8";
    g.lineWidth = 1;
    for (let k = 0; k <= 4; k++) {
      const v = (top * k) / 4;
      g.beginPath();
      g.moveTo(left, y(v));
      g.lineTo(left + w, y(v));
      g.stroke();
      g.textAlign = "right";
      g.fillText(number(v, v % 1 ? (v * 10) % 1 ? 2 : 1 : 0), left - 6, y(v) + 4);
    }
    g.textAlign = "center";
    for (let m = 5; m >= 0; m--) {
      const i = seconds.length - 1 - m * 60;
      if (i >= 0) g.fillText(m ? `-${m} min` : "now", x(i), height - 5);
    }

    const legend = $("legend");
    legend.replaceChildren();
    for (const [name, values] of series) {
      const colour = name === "placed" ? PLACED_COLOUR : colourOf(name, chartColours);
      g.strokeStyle = colour;
      g.lineWidth = name === "placed" ? 2 : 1.5;
      g.beginPath();
      values.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
      g.stroke();
      const li = document.createElement("li");
      const swatch = document.createElement("i");
      swatch.style.background = colour;
      li.append(swatch, name === "placed" ? "placed" : `refused ${name}`);
      legend.append(li);
    }
  }

  // -- the parts -------------------------------------------------------------------------

  function renderTiles(feed) {
    $("orders-per-s").textContent = rate(feed.orders_per_s);
    const refused = Object.values(feed.refused_per_s).reduce((a, b) => a + b, 0);
    $("refused-per-s").textContent = rate(refused);
    $("refused-codes").textContent = codes(feed.refused_per_s, 1);
    const l = feed.latency;
    $("latency").textContent = `${ms(l.p50_ms)} / ${ms(l.p99_ms)} ms`;
    $("latency-count").textContent = `${number(l.count)} order requests in the last ${l.window_s} s`;
    $("requests-per-s").textContent = rate(feed.requests_per_s);
    $("errors-per-s").textContent = `5xx ${rate(feed.errors_per_s)}/s`;
    $("placed-window").textContent = number(feed.placed_in_window);
    $("refused-window").textContent = "refused: " + codes(feed.refused_in_window, 0);
  }

  function renderOutbox(outbox) {
    const groups = outbox ? Object.entries(outbox.groups) : [];
    rows("outbox", groups, ([name, g]) => [
      cell(name === "postgres" ? "postgres (writer)" : name === "platform"
        ? "platform (forwarder)" : name),
      cell(number(g.backlog), "num"),
      cell(age(g.oldest_age_s), g.oldest_age_s > 5 ? "num warn" : "num"),
    ], "no outbox yet");
    $("outbox-length").textContent = outbox ? `${number(outbox.length)} entries in the stream` : "";
  }

  function renderDead(dead) {
    $("dead-count").textContent = dead ? number(dead.count) : "\u2013";
    rows("dead", dead ? dead.oldest : [], (d) => {
      const error = cell(d.error.length > 60 ? d.error.slice(0, 57) + "\u2026" : d.error, "error-text");
      error.title = d.error;
      return [cell(d.entry, "entry"), cell(d.event_id || d.type || "?"),
        cell(String(d.attempts), "num"), error];
    }, "none");
  }

  function renderAside(aside) {
    $("aside-count").textContent = aside ? number(aside.count) : "\u2013";
    rows("aside", aside ? aside.oldest : [], (a) => {
      const error = cell(a.error.length > 60 ? a.error.slice(0, 57) + "\u2026" : a.error, "error-text");
      error.title = a.error;
      return [cell(String(a.id), "num"), cell(a.type || "?"),
        cell(new Date(a.set_aside_at).toLocaleString()), error];
    }, "none");
  }

  function done(worker) {
    const c = worker.counters;
    if (worker.group === "postgres") {
      return `entries ${number(c.entries || 0)} \u00b7 batches ${number(c.batches || 0)}`;
    }
    return `forwarded ${number(c.forwarded || 0)} \u00b7 retried ${number(c.retries || 0)}` +
      ` \u00b7 dead ${number(c.dead_lettered || 0)} \u00b7 replayed ${number(c.replayed || 0)}`;
  }

  function renderWorkers(workers) {
    rows("workers", workers, (w) => {
      const dot = document.createElement("span");
      dot.className = "dot " + (w.alive ? "alive" : "dead");
      dot.title = w.alive ? "alive" : "no heartbeat";
      const first = document.createElement("td");
      first.append(dot);
      return [first, cell(w.group), cell(w.process + (w.state === "working" ? "" : ` (${w.state})`)),
        cell(age(w.beat_age_s) + " ago", w.alive ? "num" : "num error"), cell(age(w.uptime_s), "num"),
        cell(done(w))];
    }, "no worker has ever beaten");
  }

  function renderMemory(redis) {
    const bar = $("memory-bar");
    const mark = $("high-water");
    if (!redis) {
      $("memory").textContent = "unknown";
      return;
    }
    const scale = Math.max(redis.high_water_bytes || 0, redis.maxmemory_bytes || 0,
      redis.used_bytes) || 1;
    bar.style.width = `${(100 * redis.used_bytes) / scale}%`;
    bar.classList.toggle("over", redis.over_high_water);
    mark.hidden = !redis.high_water_bytes;
    mark.style.left = `calc(${(100 * redis.high_water_bytes) / scale}% - 2px)`;
    const share = redis.high_water_bytes
      ? ` (${number((100 * redis.used_bytes) / redis.high_water_bytes, 1)}%)` : "";
    const water = redis.high_water_bytes
      ? `high-water mark ${mb(redis.high_water_bytes)}${share}` +
        (redis.over_high_water ? ": over it, /health/ready fails" : "")
      : "no high-water mark";
    $("memory").textContent = `${mb(redis.used_bytes)} used; ${water}` +
      (redis.maxmemory_bytes ? `; maxmemory ${mb(redis.maxmemory_bytes)}` : "");
  }

  function renderTop(top) {
    rows("top", top, (p) => [
      cell(String(p.rank)), cell(`${p.name} (#${p.product_id})`),
      cell(number(p.sold_quantity), "num"), cell(number(p.stock), p.stock ? "num" : "num error"),
    ], "nothing sold yet");
  }

  function render(feed) {
    renderTiles(feed);
    drawChart(feed.seconds);
    renderOutbox(feed.outbox);
    renderDead(feed.dead_letters);
    renderAside(feed.set_aside);
    renderWorkers(feed.workers);
    renderMemory(feed.redis);
    renderTop(feed.top);
    $("problems").textContent = feed.problems.join("; ");
    const at = new Date(feed.at).toLocaleTimeString();
    status(feed.live_state === "ok" ? `live, ${at}` : `${feed.live_state} (${at})`,
      feed.live_state !== "ok");
  }

  // -- the loop, the login and the replay ------------------------------------------------

  function status(text, bad = false) {
    $("status").textContent = text;
    $("status").classList.toggle("bad", bad);
  }

  function view(loggedIn) {
    $("login").hidden = loggedIn;
    $("console").hidden = !loggedIn;
    $("logout").hidden = !loggedIn;
  }

  async function detail(response) {
    try {
      return (await response.json()).detail || response.statusText;
    } catch (e) {
      return response.statusText;
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(poll, EVERY_MS);
  }

  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const response = await fetch(FEED, { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        view(false);
        status("signed out");
        $("login-error").textContent = response.status === 403 ? await detail(response) : "";
        return;
      }
      if (!response.ok) {
        status(`feed: ${response.status} ${await detail(response)}`, true);
      } else {
        view(true);
        render(await response.json());
      }
      schedule();
    } catch (e) {
      status(`feed unreachable: ${e.message}`, true);
      schedule();
    } finally {
      polling = false;
    }
  }

  function csrf() {
    const found = document.cookie.split("; ").find((c) => c.startsWith(CSRF_COOKIE + "="));
    return found ? decodeURIComponent(found.slice(CSRF_COOKIE.length + 1)) : "";
  }

  async function login(event) {
    event.preventDefault();
    $("login-error").textContent = "";
    const response = await fetch("/ops/login", {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify({ token: $("token").value.trim() }),
    });
    if (!response.ok) {
      $("login-error").textContent = await detail(response);
      return;
    }
    $("token").value = "";
    poll();
  }

  async function logout() {
    await fetch("/ops/logout", {
      method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf() },
    });
    clearTimeout(timer);
    view(false);
    status("signed out");
  }

  async function replay() {
    const button = $("replay");
    button.disabled = true;
    $("replay-result").textContent = "replaying through a platform forwarder\u2026";
    try {
      const response = await fetch(REPLAY, {
        method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf() },
      });
      if (!response.ok) {
        $("replay-result").textContent = `replay: ${await detail(response)}`;
        return;
      }
      const r = await response.json();
      $("replay-result").textContent = r.state === "done"
        ? `replayed: ${number(r.delivered)} delivered of ${number(r.total || 0)}; ` +
          `${number(r.left || 0)} left`
        : r.state === "failed" ? `replay failed: ${r.error}`
        : `still replaying: ${number(r.done)} of ${number(r.total || 0)} so far`;
    } catch (e) {
      $("replay-result").textContent = `replay: ${e.message}`;
    } finally {
      button.disabled = false;
      poll();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("replay").addEventListener("click", replay);
    poll();
  });
})();
