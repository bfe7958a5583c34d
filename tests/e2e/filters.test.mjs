// Request filters (models.M.filters): what the engine receives, read back from an
// engine that echoes the body it got:
//   - strip_params removes top-level members, set_params sets them, set_params_by_id
//     sets more for one name, and its names are aliases ("m:high" variants of one engine)
//   - a model without filters gets the client's bytes untouched
//   - 'model' and 'stream' stay yard's; the config refuses filters on them
//   - the filters follow a reload without restarting the engine
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as h from './lib/harness.mjs';

const { assert } = h;
const ECHO = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tools', 'echo_engine.py');

function configText(port, filters) {
    return (
        `listen: 127.0.0.1:${port}\n` +
        `models:\n` +
        `  m:\n` +
        `    engine: generic\n` +
        `    cmd: python3 ${ECHO} --port \${PORT}\n` +
        filters +
        `  plain:\n` +
        `    engine: generic\n` +
        `    cmd: python3 ${ECHO} --port \${PORT}\n`
    );
}

const FILTERS =
    `    filters:\n` +
    `      strip_params: [ top_k, seed ]\n` +
    `      set_params: { temperature: 0.7, top_p: 0.9, stop: [ "END" ] }\n` +
    `      set_params_by_id:\n` +
    `        "m:high": { chat_template_kwargs: { reasoning_effort: high }, temperature: 1.0 }\n` +
    `        "m": { chat_template_kwargs: { reasoning_effort: medium } }\n`;

async function echo(port, body, raw) {
    const r = await h.httpPost(`http://127.0.0.1:${port}/v1/chat/completions`, raw ?? body);
    assert.equal(r.status, 200, r.body);
    return JSON.parse(r.body).choices[0].message.content;
}

test('strip, set and set-by-name reach the engine; names of set_params_by_id are aliases', async () => {
    const dir = h.tmpdir();
    const port = await h.freePort();
    const file = h.writeConfig(dir, configText(port, FILTERS));
    const d = await h.startDaemon({ config: file, stateDir: dir });
    const ask = {
        model: 'm',
        messages: [{ role: 'user', content: 'hi' }],
        top_k: 5,
        seed: 1,
        temperature: 0.1,
        max_tokens: 3,
    };
    let got = JSON.parse(await echo(port, ask));
    assert.equal(got.model, 'm');
    assert.equal(got.top_k, undefined);
    assert.equal(got.seed, undefined);
    assert.equal(got.temperature, 0.7);
    assert.equal(got.top_p, 0.9);
    assert.deepEqual(got.stop, ['END']);
    assert.deepEqual(got.chat_template_kwargs, { reasoning_effort: 'medium' });
    assert.deepEqual(got.messages, ask.messages);
    assert.equal(got.max_tokens, 3);

    // The variant: an alias of the same engine, its own set after set_params.
    got = JSON.parse(await echo(port, { ...ask, model: 'm:high' }));
    assert.equal(got.model, 'm', 'the engine hears the model, not the variant');
    assert.equal(got.temperature, 1.0);
    assert.deepEqual(got.chat_template_kwargs, { reasoning_effort: 'high' });
    const engines = (await h.ps(dir)).filter((e) => e.name === 'm');
    assert.equal(engines.length, 1, 'a variant started another engine');
    const models = JSON.parse((await h.httpGet(`http://127.0.0.1:${port}/v1/models`)).body).data;
    assert.ok(models.some((x) => x.id === 'm:high' && x.alias_of === 'm'));

    // Without filters, the bytes are the client's.
    const raw = '{"model":"plain", "messages":[{"role":"user","content":"hi"}],  "top_k":5, "x":1.10}';
    assert.equal(await echo(port, null, raw), raw);

    // A stream keeps streaming (stream is never touched).
    const s = await h.httpPost(`http://127.0.0.1:${port}/v1/chat/completions`, { ...ask, stream: true });
    assert.equal(s.status, 200);

    // A reload changes the filters at once, without restarting the engine.
    const pid = engines[0].pid;
    fs.writeFileSync(file, configText(port, `    filters: { set_params: { temperature: 0.2 } }\n`));
    d.kill('SIGHUP');
    await h.waitFor(
        async () => JSON.parse(await echo(port, ask)).temperature === 0.2,
        { what: 'the new filters' },
    );
    got = JSON.parse(await echo(port, ask));
    assert.equal(got.top_k, 5, 'strip_params of the old config still applied');
    assert.equal((await h.ps(dir)).find((e) => e.name === 'm').pid, pid);
    // The variant went with the old config.
    const gone = await h.httpPost(`http://127.0.0.1:${port}/v1/chat/completions`, { ...ask, model: 'm:high' });
    assert.equal(gone.status, 404);
});

test('the config refuses filters on model or stream, and names that collide', async () => {
    const dir = h.tmpdir();
    const port = await h.freePort();
    const bad = (filters) => h.writeConfig(dir, configText(port, filters), `c${Math.random()}.yaml`);
    let r = await h.yard(['check', '-c', bad(`    filters: { strip_params: [ model ] }\n`)]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /models\.m\.filters\.strip_params: 'model' is yard's to route by; a filter may not remove it/);
    r = await h.yard(['check', '-c', bad(`    filters: { set_params: { stream: false } }\n`)]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /models\.m\.filters\.set_params: 'stream' is yard's to route by; a filter may not set it/);
    r = await h.yard(['check', '-c', bad(`    filters: { set_params_by_id: { plain: { a: 1 } } }\n`)]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /models\.m\.filters\.set_params_by_id: 'plain' is the name of model 'plain'/);
    r = await h.yard(['check', '-c', bad(`    filters: { set_param: {} }\n`)]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /did you mean 'set_params'/);
});
