// Smoke test of the harness and the mock engine alone (no daemon): each flavor
// shows its real engine's readiness behaviour while loading, then serves a
// streaming chat completion.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
    MOCK_ENGINE_BIN,
    fatal,
    freePort,
    httpPost,
    httpProbe,
    parseSSE,
    pidAlive,
    sanitizerReport,
    startMockEngine,
    waitFor,
} from './lib/harness.mjs';
import fs from 'node:fs';

const LOAD_MS = 300;
const MAX_TOKENS = 8;

// What /health answers while the engine loads, in order, then 200.
//   vllm:     the API server does not listen until the model is loaded
//   llamacpp: llama-server listens at once and answers 503 while loading
//   sglang:   not listening while loading, then 503 during warmup, then 200
const EXPECTED = {
    vllm: [['refused', 200]],
    llamacpp: [[503, 200], ['refused', 503, 200]], // a refusal before bind() is allowed
    sglang: [['refused', 503, 200]],
};

/** Polls GET /health until 200; returns {phases, readyAfterMs}. phases has
 *  consecutive duplicates collapsed: 'refused' or the HTTP status. */
async function watchReadiness(url, startedAt, engine) {
    const phases = [];
    let readyAfterMs = null;
    await waitFor(
        async () => {
            if (!pidAlive(engine.pid)) {
                throw fatal(`mock engine exited before ready:\n${engine.logText()}`);
            }
            const r = await httpProbe(url, { timeoutMs: 1000 });
            const phase = r.error === 'ECONNREFUSED' ? 'refused' : r.error ? r.error : r.status;
            if (phases[phases.length - 1] !== phase) phases.push(phase);
            if (phase === 200) {
                readyAfterMs = Date.now() - startedAt;
                return true;
            }
            return false;
        },
        { timeoutMs: 10000, intervalMs: 5, what: `${url} to answer 200` }
    ).catch((err) => {
        throw new Error(`${err.message}; phases so far: ${JSON.stringify(phases)}`);
    });
    return { phases, readyAfterMs };
}

describe('mock engine', () => {
    test('binary exists', () => {
        assert.ok(fs.existsSync(MOCK_ENGINE_BIN), `${MOCK_ENGINE_BIN} not built`);
    });

    for (const flavor of Object.keys(EXPECTED)) {
        test(`${flavor}: readiness while loading, then a streaming chat`, async () => {
            const port = await freePort();
            const name = `smoke-${flavor}`;
            const base = `http://127.0.0.1:${port}`;
            const startedAt = Date.now();
            const engine = startMockEngine({ flavor, port, name, loadTime: `${LOAD_MS}ms` });

            const { phases, readyAfterMs } = await watchReadiness(`${base}/health`, startedAt, engine);
            assert.ok(
                EXPECTED[flavor].some((seq) => JSON.stringify(seq) === JSON.stringify(phases)),
                `${flavor} /health went ${JSON.stringify(phases)}; want one of ` +
                    `${JSON.stringify(EXPECTED[flavor])}\n${engine.logText()}`
            );
            assert.ok(
                readyAfterMs >= LOAD_MS - 10,
                `${flavor} ready after ${readyAfterMs} ms, before its --load-time ${LOAD_MS}ms`
            );

            const res = await httpPost(`${base}/v1/chat/completions`, {
                model: name,
                stream: true,
                max_tokens: MAX_TOKENS,
                messages: [{ role: 'user', content: 'count to eight' }],
            });
            assert.equal(res.status, 200, `chat answered ${res.status}: ${res.body}`);
            assert.match(String(res.headers['content-type']), /^text\/event-stream/);

            const events = parseSSE(res.body);
            assert.ok(events.length >= 2, `too few SSE frames: ${res.body}`);
            const last = events[events.length - 1];
            assert.equal(last.data, '[DONE]', `stream does not end with [DONE]: ${res.body}`);
            const chunks = events.slice(0, -1).map((e, i) => {
                assert.notEqual(e.data, '[DONE]', `[DONE] before the end, frame ${i}`);
                return JSON.parse(e.data);
            });
            const ids = new Set(chunks.map((c) => c.id));
            assert.equal(ids.size, 1, `chunks of one stream carry different ids: ${[...ids]}`);
            let text = '';
            let finish = null;
            chunks.forEach((c, i) => {
                assert.equal(c.object, 'chat.completion.chunk', `frame ${i}: ${JSON.stringify(c)}`);
                const choice = c.choices && c.choices[0];
                if (!choice) return; // a usage-only chunk
                assert.equal(finish, null, `frame ${i} after finish_reason ${finish}`);
                text += choice.delta?.content ?? '';
                finish = choice.finish_reason ?? null;
            });
            // The mock generates "tok0 tok1 ...": every token, in order, max_tokens of them.
            const want = Array.from({ length: MAX_TOKENS }, (_, i) => `tok${i}`);
            assert.deepEqual(text.trim().split(/\s+/), want, `tokens out of order or lost: ${text}`);
            assert.equal(finish, 'length', `finish_reason ${finish} after max_tokens tokens`);

            const exit = await engine.stop(5000);
            assert.ok(exit && !exit.killed, `${flavor} mock engine did not exit on SIGTERM`);
            const report = sanitizerReport(engine.logText());
            assert.equal(report, null, `sanitizer report from the mock engine:\n${report}`);
        });
    }
});
