// The official clients pointed at yard: the `openai` npm package (chat, streaming
// chat, completions, embeddings, models.list) and `@anthropic-ai/sdk` (messages,
// streaming messages). Every call names a model that is not loaded yet, so yard
// starts it on demand and holds the request until it is ready.
//
// The same checks first run against the mock engine alone (no daemon): when those
// fail, the client packages or the mock engine are at fault, not yard.

import { describe, test } from 'node:test';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { assert, freePort, startMockEngine, httpProbe, waitFor, ps, pidAlive, fatal } from './lib/harness.mjs';
import { routerDaemon, mockCmd, mockText } from './lib/router-helpers.mjs';

const API_KEY = 'sk-yard-e2e-clients';
const LOAD = '--load-time 300ms --tokens-per-sec 400';

const openai = (baseURL, apiKey = 'none') => new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
const anthropic = (baseURL, apiKey = 'none') => new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });

// ---------------------------------------------------------------- the checks
// Each takes the base URL without /v1 (the OpenAI client gets BASE/v1, the
// Anthropic client BASE: it appends /v1/messages itself) and the model to ask for.

async function checkChat(base, model, apiKey) {
    const r = await openai(`${base}/v1`, apiKey).chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'say something' }],
        max_tokens: 6,
    });
    const content = r.choices?.[0]?.message?.content;
    assert.ok(typeof content === 'string' && content.length > 0, `no content: ${JSON.stringify(r)}`);
    assert.equal(content, mockText(6));
    assert.equal(r.model, model);
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage?.completion_tokens, 6);
}

async function checkStreamingChat(base, model) {
    const stream = await openai(`${base}/v1`).chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'count' }],
        max_tokens: 12,
        stream: true,
    });
    let text = '';
    let chunks = 0;
    let finish = null;
    const ids = new Set();
    for await (const chunk of stream) {
        chunks++;
        ids.add(chunk.id);
        assert.equal(chunk.model, model);
        const choice = chunk.choices?.[0];
        if (!choice) continue;
        text += choice.delta?.content ?? '';
        if (choice.finish_reason) finish = choice.finish_reason;
    }
    assert.ok(chunks >= 12, `only ${chunks} chunks for 12 tokens`);
    assert.equal(ids.size, 1, `one stream, several ids: ${[...ids]}`);
    // Every token, once, in order.
    assert.equal(text, mockText(12));
    assert.equal(finish, 'length');
}

async function checkCompletion(base, model) {
    const r = await openai(`${base}/v1`).completions.create({ model, prompt: 'Once upon a time', max_tokens: 5 });
    assert.equal(r.choices?.[0]?.text, mockText(5), JSON.stringify(r));
    assert.equal(r.model, model);
}

async function checkEmbedding(base, model) {
    const r = await openai(`${base}/v1`).embeddings.create({ model, input: 'the quick brown fox' });
    assert.equal(r.data.length, 1, JSON.stringify(r));
    const v = r.data[0].embedding;
    assert.ok(Array.isArray(v) && v.length > 0, `embedding: ${JSON.stringify(v)}`);
    assert.ok(v.every((x) => typeof x === 'number' && Number.isFinite(x)));
    assert.equal(r.model, model);
}

async function checkModelsList(base, want, apiKey) {
    const ids = [];
    for await (const m of await openai(`${base}/v1`, apiKey).models.list()) ids.push(m.id);
    for (const id of want) assert.ok(ids.includes(id), `models.list lacks '${id}': ${JSON.stringify(ids)}`);
    return ids;
}

async function checkMessages(base, model, apiKey) {
    const r = await anthropic(base, apiKey).messages.create({
        model,
        max_tokens: 7,
        messages: [{ role: 'user', content: 'hello' }],
    });
    assert.equal(r.type, 'message', JSON.stringify(r));
    assert.equal(r.role, 'assistant');
    assert.equal(r.content?.[0]?.type, 'text');
    assert.equal(r.content[0].text, mockText(7));
    assert.equal(r.stop_reason, 'max_tokens');
    assert.equal(r.model, model);
}

async function checkMessagesStream(base, model) {
    const stream = anthropic(base).messages.stream({
        model,
        max_tokens: 9,
        messages: [{ role: 'user', content: 'hello' }],
    });
    let text = '';
    let deltas = 0;
    stream.on('text', (t) => {
        text += t;
        deltas++;
    });
    const final = await stream.finalMessage();
    assert.equal(text, mockText(9));
    assert.equal(deltas, 9, `expected one text delta per token, got ${deltas}`);
    assert.equal(final.content?.[0]?.text, mockText(9));
    assert.equal(final.stop_reason, 'max_tokens');
}

async function checkMessagesCreateStream(base, model) {
    const stream = await anthropic(base).messages.create({
        model,
        max_tokens: 5,
        stream: true,
        messages: [{ role: 'user', content: 'hello' }],
    });
    const types = [];
    let text = '';
    for await (const ev of stream) {
        types.push(ev.type);
        if (ev.type === 'content_block_delta' && ev.delta?.type === 'text_delta') text += ev.delta.text;
    }
    assert.equal(text, mockText(5));
    assert.equal(types[0], 'message_start', JSON.stringify(types));
    assert.equal(types[types.length - 1], 'message_stop', JSON.stringify(types));
}

// ---------------------------------------------------------------- baseline: the mock engine alone

