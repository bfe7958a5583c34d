// The dashboard's API over plain HTTP (docs/ui.md), without a browser:
//   - GET /ui/ and its files are served from the binary, open; /ui redirects; an
//     unknown file is a 404; ui: false turns the page and its API off
//   - GET /api/state: models, instances as `yard ps` has them plus requests in flight
//     and queued, hosts with their GPU inventory; behind api_keys
//   - POST /api/models/MODEL/ACTION: 401 without a key, 403 with an API key when
//     admin_keys is set, 202/200 with an admin key, and the action happens through the
//     scheduler; unknown models and actions, and refusals, in OpenAI's error shape
//   - GET /logs/stream/MODEL: the log's tail then new lines; ?no-history; unknown model
//   - yard_request_duration_seconds{model} on /metrics
import { test } from 'node:test';
import * as h from './lib/harness.mjs';

const { assert } = h;

const mock = (extra = '') => `${h.MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME} ${extra}`.trim();

async function daemon(top = '') {
    const dir = h.tmpdir();
    const port = await h.freePort();
    const m = JSON.stringify(mock('--load-time 50ms'));
    const yaml =
        `listen: 127.0.0.1:${port}\n${top}defaults: { stop_timeout: 2s }\nmodels:\n` +
        `  a: { engine: vllm, aliases: [ al ], ttl: 5m, cmd: ${m} }\n` +
        `  b: { engine: vllm, cmd: ${m} }\n`;
    const d = await h.startDaemon({ config: h.writeConfig(dir, yaml), stateDir: dir });
    return { dir, url: `http://127.0.0.1:${port}`, d };
}

const auth = (key) => ({ headers: { Authorization: `Bearer ${key}` } });
const errorOf = (r) => JSON.parse(r.body).error;

test('the page is served from the binary, open; /ui redirects; ui: false turns it off', async () => {
    const { url, d } = await daemon('api_keys: [ k-api ]\n');
    let r = await h.httpGet(`${url}/ui/`);
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^text\/html/);
    assert.match(r.headers['content-security-policy'], /default-src 'self'/);
    assert.match(r.body, /<script src="app.js"/);
    r = await h.httpGet(`${url}/ui/app.js`);
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^text\/javascript/);
    // Nothing in the page reaches past the daemon.
    assert.doesNotMatch(r.body, /https?:\/\//);
    r = await h.httpGet(`${url}/ui/app.css`);
    assert.match(r.headers['content-type'], /^text\/css/);
    r = await h.httpGet(`${url}/ui`);
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, '/ui/');
    r = await h.httpGet(`${url}/ui/nope.js`);
    assert.equal(r.status, 404);
    assert.match(errorOf(r).message, /no file 'nope.js'/);
    await d.stop();

    const off = await daemon('ui: false\n');
    for (const [m, p] of [
        ['GET', '/ui/'],
        ['GET', '/api/state'],
        ['POST', '/api/models/a/start'],
    ]) {
        r = await h.httpRequest(m, `${off.url}${p}`, m === 'POST' ? '' : undefined);
        assert.equal(r.status, 404, `${m} ${p}`);
        assert.equal(errorOf(r).code, 'ui_disabled');
    }
    // The event stream and llama-swap's endpoints stay.
    assert.equal((await h.httpGet(`${off.url}/running`)).status, 200);
    await off.d.stop();
});

