// The Switchyard dashboard (docs/ui.md). Plain JavaScript, no framework, no
// network access beyond the daemon that served it. It reads:
//   GET /api/state        models, instances, hosts and GPUs (every few seconds)
//   GET /api/events       state changes and load progress as they happen
//   GET /metrics          request counts and durations per model
//   GET /logs/stream/M    an engine's log, followed
// and acts with POST /api/models/MODEL/ACTION and POST /v1/chat/completions.
// Streams are read with fetch, not EventSource, so that the key travels as a header.
'use strict';

const KEY_STORE = 'yard.key';
const STATE_EVERY_MS = 3000;
const METRICS_EVERY_MS = 5000;
const HOUR_MS = 3600 * 1000;
const EVENTS_SHOWN = 200;
const LOG_LINES_KEPT = 2000;
// States in which an instance holds its GPUs, for the timeline.
const HOLDING = new Set(['starting', 'ready', 'sleeping', 'stopping']);

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
        if (k === 'class') e.className = v;
        else if (k === 'style') e.style.cssText = v; // CSSOM: allowed under the page's CSP
        else if (k.startsWith('data-')) e.setAttribute(k, v);
        else e[k] = v;
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
};

let state = null; // the last /api/state
const progress = new Map(); // "model/replica" -> percent while loading
const events = []; // state events of the last hour and more, oldest first
const seenIds = new Set();
let lastEventId = null;
const lastGpus = new Map(); // "model/replica/host" -> "0,1", as last seen in /api/state

function key() {
    return localStorage.getItem(KEY_STORE) || '';
}

function headers(extra = {}) {
    const k = key();
    return k ? { ...extra, Authorization: `Bearer ${k}` } : extra;
}

// What went wrong, by where: each part clears only its own message.
const errors = new Map();
function showError(source, msg) {
    if (msg) errors.set(source, msg);
    else errors.delete(source);
    const p = $('#error');
    p.textContent = [...errors.values()].join('\n');
    p.hidden = errors.size === 0;
}

async function errorOf(res) {
    const text = await res.text();
    try {
        return JSON.parse(text).error.message;
    } catch {
        return `${res.status} ${text}`;
    }
}

// Colours by model name, stable across reloads.
function colour(name) {
    let h = 0;
    for (const c of name) h = (h * 31 + c.codePointAt(0)) >>> 0;
    // Golden-angle steps, so names that differ by a letter get distant hues.
    return `hsl(${Math.round((h * 137.508) % 360)} 55% 45%)`;
}

function fmtBytes(n) {
    if (n === null || n === undefined) return '?';
    const g = n / 2 ** 30;
    return g >= 1 ? `${g.toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`;
}

