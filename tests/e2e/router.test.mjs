// The router's HTTP contract, with plain HTTP requests: /health, api_keys, model
// resolution (unknown, missing, aliases), /v1/models, /upstream/NAME/... raw
// passthrough, /metrics, upstream errors normalised to OpenAI's shape, a client
// that disconnects (mid-stream, or while queued), an engine that dies mid-stream,
// and the SSE comment lines a stream gets while its model loads.
//
// The /metrics series these tests expect are listed in one place, METRICS in
// lib/router-helpers.mjs:
//   yard_requests_total{model,status}   yard_queue_depth{model}
//   yard_load_wait_seconds{model}       yard_swaps_total
//   yard_instance_state{model,state}

import { test } from 'node:test';
import {
    assert,
    httpGet,
    httpPost,
    httpRequest,
    ps,
    waitState,
    waitFor,
    parseSSE,
} from './lib/harness.mjs';
import {
    METRICS,
    routerDaemon,
    mockCmd,
    mockText,
    chatBody,
    chatStreamText,
    assertOpenAIError,
    openStream,
    readStream,
    withTimeout,
    getMetrics,
    samples,
    sampleSum,
    rawConnect,
    rawRequest,
    engineLog,
} from './lib/router-helpers.mjs';

const KEY = 'sk-yard-e2e-router';
const FAST = '--load-time 200ms --tokens-per-sec 500';

/** The mock engine serving under `served` instead of the model's name. */
const servedAs = (flavor, served, extra) => mockCmd(flavor, extra).replace('--name ${NAME}', `--name ${served}`);

const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);

async function assertAllStopped(dir, what) {
    for (const e of await ps(dir)) assert.equal(e.state, 'stopped', `${what} started '${e.name}' (${e.state})`);
}

// ---------------------------------------------------------------- /health and auth

test('GET /health: 200 without a key, even with api_keys set', async () => {
    const y = await routerDaemon({
        apiKeys: [KEY],
        models: { m: { engine: 'vllm', cmd: mockCmd('vllm', FAST) } },
    });
    const r = await httpGet(`${y.base}/health`);
    assert.equal(r.status, 200, r.body);
    await y.d.stop();
});

test('api_keys: 401 in OpenAI shape without or with a wrong key; Bearer or x-api-key passes', async () => {
    const y = await routerDaemon({
        apiKeys: ['sk-first', KEY],
        models: { m: { engine: 'llamacpp', cmd: mockCmd('llamacpp', FAST) } },
    });
    const url = `${y.base}/v1/models`;

    const none = await httpGet(url);
    assert.equal(none.status, 401, none.body);
    assertOpenAIError(none.body, '401 without a key');

    for (const headers of [
        { authorization: 'Bearer sk-wrong' },
        { authorization: `Bearer ${KEY}x` },
        { authorization: `Bearer ${KEY.slice(0, -1)}` },
        { authorization: KEY }, // no scheme
        { authorization: 'Bearer ' },
    ]) {
        const r = await httpGet(url, { headers });
        assert.equal(r.status, 401, `${JSON.stringify(headers)} -> ${r.status} ${r.body}`);
        assertOpenAIError(r.body, `401 for ${JSON.stringify(headers)}`);
    }

    for (const k of ['sk-first', KEY]) {
        const r = await httpGet(url, { headers: { authorization: `Bearer ${k}` } });
        assert.equal(r.status, 200, `Bearer ${k} -> ${r.status} ${r.body}`);
    }
    // Anthropic clients send the key as x-api-key.
    const ax = await httpGet(url, { headers: { 'x-api-key': KEY } });
    assert.equal(ax.status, 200, `x-api-key -> ${ax.status} ${ax.body}`);

    // Inference and /upstream/ are behind the key too; refused requests start nothing.
    const chat = await httpPost(`${y.base}/v1/chat/completions`, chatBody('m'));
    assert.equal(chat.status, 401, chat.body);
    assertOpenAIError(chat.body, '401 on chat');
    const up = await httpGet(`${y.base}/upstream/m/health`);
    assert.equal(up.status, 401, up.body);
    assertOpenAIError(up.body, '401 on /upstream/');
    await assertAllStopped(y.dir, 'a refused request');

    assert.equal((await httpGet(`${y.base}/health`)).status, 200);
    await y.d.stop();
});

// ---------------------------------------------------------------- model resolution

