// The daemon supervising mock engines: start, readiness per engine, stop,
// every failure mode of the mock, crash + backoff restart, stop of stubborn
// process groups, logs and events.
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import {
    assert,
    MOCK_ENGINE_BIN,
    tmpdir,
    writeConfig,
    startDaemon,
    yard,
    ps,
    waitState,
    waitFor,
    pidAlive,
    pgidOf,
    processesInGroup,
    procStartTime,
    httpGet,
    httpPost,
    admin,
    freePort,
} from './lib/harness.mjs';

const mock = (flavor, extra = '') =>
    `${MOCK_ENGINE_BIN} --flavor ${flavor} --port \${PORT} --name \${NAME} ${extra}`.trim();

async function daemonWith(models, { defaults = '', top = '' } = {}) {
    const dir = tmpdir();
    const port = await freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n${top}`;
    yaml += `defaults: { stop_timeout: 2s, startup_timeout: 20s ${defaults} }\nmodels:\n`;
    for (const [name, body] of Object.entries(models)) {
        yaml += `  ${name}:\n`;
        for (const [k, v] of Object.entries(body)) yaml += `    ${k}: ${JSON.stringify(v)}\n`;
    }
    const config = writeConfig(dir, yaml);
    const d = await startDaemon({ config, stateDir: dir });
    return { dir, config, d, port };
}

const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);

for (const flavor of ['vllm', 'sglang', 'llamacpp']) {
    test(`${flavor}: start --wait, ready, stop`, async () => {
        const { dir, d } = await daemonWith({
            m: { engine: flavor, cmd: mock(flavor, '--load-time 400ms') },
        });
        const r = await yard(['start', 'm', '--wait'], { stateDir: dir });
        assert.equal(r.code, 0, r.stderr);
        const e = await entry(dir, 'm');
        assert.equal(e.state, 'ready');
        assert.equal(e.host, 'local');
        assert.ok(e.pid > 0 && pidAlive(e.pid));
        // Its own process group, led by the engine.
        assert.equal(pgidOf(e.pid), e.pid);
        const h = await httpGet(`http://127.0.0.1:${e.port}/health`);
        assert.equal(h.status, 200);

        const s = await yard(['stop', 'm'], { stateDir: dir });
        assert.equal(s.code, 0, s.stderr);
        assert.equal((await entry(dir, 'm')).state, 'stopped');
        assert.ok(!pidAlive(e.pid), 'engine still alive after stop');
        await d.stop();
    });
}

test('readiness: vllm is not ready while it refuses connections', async () => {
    const { dir, d } = await daemonWith({
        m: { engine: 'vllm', cmd: mock('vllm', '--load-time 1500ms') },
    });
    await yard(['start', 'm'], { stateDir: dir });
    const e = await waitState(dir, 'm', 'starting');
    assert.ok(e.pid > 0);
    // While loading, the port refuses and yard says starting.
    await assert.rejects(httpGet(`http://127.0.0.1:${e.port}/health`, { timeoutMs: 500 }));
    assert.equal((await entry(dir, 'm')).state, 'starting');
    await waitState(dir, 'm', 'ready', 10000);
    await d.stop();
});

test('start --wait shows load progress and exits 0', async () => {
    const { dir, d } = await daemonWith({
        m: { engine: 'vllm', cmd: mock('vllm', '--load-time 1s') },
    });
    const lines = await admin(dir, { cmd: 'start', model: 'm', wait: true });
    const last = lines[lines.length - 1];
    assert.equal(last.ok, true, JSON.stringify(lines));
    assert.equal(last.result.state, 'ready');
    const pct = lines.filter((l) => l.progress && typeof l.progress.percent === 'number');
    assert.ok(pct.length >= 1, `no progress percent lines: ${JSON.stringify(lines)}`);
    await d.stop();
});

