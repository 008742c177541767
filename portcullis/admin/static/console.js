// Portcullis console: a single ES module, no build step, no third-party code. Everything the page shows comes from
// the admin API (/admin/api, described by /admin/api/openapi.json) and is put into the page as text, never as HTML:
// what callers and servers sent cannot become markup or script. Changes send the session's CSRF token.

const API = '/admin/api';
const main = document.getElementById('main');
const statusBox = document.getElementById('status');
let me = null;
let inbox = null; // the live approvals stream
let approvals = [];

// --- DOM helpers ---------------------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined));
}

function say(text, kind = 'info') {
  statusBox.textContent = text;
  statusBox.dataset.kind = kind;
}

function when(ns) {
  if (ns === null || ns === undefined) return '—';
  return new Date(Number(ns) / 1e6).toLocaleString();
}

function pill(value) {
  return h('span', { class: `pill ${String(value).replace(/[^a-z-]/g, '')}` }, value);
}

// Payloads as recorded: masked values ([REDACTED:class …]) are marked so that a reader sees what was masked.
function maskedText(text) {
  const out = h('pre');
  const re = /\[REDACTED:[^\]]{1,80}\]|«[a-z_]+:[0-9a-f]{6,}»/g;
  let last = 0;
  for (const m of String(text).matchAll(re)) {
    out.append(text.slice(last, m.index));
    out.append(h('mark', { class: 'masked', title: 'masked by the gateway' }, m[0]));
    last = m.index + m[0].length;
  }
  out.append(String(text).slice(last));
  return out;
}

// The record's `masked` column: [{class, path, count}] -> "email ×2, credit_card ×2"
function maskSummary(masked) {
  const counts = new Map();
  for (const m of Array.isArray(masked) ? masked : []) counts.set(m.class, (counts.get(m.class) || 0) + (m.count || 1));
  return [...counts].map(([c, n]) => `${c} ×${n}`).join(', ') || 'yes';
}

