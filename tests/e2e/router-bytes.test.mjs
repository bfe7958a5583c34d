// Bytes from outside on their way into the router's JSON: a request path, an
// /upstream model name and an engine's error body that are not valid UTF-8 (or
// are cut inside a character) are answered in OpenAI's shape with U+FFFD in
// their place, and the daemon stays up. And one meaning for a request body: a
// top-level key the router reads ("model", "stream") that appears twice is
// refused with 400, because yard would route on one member and the engine,
// keeping the last, obey another.

import { test } from 'node:test';
import { assert, httpGet, httpPost, parseSSE } from './lib/harness.mjs';
import {
    routerDaemon,
    mockCmd,
    chatBody,
    assertOpenAIError,
    rawOne,
    readStream,
} from './lib/router-helpers.mjs';

const KEY = 'sk-yard-e2e-bytes';
const FAST = '--load-time 200ms --tokens-per-sec 500';
const FFFD = Buffer.from([0xef, 0xbf, 0xbd]);

/** The body of a response from rawOne as the bytes that came (not decoded). */
const bodyBytes = (r) => r.raw.subarray(r.raw.indexOf('\r\n\r\n') + 4);

/** Asserts the daemon still answers /health. */
async function assertAlive(base, what) {
    const h = await httpGet(`${base}/health`);
    assert.equal(h.status, 200, `${what}: /health after it: ${h.status}`);
}

/** Asserts body (bytes) is valid UTF-8 JSON in OpenAI's error shape; returns the error object. */
function assertUtf8Error(bytes, what) {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return assertOpenAIError(text, what);
}

for (const keys of [undefined, [KEY]]) {
    test(`GET /\\xff: 404 in OpenAI's shape with U+FFFD for the byte, ${keys ? 'with' : 'without'} api_keys`, async () => {
        const y = await routerDaemon({
            apiKeys: keys,
            models: { m: { engine: 'vllm', cmd: mockCmd('vllm', FAST) } },
        });
        const head = Buffer.concat([
            Buffer.from('GET /'),
            Buffer.from([0xff]),
            Buffer.from(' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
        ]);
        const r = await rawOne(y.port, head);
        assert.equal(r.status, 404, `GET /\\xff: ${r.status}`);
        const bytes = bodyBytes(r);
        const e = assertUtf8Error(bytes, 'GET /\\xff');
        assert.equal(e.code, 'unknown_endpoint');
        assert.ok(bytes.includes(Buffer.concat([Buffer.from('GET /'), FFFD])), `no U+FFFD: ${e.message}`);
        await assertAlive(y.base, 'GET /\\xff');
    });
}

test('/upstream/NAME with a name that is not UTF-8 (raw or %ff): 4xx in OpenAI\'s shape, daemon up', async () => {
    const y = await routerDaemon({ models: { m: { engine: 'vllm', cmd: mockCmd('vllm', FAST) } } });
    for (const name of [Buffer.from([0xff, 0x41]), Buffer.from('%ff%c3'), Buffer.from([0xe2, 0x82])]) {
        const head = Buffer.concat([
            Buffer.from('GET /upstream/'),
            name,
            Buffer.from('/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
        ]);
        const r = await rawOne(y.port, head);
        const what = `/upstream/${name.toString('latin1')}/health`;
        assert.ok(r.status === 400 || r.status === 404, `${what}: ${r.status}`);
        assertUtf8Error(bodyBytes(r), what);
        await assertAlive(y.base, what);
    }
});

test('an engine 500 whose text body is cut inside a character: valid JSON, whole characters, daemon up', async () => {
    const y = await routerDaemon({
        models: { m: { engine: 'vllm', cmd: mockCmd('vllm', `${FAST} --fail error-text`) } },
    });
    const url = `${y.base}/v1/chat/completions`;

    // The first request waits for the load as a stream: the error travels as the stream's last event.
    const s = await readStream(url, chatBody('m', { stream: true }));
    const ev = parseSSE(s.text).filter((e) => e.data !== undefined);
    assert.ok(ev.length > 0, `no error event in the stream: ${s.text}`);
    const se = assertOpenAIError(ev[ev.length - 1].data, 'the stream\'s error event');
    assert.match(se.message, /^x€+$/, `message: ${se.message}`);

    // Once ready, a whole answer.
    const r = await httpPost(url, chatBody('m'));
    assert.equal(r.status, 500, r.body);
    const e = assertOpenAIError(r.body, 'the relayed 500');
    // 'x' and the € that fit in the quoted 500 bytes: no half character, no U+FFFD.
    assert.match(e.message, /^x€+$/, `message: ${e.message}`);
    assert.ok(Buffer.byteLength(e.message) <= 500, `message of ${Buffer.byteLength(e.message)} bytes`);
    assert.equal(Buffer.byteLength(e.message), 499);
    await assertAlive(y.base, 'the cut error body');
});

test('a body with "model" or "stream" twice at its top level: 400 naming the key; nested repeats pass', async () => {
    const y = await routerDaemon({ models: { m: { engine: 'vllm', cmd: mockCmd('vllm', FAST) } } });
    const url = `${y.base}/v1/chat/completions`;
    const msgs = '"messages":[{"role":"user","content":"hi"}],"max_tokens":2';
    const cases = [
        ['model', `{"model":"m","model":"other",${msgs}}`],
        ['model', `{"model":"m",${msgs},"mod\\u0065l":"m"}`],
        ['stream', `{"model":"m","stream":false,${msgs},"stream":true}`],
    ];
    for (const [key, body] of cases) {
        const r = await httpPost(url, body, { headers: { 'content-type': 'application/json' } });
        assert.equal(r.status, 400, `${body}: ${r.status} ${r.body}`);
        const e = assertOpenAIError(r.body, body);
        assert.equal(e.type, 'invalid_request_error');
        assert.equal(e.code, 'duplicate_key');
        assert.ok(e.message.includes(`'${key}'`), `message does not name '${key}': ${e.message}`);
    }
    // Repeats inside nested objects are the engine's to judge; this one routes.
    const nested = `{"model":"m",${msgs},"metadata":{"k":1,"k":2}}`;
    const ok = await httpPost(url, nested, { headers: { 'content-type': 'application/json' } });
    assert.equal(ok.status, 200, `${nested}: ${ok.status} ${ok.body}`);
});