test('unknown model: 404 whose message lists the known names; nothing starts', async () => {
    const y = await routerDaemon({
        models: {
            alpha: { engine: 'vllm', cmd: mockCmd('vllm', FAST) },
            beta: { engine: 'sglang', cmd: mockCmd('sglang', FAST), aliases: ['b'] },
        },
    });
    for (const path of ['/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/messages']) {
        const r = await httpPost(`${y.base}${path}`, { ...chatBody('gamma'), prompt: 'x', input: 'x' });
        assert.equal(r.status, 404, `${path}: ${r.status} ${r.body}`);
        const e = assertOpenAIError(r.body, `${path} unknown model`);
        assert.match(e.message, /gamma/, `message does not name the asked model: ${e.message}`);
        assert.match(e.message, /alpha/, `message does not list 'alpha': ${e.message}`);
        assert.match(e.message, /beta/, `message does not list 'beta': ${e.message}`);
    }
    await assertAllStopped(y.dir, 'an unknown model');
    await y.d.stop();
});

test('missing model, model not a string, body not JSON: 400', async () => {
    const y = await routerDaemon({ models: { m: { engine: 'vllm', cmd: mockCmd('vllm', FAST) } } });
    const url = `${y.base}/v1/chat/completions`;
    const cases = [
        ['no model', { messages: [{ role: 'user', content: 'hi' }] }],
        ['model is a number', { model: 5, messages: [] }],
        ['model is null', { model: null, messages: [] }],
        ['model nested only', { options: { model: 'm' }, messages: [] }],
        ['not JSON', 'this is not json'],
        ['a JSON array', '[{"model":"m"}]'],
        ['empty body', ''],
    ];
    for (const [what, body] of cases) {
        const r = await httpRequest('POST', url, body, { headers: { 'content-type': 'application/json' } });
        assert.equal(r.status, 400, `${what}: ${r.status} ${r.body}`);
        assertOpenAIError(r.body, what);
    }
    await assertAllStopped(y.dir, 'a bad request');
    await y.d.stop();
});

test('an alias is served by its model; the body the engine sees names the model', async () => {
    // The vLLM mock only answers requests for the name it serves (--name ${NAME}),
    // as vLLM does with --served-model-name: yard forwards a request made with an
    // alias under the model's own name.
    const y = await routerDaemon({
        models: {
            'qwen-7b': { engine: 'vllm', cmd: mockCmd('vllm', FAST), aliases: ['qwen', 'default'] },
            other: { engine: 'vllm', cmd: mockCmd('vllm', FAST) },
        },
    });
    const r = await httpPost(`${y.base}/v1/chat/completions`, chatBody('qwen', { max_tokens: 3 }));
    assert.equal(r.status, 200, r.body);
    const o = JSON.parse(r.body);
    assert.equal(o.choices[0].message.content, mockText(3));
    assert.equal(o.model, 'qwen-7b', 'the response carries what the engine said');
    assert.equal((await entry(y.dir, 'qwen-7b')).state, 'ready');
    assert.equal((await entry(y.dir, 'other')).state, 'stopped');

    // The other alias, streaming, reaches the same instance.
    const pid = (await entry(y.dir, 'qwen-7b')).pid;
    const s = await readStream(
        `${y.base}/v1/chat/completions`,
        chatBody('default', { stream: true, max_tokens: 4 })
    );
    assert.equal(s.status, 200, s.text);
    assert.equal(chatStreamText(s.events), mockText(4));
    assert.equal((await entry(y.dir, 'qwen-7b')).pid, pid);
    await y.d.stop();
});

test('GET /v1/models: every model and alias, OpenAI list shape, nothing started', async () => {
    const y = await routerDaemon({
        models: {
            one: { engine: 'vllm', cmd: mockCmd('vllm', FAST), aliases: ['uno'] },
            two: { engine: 'llamacpp', cmd: mockCmd('llamacpp', FAST) },
        },
    });
    const r = await httpGet(`${y.base}/v1/models`);
    assert.equal(r.status, 200, r.body);
    assert.match(String(r.headers['content-type']), /application\/json/);
    const o = JSON.parse(r.body);
    assert.equal(o.object, 'list');
    assert.ok(Array.isArray(o.data), r.body);
    const ids = o.data.map((m) => m.id);
    for (const id of ['one', 'uno', 'two']) assert.ok(ids.includes(id), `'${id}' missing: ${r.body}`);
    for (const m of o.data) assert.equal(m.object, 'model', JSON.stringify(m));
    await assertAllStopped(y.dir, 'GET /v1/models');
    await y.d.stop();
});

test('unknown path: 404 in OpenAI shape', async () => {
    const y = await routerDaemon({ models: { m: { engine: 'vllm', cmd: mockCmd('vllm', FAST) } } });
    const r = await httpGet(`${y.base}/no/such/path`);
    assert.equal(r.status, 404, r.body);
    assertOpenAIError(r.body, 'unknown path');
    await y.d.stop();
});

