// Chiffon dashboard. Plain JavaScript, no build step, no dependencies.
//
// Data flow: agentsLoop keeps GET /v1/agents as a blocking query
// (?index=N&wait=30s, N from the previous answer's X-Chiffon-Index), so the
// table changes as soon as the registry does; sideLoop refreshes the leader,
// raft peers and work counts every few seconds and whenever the registry
// changes. Both back off and retry on errors. If the orchestrator serving
// this page stays unreachable, the page probes the other raft servers'
// HTTP addresses and moves to the first that answers.
//
// Everything from the API is put into the page with textContent, never as
// HTML: node names come from gossip.
'use strict';

const TOKEN_KEY = 'chiffon.token';
const WAIT = '30s'; // blocking query wait
const WAIT_MS = 30000;
const SIDE_EVERY_MS = 3000; // leader, peers and work counts
const CERTS_EVERY_MS = 60000; // certificate expiry, read from /metrics
const CERT_WARN_DAYS = 30; // fewer days left than this shows as a warning
const SWITCH_AFTER_MS = 10000; // how long the serving orchestrator may be gone before moving
const STATUSES = ['online', 'suspect', 'offline', 'left', 'asleep'];

const $ = (id) => document.getElementById(id);

// HTTPError is an answer with a non-2xx status; NetError is no answer.
class HTTPError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}
class NetError extends Error {}

// view is what the page shows; conn is what it knows of its connection.
const view = { agents: [], index: 0, leader: null, peers: null, lastOK: 0, certs: null, certsAt: 0 };
const conn = {
  netDown: 0, // when requests started failing without an answer, 0 if they do not
  netErr: '',
  auth: 0, // 401 or 403 from the API, 0 if none
  authMsg: '',
  agentsErr: '', // another error answer to GET /v1/agents (503: no leader)
  switching: '',
};

// session is the running pair of loops; a new token restarts them.
let session = null;

// ---- storage -------------------------------------------------------------

function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || '';
  } catch (_) {
    return '';
  }
}

function setToken(tok) {
  try {
    if (tok) localStorage.setItem(TOKEN_KEY, tok);
    else localStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    /* storage disabled: the token lasts until the page closes */
  }
}

// ---- HTTP ----------------------------------------------------------------

// api GETs path from the orchestrator that served the page and returns the
// decoded body and the registry index. It gives up after timeoutMs or when
// signal aborts.
async function api(path, signal, timeoutMs) {
  const headers = { Accept: 'application/json' };
  const tok = getToken();
  if (tok) headers['X-Chiffon-Token'] = tok;
  const ctrl = new AbortController();
  const onAbort = () => ctrl.abort();
  signal.addEventListener('abort', onAbort);
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  try {
    let resp;
    let text;
    try {
      resp = await fetch(path, { headers, signal: ctrl.signal, cache: 'no-store' });
      text = await resp.text();
    } catch (e) {
      if (signal.aborted) throw e;
      throw new NetError(ctrl.signal.aborted ? 'timed out' : (e && e.message) || 'network error');
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      /* not JSON */
    }
    if (!resp.ok) {
      throw new HTTPError(resp.status, (data && data.error) || resp.statusText || 'HTTP ' + resp.status);
    }
    return { data, index: Number(resp.headers.get('X-Chiffon-Index')) || 0 };
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
}

// sleep resolves after ms, or early when signal aborts or wake is called.
function sleep(ms, signal, s) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      if (s && s.wake === done) s.wake = null;
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done);
    if (s) s.wake = done;
  });
}

// ---- connection state ----------------------------------------------------

function answered() {
  conn.netDown = 0;
  conn.netErr = '';
  view.lastOK = Date.now();
}

function failed(e) {
  if (e instanceof NetError) {
    if (!conn.netDown) conn.netDown = Date.now();
    conn.netErr = e.message;
  } else if (e instanceof HTTPError) {
    answered(); // the server is there
    if (e.status === 401 || e.status === 403) {
      conn.auth = e.status;
      conn.authMsg = e.message;
    }
  }
  renderBanner();
}