const failures = [
    ['vllm', 'oom', /out of memory/i],
    ['llamacpp', 'oom', /out of memory|model loading error/i],
    ['sglang', 'oom', /not enough memory/i],
    ['vllm', 'exit-early', /exited with code 3 during load/],
];
for (const [flavor, mode, re] of failures) {
    test(`${flavor} --fail ${mode}: failed with a classified reason`, async () => {
        const { dir, d } = await daemonWith({
            m: { engine: flavor, cmd: mock(flavor, `--load-time 300ms --fail ${mode}`) },
        });
        const r = await yard(['start', 'm', '--wait'], { stateDir: dir });
        assert.equal(r.code, 1, r.stdout + r.stderr);
        assert.match(r.stderr, /cannot start 'm'/);
        assert.match(r.stderr, re);
        const e = await entry(dir, 'm');
        assert.equal(e.state, 'failed');
        assert.match(e.reason, re);
        // The event log carries the reason and the last log lines.
        const ev = await yard(['events', '--json'], { stateDir: dir });
        const failed = ev.stdout
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l))
            .filter((x) => x.to === 'failed');
        assert.equal(failed.length, 1);
        assert.match(failed[0].reason, /last log lines/);
        await d.stop();
    });
}

test('hang: startup_timeout fails the load and kills the engine', async () => {
    const { dir, d } = await daemonWith({
        m: { engine: 'vllm', cmd: mock('vllm', '--fail hang'), startup_timeout: '1s' },
    });
    await yard(['start', 'm'], { stateDir: dir });
    const s = await waitState(dir, 'm', 'starting');
    const e = await waitState(dir, 'm', 'failed', 10000);
    assert.match(e.reason, /did not become ready within 1s \(startup_timeout\)/);
    await waitFor(() => !pidAlive(s.pid), { timeoutMs: 5000, what: 'hung engine to be killed' });
    await d.stop();
});

test('port already taken: classified as port in use', async () => {
    const port = await freePort();
    const net = await import('node:net');
    const blocker = net.createServer().listen(port, '0.0.0.0');
    await new Promise((r) => blocker.once('listening', r));
    try {
        const { dir, d } = await daemonWith({
            m: { engine: 'llamacpp', cmd: mock('llamacpp'), port },
        });
        const r = await yard(['start', 'm', '--wait'], { stateDir: dir });
        assert.equal(r.code, 1);
        assert.match((await entry(dir, 'm')).reason, /port already in use|address already in use/i);
        await d.stop();
    } finally {
        blocker.close();
    }
});

test('unknown model: one line listing the configured ones', async () => {
    const { dir, d } = await daemonWith({ alpha: { engine: 'vllm', cmd: mock('vllm') } });
    const r = await yard(['start', 'nope'], { stateDir: dir });
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), "yard: unknown model 'nope'; configured models: alpha");
    await d.stop();
});

test('crash while ready: detected, restarted with backoff', async () => {
    const { dir, d, port } = await daemonWith({
        m: {
            engine: 'llamacpp',
            cmd: mock('llamacpp', '--load-time 100ms --fail crash-after:0'),
            restart: 'on-failure',
            max_restarts: 3,
        },
    });
    assert.equal((await yard(['start', 'm', '--wait'], { stateDir: dir })).code, 0);
    const first = await entry(dir, 'm');
    // Through yard: the engine's own port wants the key yard started it with.
    await httpPost(
        `http://127.0.0.1:${port}/v1/chat/completions`,
        JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] })
    ).catch(() => {});
    // Crash seen within a second (the mock dies after answering).
    const t0 = Date.now();
    await waitFor(
        async () => {
            const e = await entry(dir, 'm');
            return e.state !== 'ready' || e.pid !== first.pid;
        },
        { timeoutMs: 3000, what: 'crash detection' }
    );
    assert.ok(Date.now() - t0 < 1500);
    const again = await waitFor(
        async () => {
            const e = await entry(dir, 'm');
            return e.state === 'ready' && e.pid !== first.pid ? e : null;
        },
        { timeoutMs: 10000, what: 'restart after crash' }
    );
    assert.ok(!pidAlive(first.pid));
    assert.ok(pidAlive(again.pid));
    const ev = (await yard(['events', '--json', 'm'], { stateDir: dir })).stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
    const crash = ev.find((x) => x.to === 'failed');
    assert.ok(crash, JSON.stringify(ev));
    assert.match(crash.reason, /crashed/);
    await d.stop();
});

