// What /upstream/NAME/... lets through, and whether an engine's own port is a
// way around yard. Against a real uvicorn + FastAPI app (the stack vLLM and
// SGLang serve on; fixtures/uvicorn_engine.py) that records every path it
// receives:
//  - encoded, dot-segment and double-slash spellings of the reserved sleep and
//    wake endpoints are refused and never reach the engine; bad escapes are 400;
//    ordinary paths are forwarded in their normalised form, the query as sent;
//  - the engine's status line and end-to-end headers come back (Location,
//    custom headers), hop-by-hop headers do not;
//  - the engine runs with its own API key: a request to its port without the
//    key is refused, requests through yard work, the client's yard key never
//    reaches the engine, and all of that holds after a --keep-engines restart.
// Plus the mock engine's flavors, for the key passed by flag (SGLang) and by
// environment (llama-server).

import { test } from 'node:test';
import fs from 'node:fs';
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import {
    assert,
    tmpdir,
    freePort,
    writeConfig,
    startDaemon,
    yard,
    ps,
    waitState,
    waitFor,
    pidAlive,
    YARD_SRC_DIR,
} from './lib/harness.mjs';
import { mockCmd, routerDaemon, tcpAccepts } from './lib/router-helpers.mjs';

const PYTHON = '/usr/bin/python3'; // Debian's python3-uvicorn / python3-fastapi
const APP = path.join(YARD_SRC_DIR, 'tests/e2e/fixtures/uvicorn_engine.py');
const KEY = 'sk-yard-e2e-trust';

const haveUvicorn = spawnSync(PYTHON, ['-c', 'import uvicorn, fastapi'], { stdio: 'ignore' }).status === 0;
const skipNoUvicorn = haveUvicorn ? false : 'needs python3-uvicorn and python3-fastapi (scripts/deps.sh)';

/**
 * One request with the target sent byte for byte (no URL parsing, which would
 * resolve "..", "%2e" and "//" before yard saw them). Resolves
 * {status, statusMessage, headers, rawHeaders, body}.
 */
function request(port, method, target, { headers = {}, body } = {}) {
    return new Promise((resolve, reject) => {
        const h = { ...headers };
        if (body !== undefined) {
            h['content-type'] ??= 'application/json';
            h['content-length'] = Buffer.byteLength(body);
        }
        const req = http.request(
            { host: '127.0.0.1', port, method, path: target, headers: h, agent: false },
            (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('end', () =>
                    resolve({
                        status: res.statusCode,
                        statusMessage: res.statusMessage,
                        headers: res.headers,
                        rawHeaders: res.rawHeaders,
                        body: Buffer.concat(chunks).toString('utf8'),
                    })
                );
                res.on('error', reject);
            }
        );
        req.setTimeout(15000, () => req.destroy(new Error(`${method} ${target}: timed out`)));
        req.on('error', reject);
        req.end(body);
    });
}

const auth = { authorization: `Bearer ${KEY}` };

function received(recPath) {
    let text = '';
    try {
        text = fs.readFileSync(recPath, 'utf8');
    } catch {
        return [];
    }
    return text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));
}

/** A daemon with api_keys and one model `u` running the uvicorn app as a vLLM engine. */
async function uvicornDaemon({ dir = tmpdir(), args = [], port, startPort } = {}) {
    port ??= await freePort();
    startPort ??= 20000 + Math.floor(Math.random() * 20000);
    const rec = path.join(dir, 'received.jsonl');
    const cmd = `${PYTHON} ${APP} --port \${PORT} --name \${NAME} --record ${rec}`;
    const yaml =
        `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n` +
        `api_keys: ["${KEY}"]\n` +
        `defaults: {stop_timeout: 5s, startup_timeout: 60s}\n` +
        `models:\n  u: ${JSON.stringify({ engine: 'vllm', cmd })}\n`;
    const config = writeConfig(dir, yaml);
    const d = await startDaemon({ config, stateDir: dir, args });
    await waitFor(() => tcpAccepts(port), { timeoutMs: 5000, what: 'yard listening' });
    return { dir, port, startPort, d, rec, config };
}

