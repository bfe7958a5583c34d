// llama-swap's management endpoints and yard's event stream, over plain HTTP:
//   - GET /running lists what runs, in llama-swap's shape (model, state, cmd, proxy, ttl)
//   - POST /unload/MODEL, GET|POST /unload and POST /api/models/unload[/MODEL] stop and
//     answer once the engines are gone; an unknown model is a 404 in OpenAI's shape
//   - GET /api/events: state changes with their event ids as they happen, load
//     progress, what was missed replayed from Last-Event-ID or ?after=, ?last=N
//   - all of them behind api_keys
import { test } from 'node:test';
import * as h from './lib/harness.mjs';

const { assert } = h;

const mock = (extra = '') =>
    `${h.MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME} ${extra}`.trim();

async function daemon(models, { top = '' } = {}) {
    const dir = h.tmpdir();
    const port = await h.freePort();
    let yaml = `listen: 127.0.0.1:${port}\n${top}defaults: { stop_timeout: 2s }\nmodels:\n`;
    for (const [name, body] of Object.entries(models)) {
        yaml += `  ${name}:\n`;
        for (const [k, v] of Object.entries(body)) yaml += `    ${k}: ${JSON.stringify(v)}\n`;
    }
    const file = h.writeConfig(dir, yaml);
    const d = await h.startDaemon({ config: file, stateDir: dir });
    return { dir, url: `http://127.0.0.1:${port}`, d };
}

const start = async (dir, name) =>
    assert.equal((await h.yard(['start', name, '--wait'], { stateDir: dir })).code, 0);

/** Events of a text/event-stream body, with their ids: [{id, event, data}]. */
function sse(text) {
    const out = [];
    for (const block of text.replace(/\r\n/g, '\n').split('\n\n')) {
        let id = null;
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
            if (line === '' || line.startsWith(':')) continue;
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (field === 'id') id = Number(value);
            else if (field === 'event') event = value;
            else if (field === 'data') data.push(value);
        }
        if (data.length) out.push({ id, event, data: JSON.parse(data.join('\n')) });
    }
    return out;
}

/** Reads an open stream until pred(events so far) holds; returns the events. */
async function readUntil(stream, pred, what) {
    let text = '';
    for (;;) {
        const events = sse(text.slice(0, text.lastIndexOf('\n\n') + 2));
        if (pred(events)) return events;
        const chunk = await stream.nextChunk(15000);
        if (chunk === null) throw new Error(`stream ended before ${what}: ${text}`);
        text += chunk;
    }
}

test('GET /running lists what runs in llama-swap\'s shape', async () => {
    const { dir, url } = await daemon({
        a: { engine: 'vllm', ttl: '5m', cmd: mock('--load-time 50ms') },
        b: { engine: 'vllm', cmd: mock('--load-time 50ms') },
    });
    let r = await h.httpGet(`${url}/running`);
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^application\/json/);
    assert.deepEqual(JSON.parse(r.body), { running: [] });
    await start(dir, 'a');
    r = await h.httpGet(`${url}/running`);
    const { running } = JSON.parse(r.body);
    assert.equal(running.length, 1);
    const [a] = running;
    const ps = (await h.ps(dir)).find((e) => e.name === 'a');
    assert.equal(a.model, 'a');
    assert.equal(a.state, 'ready');
    assert.equal(a.ttl, 300);
    assert.equal(a.proxy, `http://127.0.0.1:${ps.port}`);
    assert.match(a.cmd, /mock-engine --flavor vllm --port \$\{PORT\}/);
    assert.equal(a.host, 'local');
    assert.equal(a.replica, 0);
    // The address answers: it is the engine's.
    assert.equal((await h.httpGet(`${a.proxy}/health`)).status, 200);
});

test('POST /unload/MODEL stops one; GET /unload and POST /api/models/unload stop all', async () => {
    const { dir, url } = await daemon({
        a: { engine: 'vllm', cmd: mock('--load-time 50ms') },
        b: { engine: 'vllm', cmd: mock('--load-time 50ms') },
    });
    await start(dir, 'a');
    await start(dir, 'b');
    const pidOf = async (n) => (await h.ps(dir)).find((e) => e.name === n).pid;
    const pa = await pidOf('a');
    const pb = await pidOf('b');

    let r = await h.httpPost(`${url}/unload/a`, '');
    assert.equal(r.status, 200);
    assert.equal(r.body, 'OK');
    // Answered once the engine is gone, not before.
    assert.equal(h.pidAlive(pa), false);
    assert.equal((await h.ps(dir)).find((e) => e.name === 'a').state, 'stopped');
    assert.equal((await h.ps(dir)).find((e) => e.name === 'b').state, 'ready');
    const ev = await h.yard(['events', 'a'], { stateDir: dir });
    assert.match(ev.stdout, /stopped by an unload request/);

    r = await h.httpPost(`${url}/unload/nope`, '');
    assert.equal(r.status, 404);
    const err = JSON.parse(r.body).error;
    assert.equal(err.code, 'model_not_found');
    assert.match(err.message, /^unknown model 'nope'; configured models: a, b/);
    r = await h.httpPost(`${url}/unload/%zz`, '');
    assert.equal(r.status, 400);

    r = await h.httpGet(`${url}/unload`);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'OK');
    assert.equal(h.pidAlive(pb), false);

    await start(dir, 'a');
    await start(dir, 'b');
    r = await h.httpPost(`${url}/api/models/unload/b`, '');
    assert.equal(r.status, 200);
    assert.equal((await h.ps(dir)).find((e) => e.name === 'b').state, 'stopped');
    r = await h.httpPost(`${url}/api/models/unload`, '');
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body), { msg: 'ok' });
    assert.deepEqual(
        (await h.ps(dir)).map((e) => e.state),
        ['stopped', 'stopped'],
    );
    // Nothing runs: an unload still answers.
    assert.equal((await h.httpPost(`${url}/unload`, '')).body, 'OK');
});

