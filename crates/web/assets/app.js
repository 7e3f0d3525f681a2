// Vigía live page: one card per sensor with its current value, a sparkline of the last
// hour, a status and the open alerts. It loads everything over the JSON API, then follows
// the WebSocket feed. No framework: state lives in two Maps, each card is built once and
// afterwards only its text and SVG change, so nothing on the page jumps when values tick.
// Every string from the server goes in through textContent or setAttribute, never HTML.
'use strict';

const TOKEN_KEY = 'vigia.token';
const HOUR_MS = 60 * 60 * 1000;
const STALE_MS = 5 * 60 * 1000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30 * 1000;
// A hole this long in the sparkline is drawn as a break, not as a straight line across it.
const GAP_MS = 3 * 60 * 1000;
// The sparkline's time axis never spans less than this.
const MIN_SPAN_MS = 60 * 1000;
const SVG_NS = 'http://www.w3.org/2000/svg';
const SPARK_W = 300;
const SPARK_H = 60;
// Sensors per request while loading the list (the API's maximum is 1,000).
const SENSOR_PAGE = 500;
const SEVERITY_RANK = { warning: 1, critical: 2 };
const STATUS_LABEL = { critical: 'CRITICAL', warning: 'WARNING', ok: 'OK', stale: 'STALE' };

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  // Bumped on sign-out so answers to requests made by an earlier session are dropped.
  session: 0,
  /** @type {Map<string, object>} sensor key → view (sensor JSON, latest values, points, DOM refs) */
  views: new Map(),
  /** @type {WeakMap<Element, object>} card element → its view (for the history observer) */
  cardViews: new WeakMap(),
  // Bumped on every load of the page's data: a card whose view has another number loads
  // its sparkline again when it comes into view.
  historySession: 0,
  /** @type {Map<number, object>} alert id → alert JSON, open and acked only */
  alerts: new Map(),
  loading: false,
  reloadPending: false,
  loadedOnce: false,
  ws: null,
  backoffMs: BACKOFF_MIN_MS,
  retryTimer: 0,
};

// ---------------------------------------------------------------------------------------
// Token handling and the API

/** Thrown after a 401 so callers can stop quietly: the sign-in form is already showing. */
class AuthError extends Error {}

// With storage disabled (some private modes) the key lives only as long as the page.
function readStoredToken() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return state.token;
  }
}

function storeToken(token) {
  state.token = token;
  try {
    token ? localStorage.setItem(TOKEN_KEY, token) : localStorage.removeItem(TOKEN_KEY);
  } catch {}
}

/** Takes `#token=…` from the login link the server printed, and removes it from the URL
 * (and so from history and bookmarks) at once. */
function takeTokenFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (token === null) return;
  if (token) storeToken(token);
  history.replaceState(null, '', location.pathname + location.search);
}

/** Sends a request with the key; turns problem+json errors into Error(detail). */
async function request(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: { Accept: 'application/json', Authorization: `Bearer ${state.token}` },
  });
  if (res.status === 401) {
    signOut('That API key was not accepted. Paste a valid key to continue.');
    throw new AuthError('unauthorised');
  }
  if (!res.ok) {
    const problem = await res.json().catch(() => ({}));
    throw new Error(problem.detail || problem.title || `HTTP ${res.status}`);
  }
  return res;
}

/** Fetches JSON with the key. */
async function api(path, options = {}) {
  const res = await request(path, options);
  return res.status === 204 ? null : res.json();
}

/** Fetches every page of a list route, following its `Link: <…>; rel="next"` headers,
 * and hands each page to `onPage(items, offset)` as it arrives, so a long list shows
 * while the rest loads. Returns the number of items. */
async function apiPages(path, onPage) {
  let next = path;
  let offset = 0;
  while (next) {
    const res = await request(next);
    const items = await res.json();
    onPage(items, offset);
    offset += items.length;
    const link = res.headers.get('link') || '';
    const match = /<([^>]+)>\s*;\s*rel="next"/.exec(link);
    next = match ? match[1] : null;
  }
  return offset;
}

// ---------------------------------------------------------------------------------------
// Loading everything (on start, on every (re)connect, after `lagged`, for new sensors)