function pretty(value) {
  if (typeof value === 'string') {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

// --- the API -------------------------------------------------------------------------------------------------

async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    if (me && me.csrf_token) headers['X-CSRF-Token'] = me.csrf_token;
  }
  const resp = await fetch(API + path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = new Error((data && data.message) || `HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function has(role) {
  return me && me.roles.includes(role);
}

// --- sign-in -------------------------------------------------------------------------------------------------

function signIn(message) {
  document.getElementById('nav').hidden = true;
  document.getElementById('who').replaceChildren();
  show(
    h('section', { class: 'signin' },
      h('h1', {}, 'Portcullis console'),
      h('p', { class: 'muted' }, message || 'Approve held calls, replay sessions, search the audit trail.'),
      h('a', { class: 'button primary', href: '/ui/login', id: 'signin' }, 'Sign in with your identity provider')),
  );
}

async function signOut() {
  let resp;
  try {
    resp = await fetch('/ui/logout', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': me.csrf_token || '' } });
  } catch {
    say('Could not reach the gateway to sign out: try again.', 'error');
    return;
  }
  if (!resp.ok && resp.status !== 401) { // 401: the session had ended already
    say(`Signing out failed (HTTP ${resp.status}): try again.`, 'error');
    return;
  }
  closeInbox();
  me = null;
  say('');
  signIn('Signed out.');
}

function header() {
  document.getElementById('nav').hidden = false;
  const who = document.getElementById('who');
  who.replaceChildren(
    h('span', {}, me.email || me.subject),
    h('span', { class: 'roles' }, me.roles.length ? `(${me.roles.join(', ')})` : '(no admin role)'),
    h('button', { type: 'button', id: 'signout', onclick: signOut }, 'Sign out'),
  );
}

// --- inbox ---------------------------------------------------------------------------------------------------

function openInbox() {
  if (inbox) return;
  inbox = new EventSource(`${API}/approvals/stream`);
  inbox.addEventListener('approvals', (ev) => {
    approvals = JSON.parse(ev.data).approvals;
    const pending = approvals.filter((a) => a.state === 'pending' && a.requester_subject !== me.subject);
    const badge = document.getElementById('pending-count');
    badge.textContent = String(pending.length);
    badge.toggleAttribute('data-zero', pending.length === 0);
    if (current().view === 'inbox') renderInbox();
  });
  inbox.addEventListener('error', () => {
    if (inbox && inbox.readyState === EventSource.CLOSED) {
      inbox = null;
      say('The live inbox disconnected; reload to reconnect.', 'error');
    }
  });
}

function closeInbox() {
  if (inbox) inbox.close();
  inbox = null;
}

const drafts = new Map(); // approval id -> the reason being typed: kept when the live list re-renders the inbox

function renderInbox() {
  const focused = document.activeElement && document.activeElement.id;
  const pending = approvals.filter((a) => a.state === 'pending');
  const decided = approvals.filter((a) => a.state !== 'pending').slice(0, 20);
  show(
    h('h1', {}, 'Approvals inbox'),
    pending.length
      ? h('div', { id: 'pending' }, pending.map(approvalCard))
      : h('p', { class: 'muted', id: 'inbox-empty' }, 'Nothing is waiting for a decision. New requests appear here as they are held.'),
    h('h2', {}, 'Recently decided'),
    decided.length ? decidedTable(decided) : h('p', { class: 'muted' }, 'None yet.'),
  );
  const again = focused && document.getElementById(focused);
  if (again) again.focus({ preventScroll: true }); // a new request arriving does not take the typist's place
}

function approvalCard(a) {
  const mine = a.requester_subject === me.subject;
  const reasonId = `reason-${a.id}`;
  const reason = h('textarea', { id: reasonId, name: 'reason', maxlength: 2000, oninput: (e) => drafts.set(a.id, e.target.value) });
  reason.value = drafts.get(a.id) || '';
  const decide = async (verb, button) => {
    button.disabled = true;
    try {
      const body = reason.value.trim() ? { reason: reason.value.trim() } : {};
      const row = await api(`/approvals/${encodeURIComponent(a.id)}/${verb}`, { method: 'POST', body });
      say(`${a.id}: ${row.state}`);
    } catch (e) {
      say(`${a.id}: ${e.message}`, 'error');
      button.disabled = false;
    }
  };
  const target = `${a.server} · ${a.method}${a.target ? ` · ${a.target}` : ''}`;
  return h('article', { class: 'card approval', 'data-id': a.id, 'aria-labelledby': `t-${a.id}` },
    h('h2', { id: `t-${a.id}` }, target),
    h('dl', {},
      h('dt', {}, 'Requested by'), h('dd', { class: 'requester' }, a.requester_subject),
      h('dt', {}, 'Justification'), h('dd', { class: 'justification' }, a.justification || '—'),
      h('dt', {}, 'Rule'), h('dd', {}, a.rule || '—'),
      h('dt', {}, 'Approvers'), h('dd', {}, (a.approvers || []).join(', ')),
      h('dt', {}, 'Needs'), h('dd', {}, `${a.required} approval(s)${a.votes ? `, ${a.votes.length} so far` : ''}`),
      h('dt', {}, 'Expires'), h('dd', {}, when(a.expires_ns)),
      h('dt', {}, 'Session'), h('dd', {}, a.session_id ? h('a', { href: `#/session/${encodeURIComponent(a.session_id)}` }, a.session_id) : '—')),
    h('div', {}, h('strong', {}, 'Arguments (masked)'), maskedText(pretty(a.arguments ?? {}))),
    mine
      ? h('p', { class: 'muted' }, 'You asked for this call: someone else must decide it.')
      : h('div', {},
        h('label', { for: reasonId }, 'Reason (recorded with your decision)'),
        reason,
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'approve', onclick: (e) => decide('approve', e.currentTarget) }, 'Approve'),
          h('button', { type: 'button', class: 'deny', onclick: (e) => decide('deny', e.currentTarget) }, 'Deny'))),
  );
}

function decidedTable(rows) {
  return table(['Request', 'Call', 'Requester', 'State', 'Decided by', 'Reason'], rows.map((a) => [
    a.id, `${a.server} ${a.target || a.method}`, a.requester_subject, pill(a.state), a.decided_by || '—', a.reason || '—',
  ]));
}

// --- tables and forms ----------------------------------------------------------------------------------------

function table(heads, rows, id) {
  return h('table', { class: 'responsive', id },
    h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => h('td', { 'data-label': heads[i] }, c))))));
}

function filters(fields, values, onsubmit, id) {
  const form = h('form', { class: 'filters', id, role: 'search' });
  for (const [name, labelText, placeholder] of fields) {
    const inputId = `${id}-${name}`;
    form.append(h('div', {},
      h('label', { for: inputId }, labelText),
      h('input', { id: inputId, name, value: values[name] || '', placeholder: placeholder || '' })));
  }
  form.append(h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Search')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) q.set(k, String(v).trim());
    onsubmit(q);
  });
  return form;
}

function qs(params) {
  const s = params.toString();
  return s ? `?${s}` : '';
}

// --- sessions ------------------------------------------------------------------------------------------------