test('GET /api/state and the actions, behind api_keys and admin_keys', async () => {
    const { dir, url, d } = await daemon('api_keys: [ k-api ]\nadmin_keys: [ k-admin ]\n');
    let r = await h.httpGet(`${url}/api/state`);
    assert.equal(r.status, 401);
    assert.equal(errorOf(r).code, 'invalid_api_key');
    // An admin key is accepted where an API key is.
    for (const key of ['k-api', 'k-admin']) assert.equal((await h.httpGet(`${url}/api/state`, auth(key))).status, 200);
    r = await h.httpGet(`${url}/api/state`, auth('k-api'));
    let st = JSON.parse(r.body);
    assert.equal(st.admin_keys, true);
    assert.deepEqual(
        st.models.map((m) => [m.name, m.engine, m.aliases, m.ttl_s, m.pinned]),
        [
            ['a', 'vllm', ['al'], 300, false],
            ['b', 'vllm', [], 0, false],
        ]
    );
    const ps = await h.ps(dir);
    assert.deepEqual(
        st.instances.map((i) => [i.name, i.replica, i.state, i.inflight, i.queued]),
        ps.map((i) => [i.name, i.replica, i.state, 0, 0])
    );
    const local = st.hosts.find((x) => x.name === 'local');
    assert.equal(local.kind, 'local');
    assert.ok(local.inventory && Array.isArray(local.inventory.gpus), JSON.stringify(local));

    // Actions: no key 401, an API key 403, an admin key acts.
    r = await h.httpPost(`${url}/api/models/a/start`, '');
    assert.equal(r.status, 401);
    assert.equal(r.headers['www-authenticate'], 'Bearer');
    assert.match(errorOf(r).message, /admin_keys/);
    r = await h.httpPost(`${url}/api/models/a/start`, '', auth('k-api'));
    assert.equal(r.status, 403);
    assert.deepEqual(
        [errorOf(r).type, errorOf(r).code],
        ['permission_error', 'admin_key_required']
    );
    assert.equal((await h.ps(dir)).find((e) => e.name === 'a').state, 'stopped');

    // By alias, percent-encoded path: the model's name answers.
    r = await h.httpPost(`${url}/api/models/%61l/start`, '', auth('k-admin'));
    assert.equal(r.status, 202, r.body);
    assert.deepEqual(JSON.parse(r.body).model, 'a');
    await h.waitState(dir, 'a', 'ready');
    st = JSON.parse((await h.httpGet(`${url}/api/state`, auth('k-api'))).body);
    const a = st.instances.find((i) => i.name === 'a');
    assert.equal(a.state, 'ready');
    assert.equal(a.port, (await h.ps(dir)).find((e) => e.name === 'a').port);
    assert.ok(a.uptime_s >= 0);
    assert.deepEqual(local.instances, []);
    assert.deepEqual(st.hosts.find((x) => x.name === 'local').instances, ['a']);

    r = await h.httpPost(`${url}/api/models/a/pin`, '', auth('k-admin'));
    assert.equal(r.status, 200, r.body);
    st = JSON.parse((await h.httpGet(`${url}/api/state`, auth('k-api'))).body);
    assert.equal(st.instances.find((i) => i.name === 'a').pinned, true);
    assert.equal(st.models.find((m) => m.name === 'a').pinned, true);
    assert.equal((await h.httpPost(`${url}/api/models/a/unpin`, '', auth('k-admin'))).status, 200);

    // Refusals in OpenAI's shape.
    r = await h.httpPost(`${url}/api/models/b/wake`, '', auth('k-admin'));
    assert.equal(r.status, 409);
    assert.equal(errorOf(r).code, 'conflict');
    assert.match(errorOf(r).message, /^cannot wake 'b': 'b' is stopped; only a sleeping model can wake/);
    r = await h.httpPost(`${url}/api/models/nope/start`, '', auth('k-admin'));
    assert.equal(r.status, 404);
    assert.match(errorOf(r).message, /^unknown model 'nope'; configured models: a, b/);
    r = await h.httpPost(`${url}/api/models/a/frob`, '', auth('k-admin'));
    assert.equal(r.status, 404);
    assert.match(errorOf(r).message, /no action 'frob'/);
    r = await h.httpPost(`${url}/api/models/a`, '', auth('k-admin'));
    assert.equal(r.status, 404);
    assert.match(errorOf(r).message, /use POST \/api\/models\/MODEL\/ACTION/);

    // Stop: answered at once, the stop follows, with the dashboard as its reason.
    const pid = (await h.ps(dir)).find((e) => e.name === 'a').pid;
    r = await h.httpPost(`${url}/api/models/a/stop`, '', auth('k-admin'));
    assert.equal(r.status, 202, r.body);
    await h.waitState(dir, 'a', 'stopped');
    assert.equal(h.pidAlive(pid), false);
    const ev = await h.yard(['events', 'a'], { stateDir: dir });
    assert.match(ev.stdout, /stopped by the dashboard/);
    await d.stop();
});