// ---- loops ---------------------------------------------------------------

async function agentsLoop(s) {
  const signal = s.ctrl.signal;
  let index = 0;
  let backoff = 500;
  while (!signal.aborted) {
    try {
      const q = index > 0 ? `?index=${index}&wait=${WAIT}` : '';
      const r = await api('/v1/agents' + q, signal, WAIT_MS + 15000);
      // An index that went down means a restored backup: start again.
      index = r.index >= index ? r.index : 0;
      view.agents = Array.isArray(r.data) ? r.data : [];
      view.index = r.index;
      answered();
      conn.auth = 0;
      conn.agentsErr = '';
      render();
      if (s.wake) s.wake(); // refresh leader, peers, work now
      backoff = 500;
      if (index === 0) await sleep(1000, signal); // nothing to block on: poll
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof HTTPError && e.status !== 401 && e.status !== 403) {
        conn.agentsErr = `${e.status}: ${e.message}`;
      }
      failed(e);
      renderLive();
      // Back off, with jitter so that many open dashboards do not retry together.
      await sleep(backoff * (0.75 + Math.random() / 2), signal);
      backoff = Math.min(backoff * 2, 8000);
    }
  }
}

async function sideLoop(s) {
  const signal = s.ctrl.signal;
  while (!signal.aborted) {
    await refreshSide(signal);
    await sleep(SIDE_EVERY_MS, signal, s);
    await sleep(500, signal); // at most two refreshes a second
  }
}

async function refreshSide(signal) {
  const get = (p) => api(p, signal, 10000);
  const [leader, peers, pending, running] = await Promise.allSettled([
    get('/v1/status/leader'),
    // The full peer list comes from the leader; /v1/status/peers (voters'
    // raft addresses, local) still answers during an election.
    get('/v1/operator/raft/peers').catch((e) => {
      if (e instanceof NetError || signal.aborted) throw e;
      return get('/v1/status/peers').then((r) => ({ data: r.data, addrsOnly: true }));
    }),
    get('/v1/work?status=pending&limit=1'),
    get('/v1/work?status=running&limit=1'),
  ]);
  if (signal.aborted) return;
  for (const r of [leader, peers, pending, running]) {
    if (r.status === 'fulfilled') answered();
    else if (r.reason instanceof NetError || (r.reason instanceof HTTPError && (r.reason.status === 401 || r.reason.status === 403))) failed(r.reason);
  }
  if (leader.status === 'fulfilled') view.leader = leader.value.data;
  if (peers.status === 'fulfilled') view.peers = peers.value;
  if (Date.now() - view.certsAt >= CERTS_EVERY_MS) {
    view.certsAt = Date.now();
    try {
      view.certs = certExpiry(await metricsText(signal));
    } catch (_) {
      /* an older orchestrator or a failed scrape: keep what we had */
    }
    renderCerts();
  }
  renderLeader();
  renderWork(pending, running);
  renderBanner();
  renderLive();
}

function restart() {
  if (session) session.ctrl.abort();
  session = { ctrl: new AbortController(), wake: null };
  conn.auth = 0;
  conn.agentsErr = '';
  agentsLoop(session);
  sideLoop(session);
}

// ---- moving to another orchestrator --------------------------------------

// candidates are the other raft servers' HTTP addresses: orchestrators in
// the registry whose agent_id is in the last known raft configuration (the
// same trust the orchestrators give each other when forwarding the token).
function candidates() {
  const ids = new Set();
  const p = view.peers;
  if (p && !p.addrsOnly && Array.isArray(p.data)) for (const x of p.data) ids.add(x.id);
  if (view.leader && view.leader.id) ids.add(view.leader.id);
  const out = [];
  for (const a of view.agents) {
    if (!ids.has(a.agent_id) || !a.api_addr || a.api_addr === location.host) continue;
    if (a.status === 'left' || a.status === 'offline' || a.status === 'asleep') continue;
    if (!out.includes(a.api_addr)) out.push(a.api_addr);
  }
  return out;
}