// ---------------------------------------------------------------- /upstream/NAME/...

test('/upstream/NAME/...: starts the model and answers with the engine\'s own response', async () => {
    const y = await routerDaemon({
        models: {
            lc: { engine: 'llamacpp', cmd: mockCmd('llamacpp', '--load-time 500ms'), aliases: ['lc-alias'] },
        },
    });
    // llama-server answers /health with 503 while loading: yard waits for ready first.
    const h = await httpGet(`${y.base}/upstream/lc/health`);
    assert.equal(h.status, 200, h.body);
    assert.deepEqual(JSON.parse(h.body), { status: 'ok' }, 'not the engine\'s /health body');
    assert.equal((await entry(y.dir, 'lc')).state, 'ready');

    // The engine's own /v1/models (llama-server's shape has "models"), untouched.
    const m = await httpGet(`${y.base}/upstream/lc/v1/models`);
    assert.equal(m.status, 200, m.body);
    const mo = JSON.parse(m.body);
    assert.ok(Array.isArray(mo.models), `not llama-server's answer: ${m.body}`);
    assert.equal(mo.data[0].id, 'lc');

    // Query strings pass through; so does an engine-only endpoint.
    const props = await httpGet(`${y.base}/upstream/lc/props?x=1`);
    assert.equal(props.status, 200, props.body);
    assert.equal(JSON.parse(props.body).model_alias, 'lc');

    const unknown = await httpGet(`${y.base}/upstream/nope/health`);
    assert.equal(unknown.status, 404, unknown.body);
    assertOpenAIError(unknown.body, '/upstream/ unknown model');
    await y.d.stop();
});

test('/upstream/ is raw: an engine error body comes back as the engine sent it', async () => {
    const y = await routerDaemon({
        models: { vx: { engine: 'vllm', cmd: servedAs('vllm', 'vx-served', FAST) } },
    });
    const r = await httpPost(`${y.base}/upstream/vx/v1/chat/completions`, chatBody('wrong-name'));
    assert.equal(r.status, 404, r.body);
    const o = JSON.parse(r.body);
    assert.equal(o.error.code, 404, `passthrough rewrote the engine's body: ${r.body}`);
    assert.equal(o.error.type, 'NotFoundError');
    await y.d.stop();
});

// ---------------------------------------------------------------- /metrics

test('GET /metrics: Prometheus text with requests, queue depth, load wait, swaps, instance states', async () => {
    const y = await routerDaemon({
        models: {
            m: { engine: 'vllm', cmd: mockCmd('vllm', FAST) },
            idle: { engine: 'sglang', cmd: mockCmd('sglang', FAST) },
        },
    });
    const ok = await httpPost(`${y.base}/v1/chat/completions`, chatBody('m'));
    assert.equal(ok.status, 200, ok.body);
    const bad = await httpPost(`${y.base}/v1/chat/completions`, chatBody('m', { max_tokens: 0 }));
    assert.equal(bad.status, 400, bad.body);

    const mt = await getMetrics(y.base);
    assert.equal(mt.status, 200, mt.text);
    assert.match(String(mt.headers['content-type']), /^text\/plain/);
    const names = new Set(mt.all.map((s) => s.name));
    for (const name of Object.values(METRICS)) {
        const present = [...names].some((n) => n === name || n.startsWith(`${name}_`));
        assert.ok(present, `no ${name} series in /metrics:\n${mt.text}`);
    }
    assert.ok(
        sampleSum(mt.all, METRICS.requests, { model: 'm', status: '200' }) >= 1,
        `${METRICS.requests}{model="m",status="200"} missing:\n${mt.text}`
    );
    assert.ok(
        sampleSum(mt.all, METRICS.requests, { model: 'm', status: '400' }) >= 1,
        `${METRICS.requests}{model="m",status="400"} missing:\n${mt.text}`
    );
    for (const model of ['m', 'idle']) {
        assert.equal(
            sampleSum(mt.all, METRICS.queueDepth, { model }),
            0,
            `${METRICS.queueDepth}{model="${model}"} should be 0:\n${mt.text}`
        );
    }
    const state = (model) =>
        samples(mt.all, METRICS.instanceState, { model }).filter((s) => s.value === 1).map((s) => s.labels.state);
    assert.deepEqual(state('m'), ['ready'], mt.text);
    assert.deepEqual(state('idle'), ['stopped'], mt.text);
    // The first request waited for the load: counted (labels, if any, are not checked).
    const waited = sampleSum(mt.all, `${METRICS.loadWait}_count`);
    assert.ok(waited >= 1, `${METRICS.loadWait}_count should count the wait for m:\n${mt.text}`);
    assert.equal(sampleSum(mt.all, METRICS.swaps) ?? 0, 0, 'no swap happened');
    await y.d.stop();
});