// A serving engine logs the paths its clients ask for (uvicorn's access log, llama-server's
// request log): a path that quotes what CUDA prints for a missing GPU gives the engine's
// next exit neither that cause nor the machine's blame.
for (const flavor of ['vllm', 'sglang', 'llamacpp']) {
    test(`${flavor}: a client's path in the engine's log is not the cause of its crash`, async () => {
        const { dir, d, port } = await daemonWith({
            m: { engine: flavor, cmd: mock(flavor, '--load-time 100ms'), restart: 'never' },
        });
        assert.equal((await yard(['start', 'm', '--wait'], { stateDir: dir })).code, 0);
        const e = await entry(dir, 'm');
        for (const quoted of ['CUDA_ERROR_NO_DEVICE', 'cudaErrorNoDevice', 'NVRM:Xid']) {
            const r = await httpGet(`http://127.0.0.1:${port}/upstream/m/${quoted}`);
            assert.equal(r.status, 404, r.body);
        }
        // The engine wrote its access lines before it answered; the supervisor reads the
        // log's last lines when the engine exits.
        process.kill(e.pid, 'SIGKILL');
        const failed = await waitFor(
            async () => {
                const x = await entry(dir, 'm');
                return x.state === 'failed' ? x : null;
            },
            { timeoutMs: 10000, what: 'the crash' }
        );
        // nothing after how it ended: no cause, no machine blamed
        assert.match(failed.reason, /^crashed: killed by signal 9 \([^:]*\)$/);
        const logs = await yard(['logs', 'm'], { stateDir: dir });
        assert.match(logs.stdout, /CUDA_ERROR_NO_DEVICE/);
        await d.stop();
    });
}

test('restart attempts are bounded', async () => {
    const { dir, d } = await daemonWith({
        m: {
            engine: 'vllm',
            cmd: mock('vllm', '--fail exit-early'),
            restart: 'on-failure',
            max_restarts: 1,
        },
    });
    await yard(['start', 'm'], { stateDir: dir });
    await waitFor(
        async () => {
            const ev = (await yard(['events', '--json', 'm'], { stateDir: dir })).stdout;
            return (ev.match(/"to":"failed"/g) || []).length >= 2;
        },
        { timeoutMs: 10000, what: 'two failures' }
    );
    // No third attempt: state stays failed past the next backoff.
    await new Promise((r) => setTimeout(r, 2500));
    const ev = (await yard(['events', '--json', 'm'], { stateDir: dir })).stdout;
    assert.equal((ev.match(/"to":"starting"/g) || []).length, 2);
    assert.equal((await entry(dir, 'm')).state, 'failed');
    await d.stop();
});

test('stop: SIGTERM ignored and a forked child: the whole group is gone', async () => {
    const { dir, d } = await daemonWith({
        m: {
            engine: 'vllm',
            cmd: mock('vllm', '--load-time 100ms --fail ignore-sigterm,fork-child'),
            stop_timeout: '500ms',
        },
    });
    assert.equal((await yard(['start', 'm', '--wait'], { stateDir: dir })).code, 0);
    const e = await entry(dir, 'm');
    await waitFor(() => processesInGroup(e.pid).length >= 2, { what: 'the forked child' });
    const members = processesInGroup(e.pid);
    const r = await yard(['stop', 'm'], { stateDir: dir });
    assert.equal(r.code, 0, r.stderr);
    for (const pid of members) assert.ok(!pidAlive(pid), `pid ${pid} survived stop`);
    assert.equal(processesInGroup(e.pid).length, 0);
    await d.stop();
});

test('stop --all and SIGTERM to the daemon stop every engine', async () => {
    const { dir, d } = await daemonWith({
        a: { engine: 'vllm', cmd: mock('vllm', '--load-time 100ms') },
        b: { engine: 'llamacpp', cmd: mock('llamacpp', '--load-time 100ms') },
    });
    await yard(['start', 'a', '--wait'], { stateDir: dir });
    await yard(['start', 'b', '--wait'], { stateDir: dir });
    const pids = (await ps(dir)).map((e) => e.pid);
    const r = await yard(['stop', '--all'], { stateDir: dir });
    assert.equal(r.code, 0, r.stderr);
    for (const pid of pids) assert.ok(!pidAlive(pid));
    await yard(['start', 'a', '--wait'], { stateDir: dir });
    const a = await entry(dir, 'a');
    await d.stop();
    assert.ok(!pidAlive(a.pid), 'daemon exit left the engine running');
});