function fmtSecs(s) {
    if (s === null || s === undefined) return '';
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

// ---- models and instances --------------------------------------------

function stateCell(name, replica, st) {
    const td = el('td', { class: `state ${st}`, 'data-state': st });
    td.append(st);
    const p = progress.get(`${name}/${replica}`);
    if (st === 'starting' && p !== undefined) {
        td.append(el('span', { class: 'bar', title: `${p}%` }, el('span', { style: `width:${p}%` })));
        td.append(` ${p}%`);
    }
    return td;
}

function actionButtons(inst) {
    const td = el('td', { class: 'actions' });
    const add = (action, enabled) => {
        const b = el('button', { type: 'button', textContent: action, disabled: !enabled });
        b.dataset.action = action;
        b.dataset.model = inst.name;
        b.addEventListener('click', () => act(inst.name, action));
        td.append(b);
    };
    const s = inst.state;
    add('start', s === 'stopped' || s === 'failed');
    add('stop', s !== 'stopped' && s !== 'unknown');
    add('sleep', s === 'ready');
    add('wake', s === 'sleeping' || s === 'checkpointed');
    add(inst.pinned ? 'unpin' : 'pin', true);
    return td;
}

function renderInstances() {
    const body = $('#instances tbody');
    body.replaceChildren();
    for (const i of state.instances) {
        // Replicas beyond the first are listed while they run.
        if (i.replica > 0 && i.state === 'stopped') continue;
        const tr = el(
            'tr',
            { 'data-model': i.name, 'data-replica': String(i.replica) },
            el('td', { class: 'model' }, i.name),
            el('td', {}, String(i.replica)),
            stateCell(i.name, i.replica, i.state),
            el('td', {}, i.host || ''),
            el('td', {}, i.gpus || ''),
            el('td', {}, i.port ? String(i.port) : ''),
            el('td', {}, fmtSecs(i.uptime_s)),
            el('td', {}, i.pinned ? 'pinned' : ''),
            el('td', {}, fmtSecs(i.ttl_left_s)),
            el('td', { class: 'inflight' }, String(i.inflight ?? 0)),
            el('td', { class: 'queued' }, String(i.queued ?? 0)),
            el('td', { class: 'reason', title: i.reason || '' }, i.reason || ''),
            i.replica === 0 ? actionButtons(i) : el('td'),
        );
        body.append(tr);
    }
}

// An event changes the row at once; the next /api/state fills in the rest.
function applyEvent(ev) {
    if (!state) return;
    const inst = state.instances.find((i) => i.name === ev.model && i.replica === ev.replica);
    if (inst) {
        inst.state = ev.to;
        inst.reason = ev.reason;
        if (ev.to !== 'starting') progress.delete(`${ev.model}/${ev.replica}`);
        if (ev.to === 'stopped' || ev.to === 'failed') {
            inst.port = inst.pid = inst.uptime_s = inst.ttl_left_s = null;
            inst.gpus = '';
        }
        renderInstances();
    }
    // The rest of the row (port, GPUs, uptime) and the GPUs follow shortly.
    clearTimeout(refreshSoon);
    refreshSoon = setTimeout(refreshState, 200);
}
let refreshSoon = null;

function applyProgress(p) {
    progress.set(`${p.model}/${p.replica}`, p.percent);
    const row = document.querySelector(
        `#instances tr[data-model="${CSS.escape(p.model)}"][data-replica="${p.replica}"]`,
    );
    if (row) row.children[2].replaceWith(stateCell(p.model, p.replica, p.state));
}

// ---- GPUs ------------------------------------------------------------

function renderGpus() {
    const box = $('#gpus');
    box.replaceChildren();
    for (const h of state.hosts) {
        const inv = h.inventory || {};
        const gpus = inv.gpus || [];
        box.append(el('h3', {}, `${h.name}${h.reachable === false ? ' (unreachable)' : ''}`));
        if (!gpus.length) {
            box.append(el('p', { class: 'label' }, inv.error ? `no GPUs read: ${inv.error}` : 'no GPUs'));
            continue;
        }
        for (const g of gpus) {
            const total = g.total || g.memory_total || 0;
            const bar = el('div', { class: 'membar' });
            let accounted = 0;
            for (const p of g.processes || []) {
                const used = p.used || 0;
                accounted += used;
                const w = total ? (100 * used) / total : 0;
                const mine = p.model !== null && p.model !== undefined;
                bar.append(
                    el(
                        'span',
                        {
                            class: mine ? 'mine' : 'foreign',
                            style: `width:${w}%;${mine ? `background:${colour(p.model)}` : ''}`,
                            title: `${mine ? p.model : `${p.name} (not yard's)`} pid ${p.pid}: ${fmtBytes(p.used)}`,
                            'data-model': mine ? p.model : '',
                        },
                        mine ? p.model : p.name,
                    ),
                );
            }
            const used = g.used ?? 0;
            if (total && used > accounted)
                bar.append(
                    el('span', { class: 'other', style: `width:${(100 * (used - accounted)) / total}%`, title: 'used, no process listed' }),
                );
            box.append(
                el(
                    'div',
                    { class: 'gpu', 'data-host': h.name, 'data-index': String(g.index) },
                    el('div', { class: 'label' }, `GPU ${g.index} ${g.name || ''}: ${fmtBytes(used)} of ${fmtBytes(total)}`),
                    bar,
                ),
            );
        }
    }
}

// ---- the timeline ----------------------------------------------------

// Which model held each GPU: intervals from the state events, GPUs from the instances.
function renderTimeline() {
    const box = $('#timeline');
    box.replaceChildren();
    if (!state) return;
    const now = Date.now();
    const spanMs = Number($('#span').value) * 60000 || HOUR_MS;
    const from = now - spanMs;
    // GPUs of an instance: as last seen running, else the config's fixed list.
    for (const i of state.instances) if (i.gpus) lastGpus.set(`${i.name}/${i.replica}/${i.host}`, i.gpus);
    const fixed = new Map(state.models.filter((m) => m.gpus && m.gpus.length).map((m) => [m.name, m.gpus.join(',')]));
    const gpusOf = (k, model) => lastGpus.get(k) || fixed.get(model);
    // Intervals per instance: [start, end, model].
    const open = new Map();
    const spans = [];
    for (const ev of events) {
        const k = `${ev.model}/${ev.replica}/${ev.host}`;
        if (HOLDING.has(ev.to) && !open.has(k)) open.set(k, { start: ev.ts_ms, ev });
        else if (!HOLDING.has(ev.to) && open.has(k)) {
            spans.push({ k, model: ev.model, host: ev.host, start: open.get(k).start, end: ev.ts_ms });
            open.delete(k);
        }
    }
    for (const [k, o] of open) spans.push({ k, model: o.ev.model, host: o.ev.host, start: o.start, end: now });
    // Rows: every GPU of every host, and a row per host for instances without GPUs.
    const rows = new Map();
    for (const h of state.hosts)
        for (const g of (h.inventory && h.inventory.gpus) || []) rows.set(`${h.name}:${g.index}`, []);
    for (const s of spans) {
        if (s.end < from) continue;
        const list = gpusOf(s.k, s.model);
        const keys = list ? list.split(',').map((g) => `${s.host}:${g}`) : [`${s.host}:no GPU`];
        for (const rk of keys) {
            if (!rows.has(rk)) rows.set(rk, []);
            rows.get(rk).push(s);
        }
    }
    for (const [name, segs] of rows) {
        const track = el('div', { class: 'track' });
        for (const s of segs) {
            const a = Math.max(s.start, from);
            const left = (100 * (a - from)) / spanMs;
            const width = Math.max(0.3, (100 * (s.end - a)) / spanMs);
            track.append(
                el(
                    'span',
                    {
                        class: 'seg',
                        'data-model': s.model,
                        style: `left:${left}%;width:${width}%;background:${colour(s.model)}`,
                        title: `${s.model}: ${new Date(s.start).toLocaleTimeString()} to ${s.end === now ? 'now' : new Date(s.end).toLocaleTimeString()}`,
                    },
                    s.model,
                ),
            );
        }
        box.append(el('div', { class: 'row', 'data-gpu': name }, el('span', { class: 'name' }, name), track));
    }
    const ago = (ms) => (ms >= 60000 ? `-${ms / 60000} min` : `-${ms / 1000} s`);
    box.append(el('div', { class: 'axis' }, el('span', {}, ago(spanMs)), el('span', {}, ago(spanMs / 2)), el('span', {}, 'now')));
}

// ---- events ----------------------------------------------------------

function addEventItem(ev) {
    const list = $('#events');
    const t = new Date(ev.ts_ms);
    list.prepend(
        el(
            'li',
            { 'data-id': String(ev.id) },
            el('time', {}, t.toLocaleTimeString()),
            `${ev.model}${ev.replica ? `#${ev.replica}` : ''}@${ev.host}: ${ev.from} → ${ev.to}${ev.reason ? ` (${ev.reason})` : ''}`,
        ),
    );
    while (list.children.length > EVENTS_SHOWN) list.lastChild.remove();
}

function onStateEvent(ev) {
    if (seenIds.has(ev.id)) return;
    seenIds.add(ev.id);
    events.push(ev);
    const cut = Date.now() - 2 * HOUR_MS;
    while (events.length && events[0].ts_ms < cut) seenIds.delete(events.shift().id);
    lastEventId = ev.id;
    addEventItem(ev);
    applyEvent(ev);
    renderTimeline();
}

// Reads a text/event-stream body, calling onEvent(type, data) per event.
async function readSse(res, onEvent) {
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value.replace(/\r\n/g, '\n');
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let type = 'message';
            const data = [];
            for (const line of block.split('\n')) {
                if (line.startsWith(':')) continue;
                const i = line.indexOf(':');
                const f = i < 0 ? line : line.slice(0, i);
                const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
                if (f === 'event') type = v;
                else if (f === 'data') data.push(v);
            }
            if (data.length) onEvent(type, data.join('\n'));
        }
    }
}

