// Readiness counts only the engine's own answer: a neighbour that binds the
// model's port first (a stale engine, another daemon's engine) does not make
// the model ready and gets none of its traffic; the engine that then finds
// its port taken ("address already in use") is started again on another port
// without counting as a failure.
import { test } from 'node:test';
import { assert, startProcess, yard, ps, waitState, waitFor, httpPost } from './lib/harness.mjs';
import { mockCmd, routerDaemon } from './lib/router-helpers.mjs';

const daemonWith = (models, { startupTimeout = '30s' } = {}) =>
    routerDaemon({ models, defaults: { startup_timeout: startupTimeout } });

const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);

// A stranger on port: healthy, lists another model, answers everything else
// with its own name, and logs each request it gets beyond /health and /v1/models.
const NEIGHBOUR = `
const http = require('http');
const srv = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === '/health') return res.end('{}');
    if (req.url === '/v1/models')
        return res.end(JSON.stringify({ object: 'list', data: [{ id: 'neighbour', object: 'model' }] }));
    console.log('HIT ' + req.method + ' ' + req.url);
    res.end(JSON.stringify({ neighbour: true, choices: [{ message: { content: 'neighbour' } }] }));
});
srv.listen(Number(process.argv[1]), '127.0.0.1', () => console.log('listening'));
`;

async function neighbourOn(port) {
    const n = startProcess(process.execPath, ['-e', NEIGHBOUR, String(port)], { name: 'neighbour' });
    await waitFor(() => n.logText().includes('listening') || n.exited, { what: 'neighbour listening' });
    assert.ok(!n.exited, `neighbour could not listen on ${port}: ${n.logText()}`);
    return n;
}

const events = async (dir) =>
    (await yard(['events', '--json', 'm'], { stateDir: dir })).stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));

test('a neighbour on the port is not the model; the engine moves to another port', async () => {
    const { dir, d, base } = await daemonWith({
        m: { engine: 'sglang', cmd: mockCmd('sglang', '--load-time 4s') },
    });
    const r = await yard(['start', 'm'], { stateDir: dir });
    assert.equal(r.code, 0, r.stderr);
    const e = await waitState(dir, 'm', 'starting');
    assert.ok(e.port > 0 && e.pid > 0);
    // SGLang binds only once loaded: the neighbour takes the port during the load.
    const n = await neighbourOn(e.port);

    // yard sees who holds the port and says so; it stays starting.
    const held = await waitFor(
        async () => {
            const x = await entry(dir, 'm');
            return x.reason.includes(`port ${e.port} is held by pid ${n.pid}`) ? x : null;
        },
        { what: 'the reason naming the neighbour', timeoutMs: 10000 },
    );
    assert.equal(held.state, 'starting', JSON.stringify(held));
    assert.match(held.reason, /not by 'm'/);

    // A request waits for the engine; the neighbour never sees it.
    const chat = httpPost(`${base}/v1/chat/completions`, {
        model: 'm',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 3,
    });
    // The engine finishes loading, cannot bind, and is started on another port.
    const ready = await waitState(dir, 'm', 'ready', 30000);
    assert.notEqual(ready.port, e.port);
    assert.notEqual(ready.pid, e.pid);
    const res = await chat;
    assert.equal(res.status, 200, res.body);
    assert.ok(!res.body.includes('neighbour'), `answered by the neighbour: ${res.body}`);
    assert.ok(!n.logText().includes('HIT'), `the neighbour got traffic: ${n.logText()}`);

    const ev = await events(dir);
    assert.ok(
        ev.some((x) => /taken by another process during the load/.test(x.reason)),
        JSON.stringify(ev),
    );
    // Not the model's failure, and not a restart attempt.
    assert.ok(!ev.some((x) => x.to === 'failed'), JSON.stringify(ev));
    assert.ok(!ev.some((x) => /restarting after a failure/.test(x.reason)), JSON.stringify(ev));
    await d.stop();
    await n.stop();
});

test('startup_timeout names the process that holds the port', async () => {
    const { dir, d } = await daemonWith(
        { m: { engine: 'sglang', cmd: mockCmd('sglang', '--load-time 60s'), restart: 'never' } },
        { startupTimeout: '2s' },
    );
    assert.equal((await yard(['start', 'm'], { stateDir: dir })).code, 0);
    const e = await waitState(dir, 'm', 'starting');
    const n = await neighbourOn(e.port);
    const f = await waitState(dir, 'm', 'failed', 15000);
    assert.match(f.reason, /startup_timeout/);
    assert.match(f.reason, new RegExp(`port ${e.port} is held by pid ${n.pid}`));
    assert.ok(!n.logText().includes('HIT'), n.logText());
    await d.stop();
    await n.stop();
});