async function renderSessions(params) {
  const form = filters([['server', 'Server'], ['principal', 'Principal (subject)'], ['before', 'Before', 'e.g. 1h or 2026-11-24T10:00:00Z']],
    Object.fromEntries(params), (q) => { location.hash = `#/sessions${qs(q)}`; }, 'session-filters');
  show(h('h1', {}, 'Sessions'), form, h('p', { class: 'muted' }, 'Loading…'));
  const data = await api(`/sessions${qs(params)}`);
  show(h('h1', {}, 'Sessions'), form, data.sessions.length
    ? table(['Session', 'Server', 'Principal', 'Started', 'Ended', 'Records'], data.sessions.map((s) => [
      h('a', { href: `#/session/${encodeURIComponent(s.id)}` }, s.id),
      s.server,
      s.subject || '—',
      when(s.created_ns),
      s.ended_ns ? `${when(s.ended_ns)} (${s.end_reason || 'ended'})` : 'open',
      String(s.records),
    ]), 'sessions-table')
    : h('p', { class: 'muted' }, 'No sessions match.'));
}

async function renderSession(id) {
  show(h('h1', {}, `Session ${id}`), h('p', { class: 'muted' }, 'Loading…'));
  const data = await api(`/sessions/${encodeURIComponent(id)}`);
  const s = data.session;
  const items = data.records.map((r) => {
    const cls = r.direction === 'c2s' ? 'dir-in' : r.direction === 's2c' ? 'dir-out' : 'event';
    const recorded = r.masked ? JSON.parse(r.masked) : [];
    const masked = recorded.concat(r.display_masked || []);
    return h('li', { class: `${cls} record`, 'data-kind': r.kind },
      h('div', { class: 'meta' },
        h('span', {}, new Date(r.ts).toLocaleTimeString()),
        h('strong', {}, `${r.direction} ${r.kind}`),
        r.method ? h('span', {}, r.method) : null,
        r.msg_id ? h('span', {}, `id ${r.msg_id}`) : null,
        r.decision ? pill(r.decision) : null,
        r.rule ? h('span', {}, `rule ${r.rule}`) : null,
        r.outcome ? h('span', {}, r.outcome) : null,
        r.latency_us !== null && r.latency_us !== undefined ? h('span', {}, `${(r.latency_us / 1000).toFixed(2)} ms`) : null,
        masked.length ? h('span', { class: 'pill hold masked-note' }, `masked: ${maskSummary(masked)}`) : null),
      r.detail ? h('div', {}, r.detail) : null,
      r.payload ? maskedText(pretty(r.payload))
        : r.direction === 'c2s' && r.kind !== 'event' ? h('p', { class: 'muted' }, 'Payload not shown: it could not be masked.') : null);
  });
  show(
    h('h1', {}, `Session ${id}`),
    s ? h('div', { class: 'card' }, h('dl', {},
      h('dt', {}, 'Server'), h('dd', {}, s.server),
      h('dt', {}, 'Principal'), h('dd', {}, s.subject || '—'),
      h('dt', {}, 'Protocol'), h('dd', {}, `${s.era} ${s.protocol_version || ''}`),
      h('dt', {}, 'Started'), h('dd', {}, when(s.created_ns)),
      h('dt', {}, 'Ended'), h('dd', {}, s.ended_ns ? `${when(s.ended_ns)} (${s.end_reason || ''})` : 'open'))) : null,
    h('p', {}, h('a', { href: `${API}/sessions/${encodeURIComponent(id)}/export`, download: `session-${id}.json` }, 'Download the session document')),
    h('h2', {}, `Timeline (${data.records.length} records${data.truncated ? ', truncated' : ''})`),
    h('ol', { class: 'timeline', id: 'timeline' }, items),
  );
}

// --- audit ---------------------------------------------------------------------------------------------------

async function renderAudit(params) {
  const form = filters([['principal', 'Principal'], ['server', 'Server'], ['tool', 'Tool'], ['decision', 'Decision', 'allow, deny, hold'],
    ['kind', 'Kind'], ['text', 'Text'], ['since', 'Since', 'e.g. 24h']], Object.fromEntries(params),
  (q) => { location.hash = `#/audit${qs(q)}`; }, 'audit-filters');
  show(h('h1', {}, 'Audit trail'), form, h('p', { class: 'muted' }, 'Loading…'));
  if (!params.has('limit')) params.set('limit', '100');
  const data = await api(`/audit/records${qs(params)}`);
  show(h('h1', {}, 'Audit trail'), form, data.records.length
    ? table(['Time', 'Kind', 'Server', 'Call', 'Decision', 'Principal', 'Detail'], data.records.map((r) => [
      new Date(r.ts).toLocaleString(),
      r.kind,
      r.server,
      [r.method, targetOf(r.payload)].filter(Boolean).join(' ') || '—',
      r.decision ? pill(r.decision) : '—',
      principalName(r.principal),
      r.session_id ? h('a', { href: `#/session/${encodeURIComponent(r.session_id)}` }, r.detail || r.session_id) : (r.detail || ''),
    ]), 'audit-table')
    : h('p', { class: 'muted' }, 'No records match.'));
}