async function followEvents() {
    const conn = $('#conn');
    for (;;) {
        try {
            const q = lastEventId === null ? 'last=1000' : `after=${lastEventId}`;
            const res = await fetch(`/api/events?${q}`, { headers: headers() });
            if (!res.ok) throw new Error(await errorOf(res));
            showError('events', '');
            conn.textContent = 'live';
            conn.className = 'conn on';
            await readSse(res, (type, data) => {
                const d = JSON.parse(data);
                if (type === 'state') onStateEvent(d);
                else if (type === 'progress') applyProgress(d);
            });
        } catch (e) {
            showError('events', `event stream: ${e.message}`);
        }
        conn.textContent = 'reconnecting';
        conn.className = 'conn off';
        await new Promise((r) => setTimeout(r, 2000));
    }
}

// ---- state, metrics --------------------------------------------------

function fillModelSelect(sel) {
    const was = sel.value;
    const names = state.models.map((m) => m.name);
    if ([...sel.options].map((o) => o.value).join() !== names.join())
        sel.replaceChildren(...names.map((n) => el('option', { value: n, textContent: n })));
    if (names.includes(was)) sel.value = was;
}

let stateBusy = false;
async function refreshState() {
    if (stateBusy) return;
    stateBusy = true;
    try {
        const res = await fetch('/api/state', { headers: headers() });
        if (!res.ok) throw new Error(await errorOf(res));
        state = await res.json();
        renderInstances();
        renderGpus();
        renderTimeline();
        const logSel = $('#logmodel');
        const first = !logSel.options.length;
        fillModelSelect(logSel);
        fillModelSelect($('#playmodel'));
        if (first && logSel.value) followLog(logSel.value);
        showError('state', '');
    } catch (e) {
        showError('state', `state: ${e.message}`);
    } finally {
        stateBusy = false;
    }
}