test('GET /api/events streams state changes with ids and progress; a reconnect gets what it missed', async () => {
    const { dir, url } = await daemon({
        a: { engine: 'vllm', cmd: mock('--load-time 600ms') },
    });
    const s = await h.httpOpen('GET', `${url}/api/events`);
    assert.equal(s.status, 200);
    assert.match(s.headers['content-type'], /^text\/event-stream/);
    assert.equal(s.headers['cache-control'], 'no-cache');
    await start(dir, 'a');
    const got = await readUntil(
        s,
        (evs) => evs.some((e) => e.event === 'state' && e.data.to === 'ready'),
        "a's ready event",
    );
    const states = got.filter((e) => e.event === 'state');
    assert.deepEqual(
        states.map((e) => [e.data.model, e.data.from, e.data.to]),
        [
            ['a', 'stopped', 'starting'],
            ['a', 'starting', 'ready'],
        ],
    );
    for (const e of states) assert.equal(e.id, e.data.id);
    assert.ok(states[1].id > states[0].id);
    // The same events as yard events --json, ids included.
    const listed = await h.yard(['events', 'a', '--json'], { stateDir: dir });
    const ids = listed.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
        .map((e) => (e.event ?? e).id);
    for (const e of states) assert.ok(ids.includes(e.id), `event ${e.id} not in yard events`);
    // Progress while it loaded, as the mock logs it.
    const progress = got.filter((e) => e.event === 'progress');
    assert.ok(progress.length > 0, 'no progress event while it loaded');
    for (const p of progress) {
        assert.equal(p.data.model, 'a');
        assert.ok(p.data.percent >= 0 && p.data.percent <= 100);
    }
    s.abort();

    // Missed while away: replayed from Last-Event-ID, then live again.
    const lastSeen = states[1].id;
    assert.equal((await h.yard(['stop', 'a'], { stateDir: dir })).code, 0);
    const again = await h.httpOpen('GET', `${url}/api/events`, undefined, {
        headers: { 'Last-Event-ID': String(lastSeen) },
    });
    const replay = await readUntil(
        again,
        (evs) => evs.some((e) => e.event === 'state' && e.data.to === 'stopped'),
        'the stop, replayed',
    );
    assert.deepEqual(
        replay.filter((e) => e.event === 'state').map((e) => e.data.to),
        ['stopping', 'stopped'],
    );
    assert.ok(replay.every((e) => e.event !== 'state' || e.id > lastSeen));
    await start(dir, 'a');
    await readUntil(
        again,
        (evs) => evs.filter((e) => e.event === 'state' && e.data.to === 'ready').length === 1,
        'the new start, live',
    );
    again.abort();

    // ?last=N: the last N, then live; ?after= as Last-Event-ID.
    const last = await h.httpOpen('GET', `${url}/api/events?last=2`);
    const two = await readUntil(last, (evs) => evs.length >= 2, 'the last two');
    assert.deepEqual(two.map((e) => e.data.to), ['starting', 'ready']);
    last.abort();
    const after = await h.httpOpen('GET', `${url}/api/events?after=${lastSeen}`);
    const since = await readUntil(after, (evs) => evs.length >= 4, 'the four since');
    assert.deepEqual(since.map((e) => e.data.to), ['stopping', 'stopped', 'starting', 'ready']);
    after.abort();

    for (const bad of ['?after=x', '?last=1001', '?after=-1']) {
        const r = await h.httpGet(`${url}/api/events${bad}`);
        assert.equal(r.status, 400, bad);
        assert.match(JSON.parse(r.body).error.message, /Last-Event-ID or \?after=ID/);
    }
});

test('api_keys guard the llama-swap endpoints and the event stream', async () => {
    const { url } = await daemon(
        { a: { engine: 'vllm', cmd: mock('--load-time 50ms') } },
        { top: 'api_keys: [ "k1" ]\n' },
    );
    for (const [method, path] of [
        ['GET', '/running'],
        ['GET', '/unload'],
        ['POST', '/unload/a'],
        ['POST', '/api/models/unload'],
        ['GET', '/api/events'],
    ]) {
        const r = await h.httpRequest(method, `${url}${path}`, method === 'POST' ? '' : undefined);
        assert.equal(r.status, 401, `${method} ${path}`);
        assert.equal(JSON.parse(r.body).error.code, 'invalid_api_key');
    }
    const ok = await h.httpGet(`${url}/running`, { headers: { authorization: 'Bearer k1' } });
    assert.equal(ok.status, 200);
});