async function startAndWait(dir, model) {
    const r = await yard(['start', model, '--wait'], { stateDir: dir, timeoutMs: 90000 });
    assert.equal(r.code, 0, `yard start ${model} --wait: ${r.stdout}${r.stderr}`);
    return (await ps(dir)).find((e) => e.name === model);
}

const RESERVED_SPELLINGS = [
    ['POST', '/upstream/u/%73leep'],
    ['POST', '/upstream/u/%73leep?level=1'],
    ['POST', '/upstream/u/wake%5Fup'],
    ['POST', '/upstream/u/wake%5fup'],
    ['GET', '/upstream/u/%69s_sleeping'],
    ['POST', '/upstream/u/v1/../sleep'],
    ['POST', '/upstream/u/v1/%2e%2e/sleep'],
    ['POST', '/upstream/u/%2E%2E/%2e%2e/sleep'],
    ['POST', '/upstream/u/./sleep'],
    ['POST', '/upstream/u//sleep'],
    ['POST', '/upstream/u/sleep/'],
    ['POST', '/upstream/u/sleep//'],
    ['POST', '/upstream/u/collective%5Frpc'],
    ['POST', '/upstream/%75/sleep'],
];

test('/upstream: encoded, dot-segment and double-slash spellings of reserved endpoints never reach the engine', { skip: skipNoUvicorn }, async () => {
    const y = await uvicornDaemon();
    await startAndWait(y.dir, 'u');
    const before = received(y.rec).length;

    for (const [method, target] of RESERVED_SPELLINGS) {
        const r = await request(y.port, method, target, { headers: auth });
        assert.equal(r.status, 403, `${method} ${target}: ${r.status} ${r.body}`);
        assert.equal(JSON.parse(r.body).error.code, 'reserved_endpoint', `${target}: ${r.body}`);
    }
    // Escapes that would move a segment boundary or end a string, and broken ones: 400.
    for (const target of ['/upstream/u/%2Fsleep', '/upstream/u/v1%2f..%2fsleep', '/upstream/u/sleep%00', '/upstream/u/sl%zzeep', '/upstream/u/sleep%4']) {
        const r = await request(y.port, 'POST', target, { headers: auth });
        assert.equal(r.status, 400, `${target}: ${r.status} ${r.body}`);
        assert.equal(JSON.parse(r.body).error.code, 'invalid_path', `${target}: ${r.body}`);
    }

    // A decoded name that is not UTF-8 is an unknown model, answered in JSON.
    const bad = await request(y.port, 'POST', '/upstream/%FF%FE/sleep', { headers: auth });
    assert.equal(bad.status, 404, bad.body);
    assert.equal(JSON.parse(bad.body).error.code, 'model_not_found');

    const got = received(y.rec).slice(before);
    const reserved = got.filter((g) => /sleep|wake|collective/.test(g.path));
    assert.deepEqual(reserved, [], 'reserved endpoints reached the engine');
    // The engine is awake and yard says so.
    const e = (await ps(y.dir)).find((x) => x.name === 'u');
    assert.equal(e.state, 'ready');
    const s = await request(e.port, 'GET', '/is_sleeping');
    assert.deepEqual(JSON.parse(s.body), { is_sleeping: false });
    await y.d.stop();
});

test('/upstream: ordinary paths are forwarded normalised, the query as sent', { skip: skipNoUvicorn }, async () => {
    const y = await uvicornDaemon();
    await startAndWait(y.dir, 'u');
    const cases = [
        ['/upstream/u/v1/models', '/v1/models', '/v1/models'],
        ['/upstream/u/v1/%6Dodels', '/v1/models', '/v1/models'],
        ['/upstream/u//v1//models', '/v1/models', '/v1/models'],
        ['/upstream/u/x/../v1/./models', '/v1/models', '/v1/models'],
        ['/upstream/u/../../v1/models', '/v1/models', '/v1/models'],
        ['/upstream/u/health?a=%2F&b=..%2f', '/health', '/health'],
        ['/upstream/u/no%20such%3Fpath', '/no such?path', '/no%20such%3Fpath'],
    ];
    for (const [target, path_, raw] of cases) {
        const before = received(y.rec).length;
        const r = await request(y.port, 'GET', target, { headers: auth });
        const got = received(y.rec).slice(before);
        assert.equal(got.length, 1, `${target}: the engine saw ${JSON.stringify(got)}`);
        assert.equal(got[0].path, path_, target);
        assert.equal(got[0].raw, raw, target);
        if (target.includes('?')) assert.equal(got[0].query, target.split('?')[1], 'the query changed');
        if (path_ === '/v1/models') assert.equal(r.status, 200, `${target}: ${r.body}`);
    }
    // Not an /upstream path any more after "..": the model name cannot be climbed out of.
    const r = await request(y.port, 'GET', '/upstream/u/../../health', { headers: auth });
    assert.equal(r.status, 200);
    await y.d.stop();
});