// Prometheus text: [{name, labels, value}] for the series asked.
function parseMetrics(text, wanted) {
    const out = [];
    for (const line of text.split('\n')) {
        const m = /^([a-z_]+)(\{(.*)\})? ([-0-9.e+]+|NaN)$/.exec(line);
        if (!m || !wanted.has(m[1])) continue;
        const labels = {};
        for (const l of (m[3] || '').matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
        out.push({ name: m[1], labels, value: Number(m[4]) });
    }
    return out;
}

let prevMetrics = null; // {at, perModel: Map(model -> {count, sum, n})}
async function refreshMetrics() {
    try {
        const res = await fetch('/metrics');
        if (!res.ok) return;
        const series = parseMetrics(
            await res.text(),
            new Set(['yard_requests_total', 'yard_request_duration_seconds_sum', 'yard_request_duration_seconds_count']),
        );
        const per = new Map();
        const get = (m) => per.get(m) || per.set(m, { count: 0, sum: 0, n: 0 }).get(m);
        for (const s of series) {
            const model = s.labels.model;
            if (!model || model === '-' || model === 'unknown') continue;
            if (s.name === 'yard_requests_total') get(model).count += s.value;
            else if (s.name === 'yard_request_duration_seconds_sum') get(model).sum = s.value;
            else get(model).n = s.value;
        }
        const now = Date.now();
        const body = $('#rates tbody');
        body.replaceChildren();
        for (const [model, v] of per) {
            const was = prevMetrics && prevMetrics.perModel.get(model);
            const dt = prevMetrics ? (now - prevMetrics.at) / 60000 : 0;
            const rate = was && dt > 0 ? (v.count - was.count) / dt : null;
            const dn = was ? v.n - was.n : 0;
            const lat = dn > 0 ? (v.sum - was.sum) / dn : v.n > 0 ? v.sum / v.n : null;
            body.append(
                el(
                    'tr',
                    { 'data-model': model },
                    el('td', {}, model),
                    el('td', { class: 'count' }, String(v.count)),
                    el('td', {}, rate === null ? '' : rate.toFixed(1)),
                    el('td', {}, lat === null ? '' : `${(lat * 1000).toFixed(0)} ms`),
                ),
            );
        }
        prevMetrics = { at: now, perModel: per };
    } catch {
        // the next round tries again
    }
}

// ---- actions ---------------------------------------------------------

async function act(model, action) {
    try {
        const res = await fetch(`/api/models/${encodeURIComponent(model)}/${action}`, {
            method: 'POST',
            headers: headers(),
        });
        if (!res.ok) throw new Error(await errorOf(res));
        showError('action', '');
    } catch (e) {
        showError('action', `${action} ${model}: ${e.message}`);
    }
    refreshState();
}

// ---- the engine log --------------------------------------------------

let logAbort = null;
async function followLog(model) {
    if (logAbort) logAbort.abort();
    const ctl = new AbortController();
    logAbort = ctl;
    const pre = $('#log');
    pre.textContent = '';
    pre.dataset.model = model;
    try {
        const res = await fetch(`/logs/stream/${encodeURIComponent(model)}`, { headers: headers(), signal: ctl.signal });
        if (!res.ok) throw new Error(await errorOf(res));
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
            pre.append(value);
            const lines = pre.textContent.split('\n');
            if (lines.length > LOG_LINES_KEPT) pre.textContent = lines.slice(-LOG_LINES_KEPT).join('\n');
            if (atEnd) pre.scrollTop = pre.scrollHeight;
        }
    } catch (e) {
        if (e.name !== 'AbortError') pre.append(`\n[log: ${e.message}]\n`);
    }
}