describe('baseline: the clients against the mock engine alone', () => {
    const engines = {};
    const engineFor = async (flavor) => {
        if (engines[flavor]) return engines[flavor];
        const port = await freePort();
        const name = `direct-${flavor}`;
        const e = startMockEngine({ flavor, port, name, loadTime: '100ms', args: ['--tokens-per-sec', '400'] });
        const base = `http://127.0.0.1:${port}`;
        await waitFor(
            async () => {
                if (!pidAlive(e.pid)) throw fatal(`mock engine exited:\n${e.logText()}`);
                return (await httpProbe(`${base}/health`)).status === 200;
            },
            { timeoutMs: 10000, what: `${flavor} mock engine ready` }
        );
        engines[flavor] = { base, name, e };
        return engines[flavor];
    };

    test('openai chat, streaming chat, completions, embeddings, models.list', async () => {
        const v = await engineFor('vllm');
        const s = await engineFor('sglang');
        const l = await engineFor('llamacpp');
        await checkChat(v.base, v.name);
        await checkStreamingChat(s.base, s.name);
        await checkStreamingChat(v.base, v.name);
        await checkCompletion(l.base, l.name);
        await checkEmbedding(v.base, v.name);
        await checkModelsList(v.base, [v.name]);
    });

    test('anthropic messages, messages.stream, create({stream: true})', async () => {
        const v = await engineFor('vllm');
        const s = await engineFor('sglang');
        await checkMessages(v.base, v.name);
        await checkMessagesStream(s.base, s.name);
        await checkMessagesCreateStream(v.base, v.name);
        for (const { e } of Object.values(engines)) await e.stop(5000);
    });
});

// ---------------------------------------------------------------- through yard

/** A daemon with one model `name` of `flavor`, not started. */
async function oneModel(name, flavor) {
    const y = await routerDaemon({ models: { [name]: { engine: flavor, cmd: mockCmd(flavor, LOAD) } } });
    await assertState(y.dir, name, 'stopped');
    return y;
}

async function assertState(dir, name, state) {
    const e = (await ps(dir)).find((x) => x.name === name);
    assert.ok(e, `'${name}' not in yard ps`);
    assert.equal(e.state, state, `'${name}' is ${e.state}, expected ${state}`);
}

describe('through yard, each model started on demand', () => {
    test('openai: chat.completions.create', async () => {
        const y = await oneModel('chat-v', 'vllm');
        await checkChat(y.base, 'chat-v');
        await assertState(y.dir, 'chat-v', 'ready');
        await y.d.stop();
    });

    test('openai: streaming chat, tokens in order', async () => {
        const y = await oneModel('stream-s', 'sglang');
        await checkStreamingChat(y.base, 'stream-s');
        await assertState(y.dir, 'stream-s', 'ready');
        await y.d.stop();
    });

    test('openai: completions.create', async () => {
        const y = await oneModel('cmpl-l', 'llamacpp');
        await checkCompletion(y.base, 'cmpl-l');
        await y.d.stop();
    });

    test('openai: embeddings.create', async () => {
        const y = await oneModel('emb-v', 'vllm');
        await checkEmbedding(y.base, 'emb-v');
        await y.d.stop();
    });

    test('openai: models.list has every model and alias, and loads nothing', async () => {
        const y = await routerDaemon({
            models: {
                alpha: { engine: 'vllm', cmd: mockCmd('vllm', LOAD), aliases: ['a1', 'a2'] },
                beta: { engine: 'sglang', cmd: mockCmd('sglang', LOAD), aliases: ['b1'] },
                gamma: { engine: 'llamacpp', cmd: mockCmd('llamacpp', LOAD) },
            },
        });
        await checkModelsList(y.base, ['alpha', 'a1', 'a2', 'beta', 'b1', 'gamma']);
        for (const e of await ps(y.dir)) assert.equal(e.state, 'stopped', `listing started '${e.name}'`);
        await y.d.stop();
    });

    test('anthropic: messages.create', async () => {
        const y = await oneModel('msg-v', 'vllm');
        await checkMessages(y.base, 'msg-v');
        await assertState(y.dir, 'msg-v', 'ready');
        await y.d.stop();
    });

    test('anthropic: messages.stream', async () => {
        const y = await oneModel('msgs-s', 'sglang');
        await checkMessagesStream(y.base, 'msgs-s');
        await y.d.stop();
    });

    test('anthropic: messages.create({stream: true})', async () => {
        const y = await oneModel('msgs-v', 'vllm');
        await checkMessagesCreateStream(y.base, 'msgs-v');
        await y.d.stop();
    });

    test('api_keys: both clients with the key work; a wrong key is refused', async () => {
        const y = await routerDaemon({
            apiKeys: ['sk-other', API_KEY],
            models: { keyed: { engine: 'vllm', cmd: mockCmd('vllm', LOAD), aliases: ['k'] } },
        });
        await checkModelsList(y.base, ['keyed', 'k'], API_KEY);
        await checkChat(y.base, 'keyed', API_KEY);
        // The Anthropic client sends its key as x-api-key.
        await checkMessages(y.base, 'keyed', API_KEY);
        await assert.rejects(
            openai(`${y.base}/v1`, 'sk-wrong').chat.completions.create({
                model: 'keyed',
                messages: [{ role: 'user', content: 'hi' }],
            }),
            (err) => err.status === 401
        );
        await assert.rejects(
            anthropic(y.base, 'sk-wrong').messages.create({
                model: 'keyed',
                max_tokens: 2,
                messages: [{ role: 'user', content: 'hi' }],
            }),
            (err) => err.status === 401
        );
        await y.d.stop();
    });

    test('an unknown model: the client raises NotFoundError (404)', async () => {
        const y = await oneModel('known', 'vllm');
        await assert.rejects(
            openai(`${y.base}/v1`).chat.completions.create({
                model: 'not-configured',
                messages: [{ role: 'user', content: 'hi' }],
            }),
            (err) => {
                assert.equal(err.status, 404);
                assert.ok(err instanceof OpenAI.NotFoundError, err.constructor.name);
                assert.match(err.message, /known/);
                return true;
            }
        );
        await y.d.stop();
    });
});