async function loadAll() {
  // Coalesce: a request for a reload during a load runs once after it.
  if (state.loading) {
    state.reloadPending = true;
    return;
  }
  state.loading = true;
  const session = state.session;
  try {
    const seen = new Set();
    const alerts = [];
    await Promise.all([
      apiPages(`/api/v1/sensors?limit=${SENSOR_PAGE}`, (page, offset) => {
        if (session !== state.session) return;
        applySensorPage(page, offset, seen);
      }),
      apiPages('/api/v1/alerts?state=open&limit=1000', (page) => alerts.push(...page)),
      apiPages('/api/v1/alerts?state=acked&limit=1000', (page) => alerts.push(...page)),
    ]);
    if (session !== state.session) return;
    pruneSensors(seen);
    state.alerts = new Map(alerts.map((a) => [a.id, a]));
    for (const view of state.views.values()) renderCard(view, Date.now());
    renderCounts();
    state.loadedOnce = true;
    showBanner(null);
    // Sparklines load as their cards come into view: with thousands of sensors the page
    // asks for the few dozen a screen shows, not for every one.
    state.historySession += 1;
    for (const view of state.views.values()) {
      historyObserver.unobserve(view.el.card);
      historyObserver.observe(view.el.card);
    }
  } catch (err) {
    if (!(err instanceof AuthError) && session === state.session) {
      showBanner(`Could not load data: ${err.message}. Retrying when the connection comes back.`);
    }
  } finally {
    state.loading = false;
    if (state.reloadPending && session === state.session) {
      state.reloadPending = false;
      loadAll();
    }
  }
}

/** Loads the sparkline of each card that comes into view, once per load of the page's
 * data; a failure names the sensor in the banner and leaves the others alone. */
const historyObserver = new IntersectionObserver((entries) => {
  const session = state.session;
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    const view = state.cardViews.get(entry.target);
    if (!view || view.historySession === state.historySession) continue;
    view.historySession = state.historySession;
    historyObserver.unobserve(entry.target);
    loadHistory(view, session).then((failed) => {
      if (failed && session === state.session) {
        showBanner(`Could not load the last hour for ${failed}.`);
      }
    }, () => {});
  }
}, { rootMargin: '200px' });

/** Fetches the last hour (about 60 points: `step=auto` picks one a minute, read from the
 * 1-minute rollups plus the newest raw readings) for the card's sparkline. Returns the sensor
 * key on failure, null on success, so one bad sensor does not hide the others. */
async function loadHistory(view, session) {
  const to = new Date();
  const from = new Date(to.getTime() - HOUR_MS);
  const query = new URLSearchParams({
    metric: view.metric,
    from: from.toISOString(),
    to: to.toISOString(),
    step: 'auto',
    points: '60',
  });
  try {
    const body = await api(`/api/v1/sensors/${encodeURIComponent(view.sensor.key)}/readings?${query}`);
    if (session !== state.session) return null;
    const history = (body.points || []).map((p) => ({ t: Date.parse(p.ts), v: p.value }));
    const lastHistory = history.length ? history[history.length - 1].t : -Infinity;
    // Keep live points that arrived while this request was in flight.
    view.points = history.concat(view.points.filter((p) => p.t > lastHistory));
    renderSpark(view, Date.now());
    return null;
  } catch (err) {
    if (err instanceof AuthError) throw err;
    return view.sensor.key;
  }
}

/** Applies one page of the sensor list (starting at `offset` in key order), keeping
 * existing cards (and their live points) by key; `seen` collects the keys of the load. */
function applySensorPage(sensors, offset, seen) {
  const grid = $('grid');
  sensors.forEach((sensor, i) => {
    seen.add(sensor.key);
    let view = state.views.get(sensor.key);
    if (!view) {
      view = { sensor, metric: 'temperature', latest: new Map(), points: [], el: null, historySession: 0 };
      view.el = buildCard(view);
      state.views.set(sensor.key, view);
      state.cardViews.set(view.el.card, view);
    }
    view.sensor = sensor;
    view.metric = primaryMetric(sensor);
    for (const r of sensor.latest || []) setLatest(view, r.metric, Date.parse(r.ts), r.value);
    // Server order wins; only move a card that is out of place, so focus is not lost.
    const at = offset + i;
    if (grid.children[at] !== view.el.card) grid.insertBefore(view.el.card, grid.children[at] || null);
    renderCard(view, Date.now());
  });
  $('empty').hidden = state.views.size > 0;
}