// ---- the playground --------------------------------------------------

async function send(ev) {
    ev.preventDefault();
    const out = $('#answer');
    const btn = $('#send');
    out.textContent = '';
    out.dataset.done = '';
    btn.disabled = true;
    try {
        const res = await fetch('/v1/chat/completions', {
            method: 'POST',
            headers: headers({ 'Content-Type': 'application/json' }),
            body: JSON.stringify({
                model: $('#playmodel').value,
                stream: true,
                messages: [{ role: 'user', content: $('#prompt').value }],
            }),
        });
        if (!res.ok) throw new Error(await errorOf(res));
        await readSse(res, (type, data) => {
            if (data === '[DONE]') return;
            const d = JSON.parse(data);
            if (d.error) throw new Error(d.error.message);
            const c = d.choices && d.choices[0] && d.choices[0].delta && d.choices[0].delta.content;
            if (c) out.append(c);
        });
        out.dataset.done = 'ok';
    } catch (e) {
        out.append(`\n[error: ${e.message}]`);
        out.dataset.done = 'error';
    } finally {
        btn.disabled = false;
    }
}

// ---- start -----------------------------------------------------------

function init() {
    $('#key').value = key();
    $('#keyform').addEventListener('submit', (e) => {
        e.preventDefault();
        localStorage.setItem(KEY_STORE, $('#key').value);
        refreshState();
        if ($('#logmodel').value) followLog($('#logmodel').value);
    });
    $('#forget').addEventListener('click', () => {
        localStorage.removeItem(KEY_STORE);
        $('#key').value = '';
    });
    $('#logmodel').addEventListener('change', (e) => followLog(e.target.value));
    $('#span').addEventListener('change', renderTimeline);
    $('#play').addEventListener('submit', send);
    refreshState();
    refreshMetrics();
    setInterval(refreshState, STATE_EVERY_MS);
    setInterval(refreshMetrics, METRICS_EVERY_MS);
    setInterval(renderTimeline, 30000);
    followEvents();
}

init();
