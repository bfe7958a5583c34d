// Placement by GPU memory with declared GPUs whose use comes from the mock
// engines' ledger: packing, eviction by memory (sleep first), a model that
// can never fit, and memory that must really be free before a start.
import { test } from 'node:test';
import path from 'node:path';
import {
    assert,
    MOCK_ENGINE_BIN,
    tmpdir,
    writeConfig,
    startDaemon,
    yard,
    ps,
    pidAlive,
    freePort,
    httpPost,
    httpGet,
} from './lib/harness.mjs';

async function setup(models, gpus) {
    const dir = tmpdir();
    const port = await freePort();
    const ledger = path.join(dir, 'gpu.ledger');
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\ngpu_ledger: ${ledger}\n`;
    yaml += `defaults: { stop_timeout: 2s }\nrouter: { max_wait: 20s }\ngpus:\n`;
    for (const [i, mem] of gpus.entries()) yaml += `  - { index: ${i}, name: "GPU ${i}", memory: ${mem} }\n`;
    yaml += 'models:\n';
    for (const [name, m] of Object.entries(models)) {
        const flavor = m.engine;
        const cmd =
            `${MOCK_ENGINE_BIN} --flavor ${flavor} --port \${PORT} --name \${NAME} ` +
            `--vram ${m.vram} --ledger ${ledger} --load-time 300ms`;
        yaml += `  ${name}:\n    engine: ${flavor}\n    vram: ${m.vram}\n    gpus: ${m.gpus || 1}\n`;
        yaml += `    cmd: ${JSON.stringify(cmd)}\n`;
        if (m.eviction) yaml += `    eviction: ${m.eviction}\n`;
    }
    const config = writeConfig(dir, yaml);
    const d = await startDaemon({ config, stateDir: dir });
    const base = `http://127.0.0.1:${port}`;
    const ask = (model) =>
        httpPost(
            `${base}/v1/chat/completions`,
            JSON.stringify({ model, max_tokens: 2, messages: [{ role: 'user', content: 'hi' }] }),
            { headers: { 'Content-Type': 'application/json' } }
        );
    const metrics = async () => (await httpGet(`${base}/metrics`)).body;
    return { dir, d, ask, metrics };
}

const byName = async (dir) => Object.fromEntries((await ps(dir)).map((e) => [e.name, e]));
const gpus = async (dir) => JSON.parse((await yard(['gpus', '--json'], { stateDir: dir })).stdout);

test('three models on two GPUs: packed by memory, the least recently used sleeps', async () => {
    const { dir, d, ask, metrics } = await setup(
        {
            a: { engine: 'vllm', vram: '30GiB', eviction: '{ weights: offload }' },
            b: { engine: 'vllm', vram: '30GiB', eviction: '{ weights: offload }' },
            c: { engine: 'llamacpp', vram: '30GiB' },
        },
        ['40GiB', '40GiB']
    );
    assert.equal((await ask('a')).status, 200);
    assert.equal((await ask('b')).status, 200);
    let s = await byName(dir);
    assert.equal(s.a.state, 'ready');
    assert.equal(s.b.state, 'ready');
    assert.notEqual(s.a.gpus, s.b.gpus, 'both 30GiB models on one 40GiB GPU');
    const aPid = s.a.pid;

    assert.equal((await ask('c')).status, 200);
    s = await byName(dir);
    assert.equal(s.c.state, 'ready');
    assert.equal(s.a.state, 'sleeping', 'the least recently used model should sleep');
    assert.equal(s.a.pid, aPid);
    assert.ok(pidAlive(aPid));
    assert.equal(s.b.state, 'ready');
    assert.equal(s.c.gpus, s.a.gpus, 'c belongs where a freed its memory');
    // The switch is timed: one drain and one sleep so far.
    const m = await metrics();
    const count = (ph) => Number(m.match(new RegExp(`yard_switch_phase_seconds_count\\{phase="${ph}"\\} (\\d+)`))[1]);
    assert.equal(count('drain'), 1, m);
    assert.equal(count('sleep'), 1, m);
    assert.equal(count('stop'), 0, m);
    assert.equal(count('start'), 3, m);
    // The inventory agrees: no GPU is over its total.
    for (const g of (await gpus(dir)).gpus) assert.ok(g.used <= g.total, JSON.stringify(g));
    await d.stop();
});

test('a model bigger than every GPU fails at once with the reason, no eviction', async () => {
    const { dir, d, ask } = await setup(
        {
            small: { engine: 'vllm', vram: '10GiB' },
            huge: { engine: 'vllm', vram: '100GiB' },
        },
        ['40GiB']
    );
    assert.equal((await ask('small')).status, 200);
    const t0 = Date.now();
    const r = await ask('huge');
    assert.equal(r.status, 503);
    const body = JSON.parse(r.body);
    assert.equal(body.error.code, 'model_does_not_fit');
    assert.match(body.error.message, /needs 100\.0GiB per GPU and the largest GPU has 40\.0GiB/);
    assert.ok(Date.now() - t0 < 5000, 'refused only after waiting');
    const s = await byName(dir);
    assert.equal(s.small.state, 'ready', 'a never-fitting model evicted another');
    assert.equal(s.huge.state, 'stopped');
    await d.stop();
});

test('a two-GPU model takes two GPUs and stops a model that cannot sleep', async () => {
    const { dir, d, ask } = await setup(
        {
            one: { engine: 'llamacpp', vram: '30GiB' },
            two: { engine: 'vllm', vram: '60GiB', gpus: 2 },
        },
        ['40GiB', '40GiB']
    );
    assert.equal((await ask('one')).status, 200);
    const onePid = (await byName(dir)).one.pid;
    assert.equal((await ask('two')).status, 200);
    const s = await byName(dir);
    assert.equal(s.two.state, 'ready');
    assert.equal(s.two.gpus.split(',').length, 2);
    assert.equal(s.one.state, 'stopped');
    assert.ok(!pidAlive(onePid));
    await d.stop();
});

test('the engines sleep and admin verbs are not reachable through /upstream', async () => {
    const { dir, d } = await setup(
        { v: { engine: 'vllm', vram: '10GiB', eviction: '{ weights: offload }' } },
        ['40GiB']
    );
    const listen = (await import('node:fs')).readFileSync(path.join(dir, 'yard.yaml'), 'utf8')
        .match(/listen: (\S+)/)[1];
    for (const p of ['/sleep?level=1', '/wake_up', '/collective_rpc', '/release_memory_occupation']) {
        const r = await httpPost(`http://${listen}/upstream/v${p}`, '{}');
        assert.equal(r.status, 403, `${p}: ${r.status} ${r.body}`);
        assert.equal(JSON.parse(r.body).error.code, 'reserved_endpoint');
    }
    // Nothing was started for them.
    assert.equal((await byName(dir)).v.state, 'stopped');
    await d.stop();
});