/** Removes the cards of sensors the last load did not list (deleted meanwhile). */
function pruneSensors(seen) {
  for (const [key, view] of state.views) {
    if (!seen.has(key)) {
      historyObserver.unobserve(view.el.card);
      view.el.card.remove();
      state.views.delete(key);
    }
  }
  $('empty').hidden = state.views.size > 0;
}

/** Temperature first; otherwise the first metric the sensor reports or has a rule on. */
function primaryMetric(sensor) {
  const metrics = [...(sensor.latest || []).map((r) => r.metric), ...(sensor.rules || []).map((r) => r.metric)];
  return metrics.includes('temperature') || metrics.length === 0 ? 'temperature' : metrics[0];
}

function setLatest(view, metric, t, value) {
  const current = view.latest.get(metric);
  // Late readings (a device replaying a backlog) must not replace a newer value.
  if (!current || t >= current.t) view.latest.set(metric, { t, value });
}

// ---------------------------------------------------------------------------------------
// The live feed

function connect() {
  clearTimeout(state.retryTimer);
  if (!state.token) return;
  const url = new URL('/api/v1/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('access_token', state.token);
  let ws;
  try {
    ws = new WebSocket(url);
  } catch {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  let opened = false;
  setConn(state.loadedOnce ? 'reconnecting' : 'connecting');
  ws.onopen = () => {
    opened = true;
    state.backoffMs = BACKOFF_MIN_MS;
    setConn('live');
    // Fetch after subscribing, so nothing that happens in between is missed.
    loadAll();
  };
  ws.onmessage = (event) => onMessage(event.data);
  ws.onclose = () => {
    if (state.ws !== ws) return; // replaced or signed out
    state.ws = null;
    setConn('reconnecting');
    // A refused handshake is also how a bad key looks from here; a plain request tells
    // us whether to show the sign-in form (and fills the page when the feed is down).
    if (!opened) loadAll();
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  clearTimeout(state.retryTimer);
  const delay = state.backoffMs;
  state.backoffMs = Math.min(delay * 2, BACKOFF_MAX_MS);
  // Jitter keeps many phones from reconnecting in lockstep after a server restart.
  state.retryTimer = setTimeout(connect, delay * (0.8 + Math.random() * 0.4));
}

function disconnect() {
  clearTimeout(state.retryTimer);
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
}

function onMessage(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    return; // not ours to interpret
  }
  if (msg.type === 'readings') applyReadings(msg.readings || []);
  else if (msg.type === 'alert' && msg.alert) applyAlert(msg.change, msg.alert);
  else if (msg.type === 'lagged') loadAll(); // the server dropped messages for us
}

function applyReadings(readings) {
  const now = Date.now();
  const touched = new Set();
  let unknown = false;
  for (const r of readings) {
    const view = state.views.get(r.sensor);
    if (!view) {
      unknown = true;
      continue;
    }
    const t = Date.parse(r.ts);
    if (!Number.isFinite(t) || typeof r.value !== 'number') continue;
    setLatest(view, r.metric, t, r.value);
    if (r.metric === view.metric) insertPoint(view.points, { t, v: r.value });
    touched.add(view);
  }
  for (const view of touched) {
    renderCard(view, now);
    renderSpark(view, now);
  }
  // A device posting under a new key has just been provisioned: fetch the list again.
  if (unknown && state.loadedOnce) loadAll();
}

/** Keeps points in time order even when a late reading arrives. */
function insertPoint(points, point) {
  let i = points.length;
  while (i > 0 && points[i - 1].t > point.t) i--;
  if (i > 0 && points[i - 1].t === point.t) points[i - 1] = point;
  else points.splice(i, 0, point);
}

function applyAlert(change, alert) {
  if (change === 'resolved' || alert.state === 'resolved') state.alerts.delete(alert.id);
  else state.alerts.set(alert.id, alert);
  const view = state.views.get(alert.sensor);
  if (view) renderCard(view, Date.now());
  else if (state.loadedOnce) loadAll();
  renderCounts();
}

// ---------------------------------------------------------------------------------------
// Acknowledging

async function ack(id) {
  const before = state.alerts.get(id);
  if (!before || before.state !== 'open') return;
  const view = state.views.get(before.sensor);
  // Optimistic: show it acked at once; the server's answer (or the feed) replaces it.
  const optimistic = { ...before, state: 'acked', acked_by: 'you', acked_at: new Date().toISOString() };
  state.alerts.set(id, optimistic);
  if (view) {
    showCardError(view, null);
    renderCard(view, Date.now());
  }
  renderCounts();
  try {
    const after = await api(`/api/v1/alerts/${encodeURIComponent(id)}/ack`, { method: 'POST' });
    // Only replace our own guess: a resolve from the feed may have removed it meanwhile.
    if (state.alerts.get(id) === optimistic) {
      if (after && after.state !== 'resolved') state.alerts.set(id, after);
      else state.alerts.delete(id);
    }
  } catch (err) {
    if (err instanceof AuthError) return;
    if (state.alerts.get(id) === optimistic) state.alerts.set(id, before);
    if (view) showCardError(view, `Could not acknowledge: ${err.message}`);
  }
  if (view) renderCard(view, Date.now());
  renderCounts();
}

// ---------------------------------------------------------------------------------------
// Rendering

/** Builds a card's fixed skeleton once; render* functions fill it in. */
function buildCard(view) {
  const el = {};
  el.card = h('article', 'card');
  const head = h('header', 'card-head');
  el.title = h('h2', 'card-title');
  el.key = h('span', 'card-key');
  el.kind = h('span', 'card-kind');
  el.badge = h('span', 'badge');
  const titles = h('div', 'card-titles');
  titles.append(el.title, el.key, el.kind);
  head.append(titles, el.badge);

  const reading = h('p', 'reading');
  el.value = h('span', 'value');
  el.unit = h('span', 'unit');
  reading.append(el.value, el.unit);
  // One line under the value: its metric, then the sensor's other metrics, small.
  const metrics = h('p', 'metrics');
  el.metricName = h('span', 'metric-name');
  el.others = h('span', 'others');
  metrics.append(el.metricName, el.others);
  el.updated = h('p', 'updated');

  el.svg = document.createElementNS(SVG_NS, 'svg');
  el.svg.setAttribute('class', 'spark');
  el.svg.setAttribute('viewBox', `0 0 ${SPARK_W} ${SPARK_H}`);
  el.svg.setAttribute('preserveAspectRatio', 'none');
  el.svg.setAttribute('role', 'img');

  el.error = h('p', 'card-error');
  el.error.setAttribute('role', 'alert');
  el.error.hidden = true;
  el.alerts = h('ul', 'alerts');
  el.alerts.setAttribute('aria-live', 'polite');

  el.card.append(head, reading, metrics, el.updated, el.svg, el.error, el.alerts);
  return el;
}

function renderCard(view, now) {
  const { sensor, el } = view;
  el.card.dataset.sensor = sensor.key;
  el.title.textContent = sensor.name || sensor.key;
  el.key.textContent = sensor.name && sensor.name !== sensor.key ? sensor.key : '';
  el.kind.textContent = sensor.kind || '';

  const main = view.latest.get(view.metric);
  el.value.textContent = main ? formatValue(main.value) : '—';
  el.unit.textContent = main && sensor.unit ? sensor.unit : '';
  el.metricName.textContent = view.metric;
  el.others.textContent = [...view.latest]
    .filter(([metric]) => metric !== view.metric)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([metric, r]) => ` · ${metric} ${formatValue(r.value)}`)
    .join('');
  el.svg.setAttribute('aria-label', `${view.metric}, last hour`);

  renderStatus(view, now);
  renderAlerts(view, now);
}

function renderStatus(view, now) {
  const status = statusOf(view, now);
  view.el.card.dataset.status = status;
  view.el.badge.textContent = STATUS_LABEL[status];
  const newest = newestReading(view);
  view.el.updated.textContent = newest === null ? 'no readings yet' : `updated ${ago(now - newest)}`;
}

/** Worst of: alerts open or acked on the sensor, limits the current value breaks (the
 * alert may still be on its way), then stale when nothing arrived for five minutes. */
function statusOf(view, now) {
  let rank = 0;
  const worse = (severity) => (rank = Math.max(rank, SEVERITY_RANK[severity] || 0));
  for (const alert of state.alerts.values()) if (alert.sensor === view.sensor.key) worse(alert.severity);
  for (const rule of view.sensor.rules || []) {
    const current = view.latest.get(rule.metric);
    if (rule.kind !== 'threshold' || !current) continue;
    if ((rule.max != null && current.value > rule.max) || (rule.min != null && current.value < rule.min)) {
      worse(rule.severity);
    }
  }
  if (rank === SEVERITY_RANK.critical) return 'critical';
  if (rank === SEVERITY_RANK.warning) return 'warning';
  const newest = newestReading(view);
  return newest === null || now - newest > STALE_MS ? 'stale' : 'ok';
}

function newestReading(view) {
  let newest = null;
  for (const r of view.latest.values()) if (newest === null || r.t > newest) newest = r.t;
  return newest;
}

function renderAlerts(view, now) {
  // Open before acked, critical before warning, newest first.
  const order = (a) => (a.state === 'open' ? 0 : 10) - (SEVERITY_RANK[a.severity] || 0);
  const alerts = [...state.alerts.values()]
    .filter((a) => a.sensor === view.sensor.key)
    .sort((a, b) => order(a) - order(b) || Date.parse(b.opened_at) - Date.parse(a.opened_at));
  const items = alerts.map((alert) => {
    const li = h('li', `alert ${alert.state}`);
    li.dataset.alertId = String(alert.id);
    li.dataset.severity = alert.severity;
    const sev = h('span', 'sev', alert.severity.toUpperCase());
    const msg = h('span', 'msg', alert.message);
    const meta = h('span', 'meta');
    const time = h('time', '', `opened ${clock(alert.opened_at)}`);
    time.dateTime = alert.opened_at;
    time.title = new Date(alert.opened_at).toLocaleString();
    meta.append(time);
    if (alert.state === 'acked') meta.append(` · acked by ${alert.acked_by || 'someone'}`);
    li.append(sev, msg, meta);
    if (alert.state === 'open') {
      const button = h('button', 'ack', 'Ack');
      button.type = 'button';
      button.setAttribute('aria-label', `Acknowledge: ${alert.message}`);
      button.addEventListener('click', () => ack(alert.id));
      li.append(button);
    }
    return li;
  });
  view.el.alerts.replaceChildren(...items);
  view.el.alerts.hidden = items.length === 0;
  view.el.alerts.setAttribute('aria-label', `Alerts for ${view.sensor.name || view.sensor.key}`);
}

/** Draws up to the last hour against a time axis ending now, with the rule limits. */
function renderSpark(view, now) {
  const start = now - HOUR_MS;
  // Drop what has scrolled out of the hour, so a page left open for days stays small.
  while (view.points.length && view.points[0].t < start) view.points.shift();
  const points = view.points;
  const svg = view.el.svg;
  svg.replaceChildren();
  svg.dataset.points = String(points.length);
  if (points.length === 0) return;
  // With less than an hour of history (a new sensor) the axis starts at the first point,
  // so a few minutes of data are readable rather than a speck at the right edge.
  const from = Math.min(Math.max(start, points[0].t), now - MIN_SPAN_MS);
  const span = now - from;

  let lo = Math.min(...points.map((p) => p.v));
  let hi = Math.max(...points.map((p) => p.v));
  // Show a limit when it is near the data; a far one would flatten the line to nothing.
  const near = Math.max(2 * (hi - lo), 5);
  const limits = [];
  for (const rule of view.sensor.rules || []) {
    if (rule.kind !== 'threshold' || rule.metric !== view.metric) continue;
    for (const limit of [rule.min, rule.max]) {
      if (typeof limit === 'number' && limit > lo - near && limit < hi + near) limits.push(limit);
    }
  }
  lo = Math.min(lo, ...limits);
  hi = Math.max(hi, ...limits);
  const pad = Math.max((hi - lo) * 0.1, 0.5);
  lo -= pad;
  hi += pad;
  const x = (t) => (((t - from) / span) * SPARK_W).toFixed(1);
  const y = (v) => (SPARK_H - ((v - lo) / (hi - lo)) * SPARK_H).toFixed(1);

  for (const limit of limits) svg.append(svgEl('line', { class: 'limit', x1: 0, x2: SPARK_W, y1: y(limit), y2: y(limit) }));
  let d = '';
  let prev = null;
  for (const p of points) {
    d += `${prev === null || p.t - prev > GAP_MS ? 'M' : 'L'}${x(p.t)},${y(p.v)} `;
    prev = p.t;
  }
  svg.append(svgEl('path', { class: 'line', d: d.trim() }));
  const last = points[points.length - 1];
  svg.append(svgEl('circle', { class: 'last', cx: x(last.t), cy: y(last.v), r: 2.5 }));
}

function renderCounts() {
  const sensors = state.views.size;
  let open = 0;
  let acked = 0;
  for (const a of state.alerts.values()) a.state === 'acked' ? acked++ : open++;
  let text = `${sensors} ${sensors === 1 ? 'sensor' : 'sensors'} · ${open} open ${open === 1 ? 'alert' : 'alerts'}`;
  if (acked) text += ` · ${acked} acked`;
  $('counts').textContent = text;
}

function setConn(connState) {
  $('conn').dataset.state = connState;
  $('conn-text').textContent = { live: 'live', connecting: 'connecting…', reconnecting: 'reconnecting…' }[connState] || 'offline';
}

function showBanner(message) {
  $('banner').textContent = message || '';
  $('banner').hidden = !message;
}

function showCardError(view, message) {
  view.el.error.textContent = message || '';
  view.el.error.hidden = !message;
}

/** Seconds tick: "updated … ago" and stale status. The sparkline slides every 10 s. */
function tick() {
  const now = Date.now();
  const slide = Math.floor(now / 1000) % 10 === 0;
  for (const view of state.views.values()) {
    renderStatus(view, now);
    if (slide) renderSpark(view, now);
  }
}

// ---------------------------------------------------------------------------------------
// Small helpers

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

function formatValue(value) {
  return typeof value === 'number' && Number.isFinite(value) ? value.toFixed(1) : '—';
}

function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const hours = Math.floor(m / 60);
  return hours < 48 ? `${hours} h ago` : `${Math.floor(hours / 24)} d ago`;
}