test('logs -n and logs -f', async () => {
    const { dir, d } = await daemonWith({
        m: { engine: 'sglang', cmd: mock('sglang', '--load-time 200ms') },
    });
    await yard(['start', 'm', '--wait'], { stateDir: dir });
    const r = await yard(['logs', 'm', '-n', '50'], { stateDir: dir });
    assert.equal(r.code, 0);
    assert.match(r.stdout, /The server is fired up and ready to roll!/);
    const logFile = path.join(dir, 'logs', 'm.log');
    assert.ok(fs.existsSync(logFile));

    // -f: a line the engine writes later arrives.
    const lines = admin(
        dir,
        { cmd: 'logs', model: 'm', n: 1, follow: true },
        { until: (l) => l.line && /chat-probe-e2e|POST \/v1\/chat/.test(l.line), timeoutMs: 10000 }
    );
    await new Promise((res) => setTimeout(res, 200));
    fs.appendFileSync(logFile, 'chat-probe-e2e\n');
    const got = await lines;
    assert.ok(got.some((l) => l.line && /chat-probe-e2e|POST/.test(l.line)));
    await d.stop();
});

test('no daemon: one line and exit 1', async () => {
    const dir = tmpdir();
    const r = await yard(['ps'], { stateDir: dir });
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /no daemon running/);
});

test('ps --json has the stable keys', async () => {
    const { dir, d } = await daemonWith({ m: { engine: 'vllm', cmd: mock('vllm') } });
    const list = await ps(dir);
    assert.deepEqual(Object.keys(list[0]).sort(), [
        'engine', 'gpus', 'host', 'job', 'name', 'node', 'pid', 'pinned', 'port', 'reason', 'replica', 'state', 'ttl_left_s', 'uptime_s',
    ]);
    assert.equal(list[0].job, null);
    assert.equal(list[0].node, null);
    assert.equal(list[0].pinned, false);
    assert.equal(list[0].replica, 0);
    assert.equal(list[0].ttl_left_s, null);
    assert.equal(list[0].state, 'stopped');
    assert.equal(list[0].pid, null);
    const table = await yard(['ps'], { stateDir: dir });
    assert.match(table.stdout, /^NAME\s+ENGINE\s+HOST\s+REPLICA\s+STATE\s+PID\s+PORT\s+GPUS\s+UPTIME\s+TTL\s+REASON/);
    await d.stop();
    void procStartTime;
});

test('log files are capped: rotated to NAME.log.1, the engine keeps writing', async () => {
    const dir = tmpdir();
    const port = await freePort();
    const script =
        'i=0; while [ $i -lt 3000 ]; do echo "line $i padding padding padding padding"; i=$((i+1)); done; sleep 1; echo last-marker; exec sleep 60';
    const config = writeConfig(
        dir,
        `listen: 127.0.0.1:${port}\nlog_max_size: 16KiB\nmodels:\n  chatty:\n    engine: generic\n` +
            `    cmd: ${JSON.stringify(`sh -c '${script}'`)}\n    startup_timeout: 60s\n` +
            `    stop_timeout: 1s\n`
    );
    const d = await startDaemon({ config, stateDir: dir });
    await yard(['start', 'chatty'], { stateDir: dir });
    const log = path.join(dir, 'logs', 'chatty.log');
    await waitFor(() => fs.existsSync(`${log}.1`), { timeoutMs: 10000, what: 'a rotated log' });
    await waitFor(
        () => fs.readFileSync(log, 'utf8').includes('last-marker'),
        { timeoutMs: 10000, what: 'the last line' }
    );
    assert.ok(fs.statSync(log).size <= 64 * 1024, `log grew to ${fs.statSync(log).size}`);
    assert.ok(fs.statSync(`${log}.1`).size <= 96 * 1024);
    await d.stop();
});

test('--log-format json: one JSON object per line', async () => {
    const dir = tmpdir();
    const port = await freePort();
    const config = writeConfig(
        dir,
        `listen: 127.0.0.1:${port}\nmodels:\n  m:\n    engine: vllm\n    cmd: ${JSON.stringify(mock('vllm'))}\n`
    );
    const d = await startDaemon({ config, stateDir: dir, args: ['--log-format', 'json'] });
    await yard(['start', 'm', '--wait'], { stateDir: dir });
    await d.stop();
    const lines = d.logText().trim().split('\n');
    assert.ok(lines.length >= 3);
    for (const l of lines) {
        const o = JSON.parse(l);
        assert.ok(o.ts && o.level && o.module && typeof o.msg === 'string', l);
    }
    assert.ok(lines.some((l) => /starting -> ready/.test(JSON.parse(l).msg)));
});