let probing = false;

// tryOthers moves the page to the first other orchestrator whose /healthz
// answers. The probe is a no-cors request: it cannot read the answer, but it
// fails when nothing answers, which is all it needs.
async function tryOthers() {
  if (probing || conn.switching) return;
  probing = true;
  try {
    for (const addr of candidates()) {
      if (!conn.netDown) return; // ours came back
      const ctrl = new AbortController();
      const t = setTimeout(() => ctrl.abort(), 2000);
      try {
        await fetch(`${location.protocol}//${addr}/healthz`, { mode: 'no-cors', cache: 'no-store', signal: ctrl.signal });
      } catch (_) {
        continue;
      } finally {
        clearTimeout(t);
      }
      if (!conn.netDown) return;
      conn.switching = addr;
      renderBanner();
      // The token goes along in the fragment, which is never sent to a
      // server; the new page stores it and removes it from the address.
      const tok = getToken();
      location.replace(`${location.protocol}//${addr}/ui/` + (tok ? '#token=' + encodeURIComponent(tok) : ''));
      return;
    }
  } finally {
    probing = false;
  }
}

// ---- rendering -----------------------------------------------------------

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k == null || k === false) continue;
    e.append(k instanceof Node ? k : String(k));
  }
  return e;
}

function fmt(x, digits = 1) {
  if (typeof x !== 'number' || !isFinite(x)) return '–';
  return x.toFixed(digits).replace(/\.0+$/, '');
}

function since(ts) {
  const t = Date.parse(ts);
  if (!t || t < 0 || ts.startsWith('0001-')) return null;
  return t;
}