test('without admin_keys an API key acts; without api_keys anyone reads and acts', async () => {
    const { dir, url, d } = await daemon('api_keys: [ k-api ]\n');
    assert.equal((await h.httpPost(`${url}/api/models/b/start`, '')).status, 401);
    const r = await h.httpPost(`${url}/api/models/b/start`, '', auth('k-api'));
    assert.equal(r.status, 202, r.body);
    await h.waitState(dir, 'b', 'ready');
    await d.stop();

    const open = await daemon();
    assert.equal((await h.httpGet(`${open.url}/api/state`)).status, 200);
    assert.equal((await h.httpPost(`${open.url}/api/models/b/start`, '')).status, 202);
    await h.waitState(open.dir, 'b', 'ready');
    await open.d.stop();
});

test('GET /logs/stream/MODEL: the tail, then new lines; ?no-history; an unknown model', async () => {
    const { dir, url, d } = await daemon('api_keys: [ k-api ]\n');
    assert.equal((await h.httpGet(`${url}/logs/stream/a`)).status, 401);
    let r = await h.httpGet(`${url}/logs/stream/nope`, auth('k-api'));
    assert.equal(r.status, 400);
    assert.match(errorOf(r).message, /^unknown model 'nope'; use \/logs\/stream\/MODEL with one of: a, b/);
    r = await h.httpGet(`${url}/logs/stream`, auth('k-api'));
    assert.equal(r.status, 400);
    assert.equal(errorOf(r).code, 'model_missing');
    r = await h.httpGet(`${url}/logs/stream/a?replica=x`, auth('k-api'));
    assert.equal(r.status, 400);

    assert.equal((await h.yard(['start', 'a', '--wait'], { stateDir: dir })).code, 0);
    const s = await h.httpOpen('GET', `${url}/logs/stream/a`, undefined, auth('k-api'));
    assert.equal(s.status, 200);
    assert.match(s.headers['content-type'], /^text\/plain/);
    let text = '';
    while (!/Application startup complete/.test(text)) {
        const c = await s.nextChunk(15000);
        assert.notEqual(c, null, `the stream ended: ${text}`);
        text += c;
    }
    // No history: nothing of the start-up, only what is written from now on.
    const live = await h.httpOpen('GET', `${url}/logs/stream/al?no-history`, undefined, auth('k-api'));
    assert.equal(live.status, 200);
    const chat = await h.httpPost(
        `${url}/v1/chat/completions`,
        { model: 'a', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 },
        auth('k-api')
    );
    assert.equal(chat.status, 200);
    let fresh = '';
    while (!/POST \/v1\/chat\/completions/.test(fresh)) {
        const c = await live.nextChunk(15000);
        assert.notEqual(c, null);
        fresh += c;
    }
    assert.doesNotMatch(fresh, /Application startup complete/);
    // The first stream got the same line, after its history.
    while (!/POST \/v1\/chat\/completions/.test(text)) text += await s.nextChunk(15000);
    s.abort();
    live.abort();

    const m = (await h.httpGet(`${url}/metrics`)).body;
    assert.match(m, /^# TYPE yard_request_duration_seconds summary$/m);
    assert.match(m, /^yard_request_duration_seconds_count\{model="a"\} 1$/m);
    assert.match(m, /^yard_request_duration_seconds_sum\{model="a"\} \d+\.\d{6}$/m);
    await d.stop();
});