test('/upstream: the engine\'s status line and headers come back; hop-by-hop ones do not', { skip: skipNoUvicorn }, async () => {
    const y = await uvicornDaemon();
    await startAndWait(y.dir, 'u');

    const r = await request(y.port, 'GET', '/upstream/u/redirect', { headers: auth });
    assert.equal(r.status, 307);
    assert.equal(r.statusMessage, 'Temporary Redirect');
    assert.equal(r.headers.location, '/v1/models');
    assert.equal(r.headers['x-engine'], 'uvicorn');
    assert.equal(r.headers['cache-control'], 'no-store');
    assert.equal(r.headers['keep-alive'], undefined, 'a hop-by-hop header went through');
    assert.equal(r.headers.server, 'uvicorn');

    // A streamed answer (no length) carries them too.
    const s = await request(y.port, 'GET', '/upstream/u/stream', { headers: auth });
    assert.equal(s.status, 200);
    assert.equal(s.body, 'part0\npart1\npart2\n');
    assert.equal(s.headers['x-engine'], 'uvicorn-stream');
    assert.match(s.headers['content-type'], /^text\/plain/);

    // A status yard has no phrase for keeps a proper one.
    const t = await request(y.port, 'GET', '/upstream/u/teapot', { headers: auth });
    assert.equal(t.status, 418);
    assert.notEqual(t.statusMessage, 'Unknown');
    await y.d.stop();
});

test('engine keys: the engine\'s port refuses requests without its key; yard\'s work, also after a --keep-engines restart', { skip: skipNoUvicorn }, async () => {
    const y = await uvicornDaemon({ args: ['--keep-engines'] });
    const e = await startAndWait(y.dir, 'u');
    const body = JSON.stringify({ model: 'u', messages: [{ role: 'user', content: 'hi' }] });

    const check = async (what) => {
        const direct = await request(e.port, 'POST', '/v1/chat/completions', { body });
        assert.equal(direct.status, 401, `${what}: the engine answered without its key: ${direct.body}`);
        const withYardKey = await request(e.port, 'POST', '/v1/chat/completions', { body, headers: auth });
        assert.equal(withYardKey.status, 401, `${what}: yard's client key opened the engine`);
        const before = received(y.rec).length;
        const via = await request(y.port, 'POST', '/v1/chat/completions', { body, headers: auth });
        assert.equal(via.status, 200, `${what}: through yard: ${via.body}`);
        assert.equal(JSON.parse(via.body).choices[0].message.content, 'hello from uvicorn');
        const up = await request(y.port, 'GET', '/upstream/u/v1/models', { headers: auth });
        assert.equal(up.status, 200, `${what}: /upstream: ${up.body}`);
        const seen = received(y.rec).slice(before);
        assert.ok(seen.length >= 2);
        for (const s of seen) {
            assert.ok(s.authorized, `${what}: yard's request was refused: ${JSON.stringify(s)}`);
            assert.notEqual(s.auth_header, `Bearer ${KEY}`, `${what}: the client's yard key reached the engine`);
        }
    };
    await check('first daemon');
    // The key is not on the command line anyone can read.
    const cmdline = fs.readFileSync(`/proc/${e.pid}/cmdline`, 'utf8');
    const seenKey = received(y.rec).find((s) => s.auth_header)?.auth_header.slice(7);
    assert.ok(seenKey && !cmdline.includes(seenKey), 'the engine key is in its command line');
    assert.ok(!JSON.stringify(await ps(y.dir)).includes(seenKey), 'yard ps shows the engine key');

    await y.d.stop();
    assert.ok(pidAlive(e.pid), '--keep-engines stopped the engine');
    const d2 = await startDaemon({ config: y.config, stateDir: y.dir });
    await waitFor(() => tcpAccepts(y.port), { timeoutMs: 5000, what: 'yard listening again' });
    const a = await waitState(y.dir, 'u', 'ready', 15000);
    assert.equal(a.pid, e.pid, 'the engine was not adopted');
    await check('after adoption');
    await d2.stop();
    assert.ok(!pidAlive(e.pid));
});

