// The daemon's own life: adoption after kill -9, --keep-engines, reload by
// SIGHUP and by file change, configs refused with their messages, a corrupt
// or newer database refused and left untouched.
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
    procStartTime,
    processesMatching,
    freePort,
} from './lib/harness.mjs';

const mock = (flavor, extra = '') =>
    `${MOCK_ENGINE_BIN} --flavor ${flavor} --port \${PORT} --name \${NAME} ${extra}`.trim();

async function configFor(dir, models) {
    const port = await freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n`;
    yaml += `defaults: { stop_timeout: 2s }\nmodels:\n`;
    for (const [name, body] of Object.entries(models)) {
        yaml += `  ${name}:\n`;
        for (const [k, v] of Object.entries(body)) yaml += `    ${k}: ${JSON.stringify(v)}\n`;
    }
    return { yaml, file: writeConfig(dir, yaml) };
}

const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);
const enginesNamed = (name) =>
    processesMatching(`--name\u0000${name}`).filter((p) => pidAlive(p));

test('kill -9 of the daemon: the next one adopts the same engine, no second copy', async () => {
    const dir = tmpdir();
    const name = `adopt${process.pid}`;
    const { file } = await configFor(dir, {
        [name]: { engine: 'vllm', cmd: mock('vllm', '--load-time 200ms') },
    });
    const d1 = await startDaemon({ config: file, stateDir: dir });
    assert.equal((await yard(['start', name, '--wait'], { stateDir: dir })).code, 0);
    const before = await entry(dir, name);
    const started = procStartTime(before.pid);

    d1.kill('SIGKILL');
    await d1.waitExit(5000);
    assert.ok(pidAlive(before.pid), 'engine died with the daemon');

    const d2 = await startDaemon({ config: file, stateDir: dir });
    const after = await waitState(dir, name, 'ready', 5000);
    assert.equal(after.pid, before.pid);
    assert.equal(procStartTime(after.pid), started);
    // Starting it again is a no-op: still one engine.
    assert.equal((await yard(['start', name, '--wait'], { stateDir: dir })).code, 0);
    assert.equal((await entry(dir, name)).pid, before.pid);
    assert.equal(enginesNamed(name).length, 1);
    // Adopted engines are watched: a crash is noticed.
    process.kill(before.pid, 'SIGKILL');
    await waitState(dir, name, 'failed', 3000);
    await d2.stop();
});

test("a failed model's reason survives the daemon's restart, stop or kill -9", async () => {
    const dir = tmpdir();
    const { file } = await configFor(dir, {
        f: { engine: 'llamacpp', cmd: mock('llamacpp', '--load-time 100ms --fail oom'), restart: 'never' },
    });
    let d = await startDaemon({ config: file, stateDir: dir });
    const r = await yard(['start', 'f', '--wait'], { stateDir: dir });
    assert.notEqual(r.code, 0);
    const failed = await waitState(dir, 'f', 'failed', 10000);
    assert.match(failed.reason, /CUDA out of memory/);
    const eventsBefore = (await yard(['events', 'f', '--json'], { stateDir: dir })).stdout;
    for (const how of ['stop', 'SIGKILL']) {
        if (how === 'stop') await d.stop();
        else {
            d.kill('SIGKILL');
            await d.waitExit(5000);
        }
        d = await startDaemon({ config: file, stateDir: dir });
        const e = await entry(dir, 'f');
        assert.equal(e.state, 'failed', `after ${how}: ${JSON.stringify(e)}`);
        assert.equal(e.reason, failed.reason, `after ${how}`);
    }
    // nothing happened to it meanwhile, so no event says anything did
    assert.equal((await yard(['events', 'f', '--json'], { stateDir: dir })).stdout, eventsBefore);
    await d.stop();
});

test('kill -9 while loading: adopted as starting, then ready', async () => {
    const dir = tmpdir();
    const { file } = await configFor(dir, {
        m: { engine: 'llamacpp', cmd: mock('llamacpp', '--load-time 2500ms') },
    });
    const d1 = await startDaemon({ config: file, stateDir: dir });
    await yard(['start', 'm'], { stateDir: dir });
    const s = await waitState(dir, 'm', 'starting');
    d1.kill('SIGKILL');
    await d1.waitExit(5000);
    const d2 = await startDaemon({ config: file, stateDir: dir });
    const e = await waitState(dir, 'm', ['starting', 'ready'], 3000);
    assert.equal(e.pid, s.pid);
    const r = await waitState(dir, 'm', 'ready', 10000);
    assert.equal(r.pid, s.pid);
    await d2.stop();
    assert.ok(!pidAlive(s.pid));
});

test('an engine that died while no daemon ran is recorded stopped, not restarted', async () => {
    const dir = tmpdir();
    const { file } = await configFor(dir, {
        m: { engine: 'vllm', cmd: mock('vllm', '--load-time 100ms') },
    });
    const d1 = await startDaemon({ config: file, stateDir: dir });
    await yard(['start', 'm', '--wait'], { stateDir: dir });
    const e = await entry(dir, 'm');
    d1.kill('SIGKILL');
    await d1.waitExit(5000);
    process.kill(e.pid, 'SIGKILL');
    await waitFor(() => !pidAlive(e.pid), { what: 'engine to die' });
    const d2 = await startDaemon({ config: file, stateDir: dir });
    const now = await entry(dir, 'm');
    assert.equal(now.state, 'stopped');
    assert.equal(now.pid, null);
    await d2.stop();
});

test('--keep-engines: engines survive the daemon and are adopted', async () => {
    const dir = tmpdir();
    const { file } = await configFor(dir, {
        m: { engine: 'sglang', cmd: mock('sglang', '--load-time 100ms') },
    });
    const d1 = await startDaemon({ config: file, stateDir: dir, args: ['--keep-engines'] });
    await yard(['start', 'm', '--wait'], { stateDir: dir });
    const e = await entry(dir, 'm');
    await d1.stop();
    assert.ok(pidAlive(e.pid), '--keep-engines stopped the engine');
    const d2 = await startDaemon({ config: file, stateDir: dir });
    const a = await waitState(dir, 'm', 'ready', 5000);
    assert.equal(a.pid, e.pid);
    await d2.stop();
    assert.ok(!pidAlive(e.pid));
});

test('SIGHUP reload: unchanged keeps running, changed restarts, removed stops, new added', async () => {
    const dir = tmpdir();
    const base = {
        keep: { engine: 'vllm', cmd: mock('vllm', '--load-time 100ms') },
        change: { engine: 'llamacpp', cmd: mock('llamacpp', '--load-time 100ms') },
        drop: { engine: 'sglang', cmd: mock('sglang', '--load-time 100ms') },
    };
    const { file } = await configFor(dir, base);
    const d = await startDaemon({ config: file, stateDir: dir });
    for (const m of ['keep', 'change', 'drop'])
        assert.equal((await yard(['start', m, '--wait'], { stateDir: dir })).code, 0);
    const before = Object.fromEntries((await ps(dir)).map((e) => [e.name, e]));

    const next = await configFor(dir, {
        keep: base.keep,
        change: { ...base.change, cmd: mock('llamacpp', '--load-time 150ms') },
        added: { engine: 'vllm', cmd: mock('vllm') },
    });
    // configFor picked new listen/start ports: keep the old ones so only models differ.
    const oldText = fs.readFileSync(file, 'utf8');
    const head = oldText.split('models:')[0];
    fs.writeFileSync(file, head + 'models:' + next.yaml.split('models:')[1]);
    d.kill('SIGHUP');

    const changed = await waitFor(
        async () => {
            const e = await entry(dir, 'change');
            return e && e.state === 'ready' && e.pid !== before.change.pid ? e : null;
        },
        { timeoutMs: 10000, what: "'change' restarted" }
    );
    assert.ok(!pidAlive(before.change.pid));
    assert.ok(pidAlive(changed.pid));
    const list = await ps(dir);
    const keep = list.find((e) => e.name === 'keep');
    assert.equal(keep.state, 'ready');
    assert.equal(keep.pid, before.keep.pid, 'unchanged model was touched');
    // A removed model shows as stopping, with why, until its engine has exited; then it is gone.
    const dropping = list.find((e) => e.name === 'drop');
    if (dropping) {
        assert.equal(dropping.state, 'stopping');
        assert.equal(dropping.reason, 'removed from the config');
    }
    await waitFor(async () => !(await entry(dir, 'drop')), { what: 'removed model gone from ps' });
    await waitFor(() => !pidAlive(before.drop.pid), { what: 'removed model stopped' });
    assert.equal(list.find((e) => e.name === 'added').state, 'stopped');
    // A removed model keeps its history; a name with none is refused as yard logs refuses it.
    const gone = await yard(['events', 'drop'], { stateDir: dir });
    assert.equal(gone.code, 0, gone.stderr);
    assert.match(gone.stdout, /drop/);
    for (const verb of ['events', 'logs']) {
        const r = await yard([verb, 'dorp'], { stateDir: dir });
        assert.notEqual(r.code, 0, verb);
        assert.match(r.stderr, /unknown model 'dorp'; configured models: /, verb);
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }

    // An invalid config is refused; everything keeps running.
    fs.writeFileSync(file, head + 'models:\n  keep:\n    engine: vlm\n    cmd: "x"\n');
    d.kill('SIGHUP');
    await waitFor(() => /reload refused/.test(d.logText()), { what: 'reload refusal' });
    assert.match(d.logText(), /yard\.yaml:\d+:\d+: .*vlm/);
    const still = await ps(dir);
    assert.equal(still.find((e) => e.name === 'keep').pid, before.keep.pid);
    assert.equal(still.find((e) => e.name === 'change').state, 'ready');
    await d.stop();
});

test('a changed config file is picked up without a signal', async () => {
    const dir = tmpdir();
    const { file } = await configFor(dir, { a: { engine: 'vllm', cmd: mock('vllm') } });
    const d = await startDaemon({ config: file, stateDir: dir });
    const text = fs.readFileSync(file, 'utf8');
    fs.writeFileSync(file, text + `  b:\n    engine: "vllm"\n    cmd: ${JSON.stringify(mock('vllm'))}\n`);
    await waitFor(async () => (await ps(dir)).some((e) => e.name === 'b'), {
        timeoutMs: 5000,
        what: "model 'b' to appear",
    });
    await d.stop();
});

test('yard check and yard serve refuse a bad config with FILE:LINE:COL', async () => {
    const dir = tmpdir();
    const file = writeConfig(
        dir,
        'models:\n  a:\n    engine: vllm\n    comand: "x"\n'
    );
    const r = await yard(['check', '-c', file]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`${file.replace(/[.]/g, '\\.')}:4:5: .*'comand'.*did you mean 'cmd'`));
    const s = await yard(['serve', '-c', file, '--state-dir', dir]);
    assert.equal(s.code, 2);
    assert.match(s.stderr, /nothing was started/);
    assert.ok(!fs.existsSync(path.join(dir, 'yard.sock')));
    const ok = writeConfig(dir, 'models:\n  a:\n    engine: vllm\n    cmd: "x --port ${PORT}"\n', 'ok.yaml');
    const c = await yard(['check', '-c', ok]);
    assert.equal(c.code, 0, c.stderr);
});

test('yard check: a cmd with a fixed port gives the model that port, one with none is refused', async () => {
    const dir = tmpdir();
    const none = writeConfig(dir, 'models:\n  m:\n    engine: vllm\n    cmd: "vllm serve m"\n', 'none.yaml');
    const r = await yard(['check', '-c', none]);
    assert.equal(r.code, 2);
    assert.equal(
        r.stderr.trim(),
        `${none}:4:10: models.m.cmd: the command gives the engine no port; add --port \${PORT} (yard picks a free one) or set port: N`
    );
    const fixed = writeConfig(
        dir,
        'models:\n  m:\n    engine: vllm\n    cmd: "vllm serve m --port 9000"\n' +
            '  n:\n    engine: sglang\n    cmd: "sglang --port=9000"\n',
        'fixed.yaml'
    );
    const f = await yard(['check', '-c', fixed]);
    assert.equal(f.code, 2);
    assert.equal(f.stderr.trim(), `${fixed}:7:10: models.n.cmd: port 9000 is already used by model 'm'`);
    const one = writeConfig(dir, 'models:\n  m:\n    engine: vllm\n    cmd: "vllm serve m --port 9000"\n', 'one.yaml');
    const o = await yard(['check', '-c', one]);
    assert.equal(o.code, 0, o.stderr);
});

test('a corrupt database is refused and left as it was', async () => {
    const dir = tmpdir();
    const { file } = await configFor(dir, { a: { engine: 'vllm', cmd: mock('vllm') } });
    const db = path.join(dir, 'yard.db');
    const junk = Buffer.alloc(8192, 0x5a);
    fs.writeFileSync(db, junk);
    const r = await yard(['serve', '-c', file, '--state-dir', dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not a valid yard database/);
    assert.match(r.stderr, /mv /);
    assert.ok(fs.readFileSync(db).equals(junk), 'the database file was modified');
});

test('two daemons on one state dir: the second refuses', async () => {
    const dir = tmpdir();
    const { file } = await configFor(dir, { a: { engine: 'vllm', cmd: mock('vllm') } });
    const d = await startDaemon({ config: file, stateDir: dir });
    const r = await yard(['serve', '-c', file, '--state-dir', dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /another daemon \(pid \d+\) already uses state dir/);
    await d.stop();
});

test('kill -9 while a sleep runs: the next daemon adopts the engine asleep, never as ready', async () => {
    // A sleeping vLLM that gets a request can crash; the daemon records that it
    // is going to sleep before it asks the engine, and reads that back.
    const dir = tmpdir();
    const stamps = path.join(dir, 'stamps');
    const name = `nap${process.pid}`;
    const { file } = await configFor(dir, {
        [name]: {
            engine: 'vllm',
            cmd: mock('vllm', `--load-time 3s --stamps ${stamps}`),
            eviction: { weights: 'offload' },
        },
    });
    const d1 = await startDaemon({ config: file, stateDir: dir });
    assert.equal((await yard(['start', name, '--wait'], { stateDir: dir })).code, 0);
    const before = await entry(dir, name);
    const asleep = yard(['sleep', name], { stateDir: dir });
    // The engine's sleep has begun (it takes 300 ms): kill the daemon inside it.
    await waitFor(() => fs.existsSync(stamps) && /^sleep /m.test(fs.readFileSync(stamps, 'utf8')), {
        intervalMs: 5,
        what: 'the engine to begin its sleep',
    });
    d1.kill('SIGKILL');
    await d1.waitExit(5000);
    await asleep;

    const d2 = await startDaemon({ config: file, stateDir: dir });
    const e = await waitState(dir, name, 'sleeping', 5000);
    assert.equal(e.pid, before.pid);
    // The next start wakes it (the same process) instead of starting another.
    assert.equal((await yard(['start', name, '--wait'], { stateDir: dir })).code, 0);
    const back = await entry(dir, name);
    assert.equal(back.state, 'ready');
    assert.equal(back.pid, before.pid);
    assert.equal(enginesNamed(name).length, 1, 'a second engine was started for a sleeping model');
    await d2.stop();
});