function ago(t) {
  if (!t) return 'never';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

// bar is a horizontal gauge of used out of total.
function bar(used, total, label) {
  const frac = total > 0 ? Math.min(1, Math.max(0, used / total)) : 0;
  const fill = el('div', { class: 'fill ' + (frac >= 0.9 ? 'high' : frac >= 0.6 ? 'mid' : 'low') });
  fill.style.width = (frac * 100).toFixed(1) + '%';
  return el('div', { class: 'gauge' }, el('div', { class: 'track' }, fill), el('span', { class: 'gauge-text' }, label));
}

function gpuCell(m) {
  const gpus = Array.isArray(m.gpus) ? m.gpus : [];
  if (gpus.length > 0) {
    return gpus.map((g) => {
      const used = g.vram_total_gb - g.vram_free_gb;
      let text = `${fmt(used)} / ${fmt(g.vram_total_gb)} GB`;
      if (g.utilization_pct >= 0) text += ` · ${fmt(g.utilization_pct, 0)}%`;
      return el('div', { class: 'gpu', title: g.name || '' }, el('span', { class: 'gpu-name' }, `#${g.index} ${g.name || 'GPU'}`), bar(used, g.vram_total_gb, text));
    });
  }
  if (m.gpu_vram_total_gb > 0) {
    const used = m.gpu_vram_total_gb - m.gpu_vram_available_gb;
    const n = m.gpu_count > 1 ? `${m.gpu_count} GPUs` : m.gpu_count === 1 ? '1 GPU' : 'GPUs';
    return el('div', { class: 'gpu' }, el('span', { class: 'gpu-name' }, `${n}, ${m.gpu_type || ''} (total)`),
      bar(used, m.gpu_vram_total_gb, `${fmt(used)} / ${fmt(m.gpu_vram_total_gb)} GB`));
  }
  return el('span', { class: 'muted' }, 'no GPU');
}

// flapPill shows a node's flap score (decayed to the answer's moment by
// the server) once it reaches one flap, when placement starts to prefer
// steadier desktops; its title lists the last status changes.
function flapPill(a) {
  const score = Number(a.flap_score) || 0;
  if (score < 1) return null;
  const changes = (Array.isArray(a.history) ? a.history : []).slice(-5)
    .map((h) => `${new Date(h.at).toLocaleTimeString()} ${h.from} → ${h.to}`).join('\n');
  return el('span', { class: 'pill s-flapping', dataset: { flapScore: String(score) },
    title: `flap score ${fmt(score, 1)}: it came back online after going silent about that many times lately (halving every -flap-half-life); placement prefers steadier desktops${changes ? '\nlast changes:\n' + changes : ''}` },
  `flaps ${fmt(score, 1)}`);
}

// sampledLine says how old the desktop's figures are (sample_age_s, as of
// the answer, counted on from then with this browser's clock, so the
// desktop's clock plays no part here); null for nodes that do not sample.
function sampledLine(a) {
  if (typeof a.sample_age_s !== 'number') return null;
  const ts = Date.now() - a.sample_age_s * 1000;
  return el('div', { class: 'sub sampled', dataset: { ts }, title: 'when the desktop took the sample these figures come from' }, 'sampled ' + ago(ts));
}

function row(a) {
  const m = a.resource_metrics || {};
  const roles = Array.isArray(a.roles) ? a.roles : [];
  const measured = roles.includes('desktop') || m.cpu_cores_physical > 0;
  const dash = () => el('span', { class: 'muted' }, '–');
  const seen = since(a.last_heartbeat_at);
  const changed = since(a.status_changed_at);
  const status = STATUSES.includes(a.status) ? a.status : 'unknown';
  return el('tr', { dataset: { agentId: a.agent_id, name: a.name, status: a.status } },
    el('td', { class: 'name', title: `agent_id ${a.agent_id}` }, a.name || a.agent_id,
      el('div', { class: 'sub' }, a.gossip_addr || '')),
    el('td', null, el('span', { class: 'pill s-' + status, title: changed ? `since ${new Date(changed).toLocaleString()}` : null }, a.status),
      // Gossip may say online while the leader cannot reach the work
      // endpoint: placement skips the node until it answers again.
      a.unreachable_since ? el('span', { class: 'pill s-unreachable', title: `the leader cannot reach its work endpoint since ${new Date(a.unreachable_since).toLocaleString()}; no work is placed on it` }, 'unreachable') : null,
      // Asleep: it said it was suspending; no work until it wakes, and
      // the leader may wake it (wake-on-LAN) for work that fits only here.
      a.status === 'asleep' && a.wake_sent_at ? el('div', { class: 'sub' }, `woken ${new Date(a.wake_sent_at).toLocaleTimeString()}`) : null,
      flapPill(a),
      // The desktop's owner is at the keyboard: no new work goes there.
      a.owner === 'active' ? el('span', { class: 'pill s-owner-active', title: (a.owner_since ? `owner active since ${new Date(a.owner_since).toLocaleString()}; ` : '') + 'no new work is placed on it' }, 'owner active') : null),
    el('td', null, roles.map((r) => el('span', { class: 'role r-' + r }, r))),
    el('td', { class: 'num' }, measured ? `${fmt(m.cpu_load_1min, 2)} · ${fmt(m.cpu_load_5min, 2)} · ${fmt(m.cpu_load_15min, 2)}` : dash()),
    el('td', { class: 'num' }, measured ? `${fmt(m.cpu_cores_available)} / ${m.cpu_cores_physical}` : dash()),
    el('td', { class: 'num' }, measured ? [`${fmt(m.memory_available_gb)} GB`, m.memory_percent > 0 ? el('div', { class: 'sub' }, `${fmt(m.memory_percent, 0)}% used`) : null] : dash()),
    el('td', { class: 'gpus' }, measured ? gpuCell(m) : dash(), sampledLine(a)),
    el('td', { class: 'seen', dataset: { ts: seen || 0 }, title: seen ? new Date(seen).toLocaleString() : null }, ago(seen)),
  );
}

function nameOf(id) {
  const a = view.agents.find((x) => x.agent_id === id);
  return a ? a.name : id;
}

function render() {
  const agents = view.agents.slice().sort((a, b) => (a.name || '').localeCompare(b.name || '') || a.agent_id.localeCompare(b.agent_id));
  $('node-rows').replaceChildren(...agents.map(row));
  $('empty').hidden = agents.length > 0;
  $('index').textContent = String(view.index);

  $('count-total').textContent = String(agents.length);
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const a of agents) if (a.status in counts) counts[a.status]++;
  $('count-status').replaceChildren(...STATUSES.map((s) => el('span', { class: 'pill s-' + s }, `${counts[s]} ${s}`)));

  let free = 0;
  let total = 0;
  for (const a of agents) {
    const m = a.resource_metrics || {};
    if (a.status !== 'online' || !(a.roles || []).includes('desktop')) continue;
    free += m.gpu_vram_available_gb || 0;
    total += m.gpu_vram_total_gb || 0;
  }
  $('vram-free').textContent = `${fmt(free)} GB`;
  $('vram-bar').replaceChildren(bar(total - free, total, `${fmt(total - free)} / ${fmt(total)} GB used`));
  renderLeader();
  renderLive();
}