test('engine keys: the secret file is private and a symlink in its place is refused', async () => {
    const { dir, config, d } = await routerDaemon({
        models: { m: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') } },
    });
    const st = fs.lstatSync(path.join(dir, 'engine.secret'));
    assert.ok(st.isFile());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.size, 32);
    await d.stop();

    // A planted symlink is never followed: the daemon says so and runs engines without keys.
    fs.rmSync(path.join(dir, 'engine.secret'));
    const target = path.join(tmpdir(), 'elsewhere');
    fs.writeFileSync(target, 'x'.repeat(32), { mode: 0o600 });
    fs.symlinkSync(target, path.join(dir, 'engine.secret'));
    const d2 = await startDaemon({ config, stateDir: dir });
    await waitFor(() => /engine\.secret.*symbolic link/.test(d2.logText()), { timeoutMs: 5000, what: 'the refusal in the log' });
    assert.equal(fs.readFileSync(target, 'utf8'), 'x'.repeat(32));
    await d2.stop();
});

test('engine keys: a generic engine opts in with ${API_KEY} in its cmd', { skip: skipNoUvicorn }, async () => {
    const dir = tmpdir();
    const rec = path.join(dir, 'received.jsonl');
    const cmd = `${PYTHON} ${APP} --port \${PORT} --name \${NAME} --record ${rec} --api-key \${API_KEY}`;
    const { port, d } = await routerDaemon({
        dir,
        defaults: { stop_timeout: '5s', startup_timeout: '60s' },
        models: { g: { engine: 'generic', cmd } },
    });
    const e = await startAndWait(dir, 'g');
    const direct = await request(e.port, 'GET', '/v1/models');
    assert.equal(direct.status, 401, direct.body);
    const via = await request(port, 'GET', '/upstream/g/v1/models');
    assert.equal(via.status, 200, via.body);
    const key = received(rec).find((r) => r.auth_header)?.auth_header.slice(7);
    assert.match(key, /^[0-9a-f]{64}$/);
    assert.ok(!JSON.stringify(await ps(dir)).includes(key), 'yard ps shows the engine key');
    const r = await yard(['ps'], { stateDir: dir });
    assert.ok(!r.stdout.includes(key), 'yard ps shows the engine key');
    await d.stop();
});

for (const flavor of ['sglang', 'llamacpp']) {
    test(`engine keys: the ${flavor} mock gets its key (${flavor === 'sglang' ? '--api-key' : 'LLAMA_API_KEY'}) and yard sends it`, async () => {
        const { dir, port, d } = await routerDaemon({
            models: { m: { engine: flavor, cmd: mockCmd(flavor, '--load-time 100ms') } },
        });
        const e = await startAndWait(dir, 'm');
        const body = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
        const direct = await request(e.port, 'POST', '/v1/chat/completions', { body });
        assert.equal(direct.status, 401, `the engine answered without its key: ${direct.body}`);
        const via = await request(port, 'POST', '/v1/chat/completions', { body });
        assert.equal(via.status, 200, via.body);
        await d.stop();
    });
}

test('engine keys: a model that gives its engine its own --api-key keeps it; the client\'s key reaches the engine', async () => {
    const { dir, port, d } = await routerDaemon({
        models: { m: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms --api-key user-key') } },
    });
    const e = await startAndWait(dir, 'm');
    const body = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
    const direct = await request(e.port, 'POST', '/v1/chat/completions', { body });
    assert.equal(direct.status, 401, `the engine answered without its key: ${direct.body}`);
    const withKey = await request(port, 'POST', '/v1/chat/completions', {
        body,
        headers: { authorization: 'Bearer user-key' },
    });
    assert.equal(withKey.status, 200, withKey.body);
    const without = await request(port, 'POST', '/v1/chat/completions', { body });
    assert.equal(without.status, 401, `the engine's own key was not asked for: ${without.body}`);
    await d.stop();
});