// ---------------------------------------------------------------- upstream errors, normalised

test('engine errors on /v1/* in OpenAI shape: vLLM/llama.cpp integer codes, SGLang flat object', async () => {
    const y = await routerDaemon({
        models: {
            // served under another name than the model's: the engine answers 404
            vx: { engine: 'vllm', cmd: servedAs('vllm', 'vx-served', FAST) },
            vv: { engine: 'vllm', cmd: mockCmd('vllm', FAST) },
            sg: { engine: 'sglang', cmd: mockCmd('sglang', FAST) },
            lc: { engine: 'llamacpp', cmd: mockCmd('llamacpp', FAST) },
        },
    });
    const post = (body) => httpPost(`${y.base}/v1/chat/completions`, body);

    // vLLM: {"error":{..., "code":404}} -> same status, code no longer an integer
    const nf = await post(chatBody('vx'));
    assert.equal(nf.status, 404, nf.body);
    const e1 = assertOpenAIError(nf.body, 'vLLM 404');
    assert.match(e1.message, /does not exist/, 'the engine\'s message is kept');

    // vLLM 400 (max_tokens out of range)
    const v400 = await post(chatBody('vv', { max_tokens: 0 }));
    assert.equal(v400.status, 400, v400.body);
    assert.match(assertOpenAIError(v400.body, 'vLLM 400').message, /max_tokens/);

    // SGLang: {"object":"error","message":...,"code":400} -> nested
    const s400 = await post(chatBody('sg', { max_tokens: 0 }));
    assert.equal(s400.status, 400, s400.body);
    assert.match(assertOpenAIError(s400.body, 'SGLang 400').message, /max_tokens/);
    assert.equal(JSON.parse(s400.body).object, undefined, `flat SGLang fields left at the top: ${s400.body}`);

    // llama.cpp: {"error":{"code":400,"message","type"}} (no param) -> all four keys.
    // llama-server takes max_tokens 0 (one token); a string is its 400.
    const l400 = await post(chatBody('lc', { max_tokens: 'x' }));
    assert.equal(l400.status, 400, l400.body);
    assert.match(assertOpenAIError(l400.body, 'llama.cpp 400').message, /max_tokens/);

    // A success body is not touched.
    const ok = await post(chatBody('sg', { max_tokens: 2 }));
    assert.equal(ok.status, 200, ok.body);
    assert.equal(JSON.parse(ok.body).choices[0].message.content, mockText(2));
    await y.d.stop();
});

// ---------------------------------------------------------------- clients that go away