function renderLeader() {
  const l = view.leader;
  const box = $('leader');
  if (!l) {
    box.textContent = '–';
  } else if (!l.id) {
    box.replaceChildren(el('span', { class: 'warn' }, 'none known (election?)'));
  } else {
    box.replaceChildren(nameOf(l.id), el('div', { class: 'sub' }, l.http_addr || l.raft_addr || ''));
  }
  const p = view.peers;
  const list = $('peers');
  if (!p || !Array.isArray(p.data)) {
    list.replaceChildren();
    return;
  }
  if (p.addrsOnly) {
    list.replaceChildren(...p.data.map((addr) => {
      const a = view.agents.find((x) => x.raft_addr === addr);
      return el('li', null, a ? a.name : addr, el('span', { class: 'sub' }, ' voter'));
    }));
    return;
  }
  list.replaceChildren(...p.data.map((x) => el('li', { class: x.state === 'leader' ? 'is-leader' : null },
    nameOf(x.id), el('span', { class: 'sub' }, ` ${x.state}${x.voter ? '' : ', non-voter'}`))));
}

// metricsText GETs /metrics (Prometheus text) from the serving orchestrator.
async function metricsText(signal) {
  const headers = {};
  const tok = getToken();
  if (tok) headers['X-Chiffon-Token'] = tok;
  const resp = await fetch('/metrics', { headers, signal, cache: 'no-store' });
  if (!resp.ok) throw new HTTPError(resp.status, resp.statusText);
  return resp.text();
}

// certExpiry reads chiffon_tls_cert_expiry_seconds{cert="node"|"ca"} out of
// the metrics text: { node: seconds, ca: seconds }, empty without TLS.
function certExpiry(text) {
  const out = {};
  const re = /^chiffon_tls_cert_expiry_seconds\{cert="(\w+)"\} (\S+)$/gm;
  let m;
  while ((m = re.exec(text)) !== null) out[m[1]] = Number(m[2]);
  return out;
}

// renderCerts shows the days left of this orchestrator's certificate and
// of the cluster CA, as a warning under CERT_WARN_DAYS; the card stays
// hidden for a node without TLS material.
function renderCerts() {
  const c = view.certs;
  const card = $('card-certs');
  if (!c || Object.keys(c).length === 0) {
    card.hidden = true;
    return;
  }
  card.hidden = false;
  const rows = [];
  for (const [key, label] of [['node', 'this orchestrator'], ['ca', 'cluster CA']]) {
    if (!(key in c)) continue;
    const days = Math.floor(c[key] / 86400);
    const text = days < 0 ? 'expired' : `${days} day${days === 1 ? '' : 's'} left`;
    rows.push(el('li', { class: days < CERT_WARN_DAYS ? 'warn' : null, 'data-cert': key, 'data-days': String(days) },
      `${label}: ${text}`));
  }
  $('certs').replaceChildren(...rows);
}