/** Local time of day; the date too when it was not today. */
function clock(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return ts;
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

// ---------------------------------------------------------------------------------------
// Signing in and out, and start-up

function showSignIn(message) {
  $('signin').hidden = false;
  $('signout').hidden = true;
  $('signin-msg').textContent = message || '';
  $('signin-msg').hidden = !message;
  $('signin-key').value = '';
  $('signin-key').focus();
}

function signOut(message) {
  storeToken(null);
  state.session++;
  state.loadedOnce = false;
  state.reloadPending = false;
  disconnect();
  state.views.clear();
  state.alerts.clear();
  $('grid').replaceChildren();
  $('empty').hidden = true;
  showBanner(null);
  setConn('offline');
  $('counts').textContent = '';
  showSignIn(message);
}

function start() {
  $('signin').hidden = true;
  $('signout').hidden = false;
  state.backoffMs = BACKOFF_MIN_MS;
  connect();
}

document.addEventListener('DOMContentLoaded', () => {
  takeTokenFromHash();
  state.token = readStoredToken();

  $('signin').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('signin-key').value.trim();
    if (!key) return;
    storeToken(key);
    start();
  });
  $('signout').addEventListener('click', () => signOut('Signed out.'));
  // Phones freeze background tabs; on return, reconnect at once instead of after backoff.
  const wake = () => {
    if (state.token && !state.ws && document.visibilityState === 'visible') {
      state.backoffMs = BACKOFF_MIN_MS;
      connect();
    }
  };
  document.addEventListener('visibilitychange', wake);
  window.addEventListener('online', wake);
  setInterval(tick, 1000);

  if (state.token) start();
  else showSignIn(null);
});