function targetOf(payload) {
  try {
    const p = JSON.parse(payload).params || {};
    return typeof p.name === 'string' ? p.name : typeof p.uri === 'string' ? p.uri : '';
  } catch {
    return '';
  }
}

function principalName(text) {
  if (!text) return '—';
  try {
    const p = JSON.parse(text);
    return p.email || p.sub || text;
  } catch {
    return text;
  }
}

// --- permissions ---------------------------------------------------------------------------------------------

async function renderPermissions(params) {
  const form = filters([['subject', 'Subject (empty: yourself)'], ['groups', 'Groups', 'comma-separated']],
    Object.fromEntries(params), (q) => { location.hash = `#/permissions${qs(q)}`; }, 'permission-filters');
  show(h('h1', {}, 'Effective permissions'), form, h('p', { class: 'muted' }, 'Loading…'));
  const data = await api(`/policy/permissions${qs(params)}`);
  const who = `${data.principal.subject}${data.principal.groups.length ? ` (${data.principal.groups.join(', ')})` : ''}`;
  show(h('h1', {}, 'Effective permissions'), form,
    h('p', {}, `What ${who} may call under policy ${data.policy_version}.`),
    data.servers.map((s) => h('section', { class: 'card' },
      h('h2', {}, s.server, ' ', pill(s.access)),
      table(['Item', 'Decision', 'Approvers', 'Why'], [...s.items, s.unlisted].map((p) => [
        `${p.kind} ${p.name}`, pill(p.decision), p.approvers.join(', ') || '—', p.reason,
      ])))));
}

// --- agents --------------------------------------------------------------------------------------------------

async function renderAgents() {
  show(h('h1', {}, 'Agents and servers'), h('p', { class: 'muted' }, 'Loading…'));
  const [health, agents] = await Promise.all([api('/health'), api('/agents')]);
  show(h('h1', {}, 'Agents and servers'),
    h('p', {}, 'Gateway: ', pill(health.ready ? 'ok' : 'error'), ` store ${health.store}, policy ${health.policy_version}`),
    h('h2', {}, 'Servers'),
    table(['Server', 'Transport', 'Circuit', 'Agents connected'], health.servers.map((s) => [
      s.name, s.transport, s.breaker || '—', s.agents === undefined ? '—' : String(s.agents),
    ]), 'servers-table'),
    h('h2', {}, 'Agents'),
    agents.agents.length
      ? table(['Agent', 'Servers', 'Usable tokens', 'Connections'], agents.agents.map((a) => [
        a.name, a.servers.join(', '), String(a.tokens), pill(a.connections > 0 ? `${a.connections} connected` : 'offline'),
      ]), 'agents-table')
      : h('p', { class: 'muted' }, 'No agents.'));
}

// --- routing -------------------------------------------------------------------------------------------------

function current() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  const [view, ...rest] = path.split('/');
  return { view: view || 'inbox', arg: rest.join('/'), params: new URLSearchParams(query || '') };
}

async function route(moved = true) {
  if (!me) return;
  const { view, arg, params } = current();
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.view === view || (view === 'session' && a.dataset.view === 'sessions')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  try {
    if (view === 'inbox') renderInbox();
    else if (view === 'sessions') await renderSessions(params);
    else if (view === 'session') await renderSession(decodeURIComponent(arg));
    else if (view === 'audit') await renderAudit(params);
    else if (view === 'permissions') await renderPermissions(params);
    else if (view === 'agents') await renderAgents();
    else show(h('h1', {}, 'Not found'));
    if (moved) main.focus({ preventScroll: true }); // after navigation: screen readers start at the new content
  } catch (e) {
    if (e.status === 401) signIn('Your session has ended: sign in again.');
    else show(h('h1', {}, 'Could not load this page'), h('p', { class: 'error', role: 'alert' }, e.message));
  }
}

async function start() {
  try {
    me = await api('/me');
  } catch (e) {
    signIn(e.status === 401 ? null : `The console cannot reach the gateway: ${e.message}`);
    return;
  }
  header();
  openInbox();
  window.addEventListener('hashchange', () => route(true));
  await route(false);
}

start();