function renderWork(pending, running) {
  const card = $('card-work');
  const is404 = (r) => r.status === 'rejected' && r.reason instanceof HTTPError && r.reason.status === 404;
  if (is404(pending) || is404(running)) {
    card.hidden = true; // this server has no work API
    return;
  }
  const count = (r) => {
    if (r.status !== 'fulfilled' || !r.value.data) return null;
    const d = r.value.data;
    // total counts every matching item; the page itself holds one.
    return typeof d.total === 'number' ? d.total : typeof d.count === 'number' ? d.count : null;
  };
  const p = count(pending);
  const q = count(running);
  if (p == null && q == null) return; // keep what is shown
  card.hidden = false;
  if (p != null) $('work-pending').textContent = String(p);
  if (q != null) $('work-running').textContent = String(q);
}

function renderLive() {
  const live = $('live');
  let state = 'live';
  let text = 'live';
  if (conn.switching) [state, text] = ['down', 'switching…'];
  else if (conn.netDown) [state, text] = ['down', 'connection lost'];
  else if (conn.auth) [state, text] = ['warn', 'token needed'];
  else if (conn.agentsErr) [state, text] = ['warn', 'degraded'];
  else if (!view.lastOK) [state, text] = ['connecting', 'connecting…'];
  live.dataset.state = state;
  live.textContent = text;
}

function renderBanner() {
  const b = $('banner');
  let kind = '';
  const parts = [];
  if (conn.switching) {
    kind = 'down';
    parts.push(`Moving to the orchestrator at ${conn.switching}…`);
  } else if (conn.netDown) {
    kind = 'down';
    const secs = Math.round((Date.now() - conn.netDown) / 1000);
    parts.push(`Connection lost to ${location.host}, retrying (for ${secs} s: ${conn.netErr}).`);
    if (view.lastOK) parts.push(` The figures below are from ${new Date(view.lastOK).toLocaleTimeString()}.`);
    const others = candidates();
    if (others.length > 0) {
      parts.push(' Other orchestrators: ');
      others.forEach((addr, i) => {
        if (i > 0) parts.push(', ');
        parts.push(el('a', { href: `${location.protocol}//${addr}/ui/` }, addr));
      });
      parts.push(secs * 1000 >= SWITCH_AFTER_MS ? ' (moving to the first that answers).' : ` (moving to one after ${SWITCH_AFTER_MS / 1000} s).`);
    }
  } else if (conn.auth) {
    kind = 'warn';
    parts.push(conn.auth === 401
      ? 'This cluster needs an API token: enter it above (it stays in this browser only).'
      : `The saved token was refused (${conn.authMsg}): enter the right one above.`);
  } else if (conn.agentsErr) {
    kind = 'warn';
    parts.push(`The API answered ${conn.agentsErr}; retrying.`);
  }
  b.hidden = parts.length === 0;
  b.className = 'banner ' + kind;
  b.replaceChildren(...parts);
}

// tick runs every second: relative times, the banner's clock, failover.
function tick() {
  for (const td of document.querySelectorAll('#node-rows td.seen')) {
    td.textContent = ago(Number(td.dataset.ts));
  }
  for (const d of document.querySelectorAll('#node-rows .sampled')) {
    d.textContent = 'sampled ' + ago(Number(d.dataset.ts));
  }
  if (conn.netDown) {
    renderBanner();
    if (Date.now() - conn.netDown >= SWITCH_AFTER_MS) tryOthers();
  }
  renderLive();
}

// ---- start ---------------------------------------------------------------

function init() {
  // A token handed over in the fragment (by another orchestrator's page).
  if (location.hash.startsWith('#token=')) {
    setToken(decodeURIComponent(location.hash.slice('#token='.length)));
    history.replaceState(null, '', location.pathname + location.search);
  }
  $('served-by').textContent = `served by ${location.host}`;
  const input = $('token-input');
  const placeholder = () => {
    input.placeholder = getToken() ? 'saved (type to replace)' : 'only if the cluster has one';
  };
  placeholder();
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    input.value = '';
    placeholder();
    restart();
  });
  $('token-clear').addEventListener('click', () => {
    setToken('');
    input.value = '';
    placeholder();
    restart();
  });
  setInterval(tick, 1000);
  restart();
}

init();