test('client disconnect mid-stream: the engine sees the cancel at once', async () => {
    const y = await routerDaemon({
        models: { m: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms --tokens-per-sec 20') } },
    });
    const s = await openStream(`${y.base}/v1/chat/completions`, chatBody('m', { stream: true, max_tokens: 1000 }));
    assert.equal(s.status, 200);
    // Two tokens arrived: the stream flows through yard as it is generated.
    await s.waitFor((_, ev) => chatStreamText(ev).includes('tok1 '), 15000);
    s.abort();
    const line = await waitFor(
        async () => (await engineLog(y.dir, 'm')).match(/request cancelled: \S+ after (\d+) of (\d+) tokens/),
        { timeoutMs: 5000, intervalMs: 50, what: 'the mock engine to log the cancel' }
    );
    // 1000 tokens at 20/s take 50 s: the engine stopped long before.
    assert.equal(line[2], '1000');
    assert.ok(Number(line[1]) < 1000, line[0]);
    // The instance stays up for the next client.
    assert.equal((await entry(y.dir, 'm')).state, 'ready');
    const next = await httpPost(`${y.base}/v1/chat/completions`, chatBody('m', { max_tokens: 2 }));
    assert.equal(next.status, 200, next.body);
    await y.d.stop();
});

test('client disconnect while queued for a load: it leaves the queue', async () => {
    const y = await routerDaemon({
        models: { slow: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 30s'), startup_timeout: '120s' } },
    });
    const c = await rawConnect(y.port);
    c.send(rawRequest('POST', '/v1/chat/completions', chatBody('slow')));
    const depth = async () => sampleSum((await getMetrics(y.base)).all, METRICS.queueDepth, { model: 'slow' });
    await waitFor(async () => (await depth()) === 1, { timeoutMs: 5000, what: 'the request in the queue' });
    c.destroy();
    await waitFor(async () => (await depth()) === 0, { timeoutMs: 3000, what: 'the queue to empty' });
    // Still loading (30 s): the queue emptied because the client left, not because it was served.
    assert.equal((await entry(y.dir, 'slow')).state, 'starting');
    await y.d.stop();
});

// ---------------------------------------------------------------- an engine that dies

test('engine crash mid-stream: error event, instance failed, the next request restarts it', async () => {
    const y = await routerDaemon({
        models: {
            m: {
                engine: 'vllm',
                cmd: mockCmd('vllm', '--load-time 200ms --tokens-per-sec 100 --fail crash-midstream'),
            },
        },
    });
    // The mock dies after half of the tokens (10 of 20) of its first stream.
    const st = await openStream(`${y.base}/v1/chat/completions`, chatBody('m', { stream: true, max_tokens: 20 }));
    assert.equal(st.status, 200);
    await st.waitFor((_, ev) => chatStreamText(ev).includes('tok0 '), 15000);
    const before = await entry(y.dir, 'm');
    const end = await withTimeout(st.done, 20000);
    assert.ok(end, `the stream did not end after the engine died:\n${st.text()}`);
    const s = { text: end.text, events: parseSSE(end.text) };
    assert.equal(chatStreamText(s.events), mockText(10), 'the tokens before the crash arrive, in order');
    assert.ok(!s.events.some((e) => e.data === '[DONE]'), `a dead engine's stream ended with [DONE]:\n${s.text}`);
    const errors = s.events
        .map((e) => {
            try {
                return JSON.parse(e.data);
            } catch {
                return null;
            }
        })
        .filter((o) => o && o.error);
    assert.equal(errors.length, 1, `expected one error event:\n${s.text}`);
    assertOpenAIError(errors[0], 'the error event');
    // said as what happened: the engine died, not "closed the connection"
    assert.equal(errors[0].error.message, "the engine of model 'm' died in the middle of the answer");
    const last = s.events[s.events.length - 1];
    assert.ok(JSON.parse(last.data).error, `the error event is not the last one:\n${s.text}`);

    const failed = await waitState(y.dir, 'm', 'failed', 5000);
    assert.ok(failed.reason.length > 0, 'failed without a reason');
    assert.match(failed.reason, /crash|signal|kill|exit/i);

    // The next request starts it again and is served (a non-streaming one: the new
    // process would crash its first stream too).
    const r = await httpPost(`${y.base}/v1/chat/completions`, chatBody('m', { max_tokens: 3 }));
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).choices[0].message.content, mockText(3));
    const now = await entry(y.dir, 'm');
    assert.equal(now.state, 'ready');
    assert.notEqual(now.pid, before.pid);
    await y.d.stop();
});

// ---------------------------------------------------------------- streaming while loading

test('a stream waiting for a load gets ": loading NAME N%" comment lines before its first data frame', async () => {
    const y = await routerDaemon({
        models: { m: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 2s --tokens-per-sec 200') } },
    });
    const s = await openStream(`${y.base}/v1/chat/completions`, chatBody('m', { stream: true, max_tokens: 5 }));
    // The head comes before the model is ready: a person with curl sees progress.
    assert.equal(s.status, 200);
    assert.match(String(s.headers['content-type']), /^text\/event-stream/);
    await s.waitFor((text) => /^: ?loading m\b/m.test(text), 5000);
    const done = await s.done;
    assert.ok(done.complete, `stream did not end cleanly:\n${done.text}`);
    const text = done.text.replace(/\r\n/g, '\n');
    const firstData = text.search(/^data:/m);
    assert.ok(firstData > 0, text);
    const before = text.slice(0, firstData);
    const comments = before.split('\n').filter((l) => l.startsWith(':'));
    assert.ok(comments.length >= 1, `no comment lines before the first data frame:\n${text}`);
    for (const c of comments) assert.match(c, /^: ?loading m\b/, `unexpected comment: ${c}`);
    // vLLM logs its checkpoint shards' progress: yard passes the percent on.
    assert.ok(
        comments.some((c) => /\b\d{1,3}%/.test(c)),
        `no percent in the loading comments:\n${comments.join('\n')}`
    );
    // Comments only before the data: then a normal stream.
    assert.equal(chatStreamText(parseSSE(text)), mockText(5));
    assert.ok(text.trimEnd().endsWith('data: [DONE]'), text);
    await y.d.stop();
});
