// Durable state under a disk that fails: a start that cannot be recorded is not
// made (a full state disk, a database another process holds locked, a database
// corrupted under the daemon), a stop that cannot be recorded is recorded once
// it can and never reported as an exit while no daemon ran; disk use is bounded
// (an engine flooding its log, the event log); a model removed by reload drains.
//
// The full-disk tests mount a small tmpfs as the state directory: they need root,
// and fail (not skip) without it.
import { test, after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
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
    processesMatching,
    freePort,
    httpPost,
} from './lib/harness.mjs';
import {
    chatBody,
    assertOpenAIError,
    openStream,
    mockText,
    chatStreamText,
    tcpAccepts,
} from './lib/router-helpers.mjs';

const mock = (flavor, extra = '') =>
    `${MOCK_ENGINE_BIN} --flavor ${flavor} --port \${PORT} --name \${NAME} ${extra}`.trim();

// Unique names: engines are found by their --name among every process of the machine.
const uniq = (n) => `${n}${process.pid}`;
const enginesNamed = (name) =>
    processesMatching(`--name\u0000${name}\u0000`).filter((p) => pidAlive(p));
const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);

/** Every event the store holds, oldest first (`yard events --json`: one object a line). */
async function eventsOf(stateDir) {
    const r = await yard(['events', '--json', '-n', '1000000'], { stateDir });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l));
}

/** A config in its own directory (not the state dir, which may be full). */
async function configFor(models, top = '') {
    const dir = tmpdir();
    const port = await freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n${top}`;
    yaml += `defaults: { stop_timeout: 2s, startup_timeout: 30s }\nmodels:\n`;
    for (const [name, body] of Object.entries(models)) yaml += `  ${name}: ${JSON.stringify(body)}\n`;
    return { file: writeConfig(dir, yaml), base: `http://127.0.0.1:${port}`, port, dir, yaml };
}

async function daemonOn(stateDir, cfg) {
    const d = await startDaemon({ config: cfg.file, stateDir });
    await waitFor(() => tcpAccepts(cfg.port), { timeoutMs: 5000, what: 'yard listening' });
    return d;
}

// ---------------------------------------------------------------- a small disk

const mounts = [];
after(() => {
    // YARD_E2E_KEEP=1 keeps them to look at (umount -l DIR afterwards).
    if (process.env.YARD_E2E_KEEP !== '1') for (const m of mounts) spawnSync('umount', ['-l', m]);
});

function needRoot(what) {
    if (typeof process.getuid !== 'function' || process.getuid() !== 0)
        assert.fail(`${what} mounts a tmpfs and needs root; run the e2e tier as root`);
}

/** A fresh tmpfs of sizeKiB mounted on a new directory (mode 0700, as a state dir is). */
function smallDisk(sizeKiB) {
    needRoot('this test');
    const dir = tmpdir('yard-disk-');
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKiB}k,mode=0700`, 'tmpfs', dir], {
        encoding: 'utf8',
    });
    if (r.status !== 0) assert.fail(`cannot mount a tmpfs on ${dir}: ${r.stderr || r.error}`);
    mounts.push(dir);
    return dir;
}

/** Fills the file system holding dir to the brim; returns the filler's path. */
function fillDisk(dir) {
    const file = path.join(dir, 'filler');
    const fd = fs.openSync(file, 'w');
    for (const size of [1 << 20, 64 << 10, 4096, 512]) {
        const buf = Buffer.alloc(size);
        try {
            for (;;) fs.writeSync(fd, buf);
        } catch (err) {
            if (err.code !== 'ENOSPC') throw err;
        }
    }
    fs.closeSync(fd);
    return file;
}

/**
 * The full-disk tests' setup: a daemon running models on a fresh 16 MiB tmpfs as its state
 * directory, each model of `running` started (and ready), then the disk filled to the brim.
 * Returns { state, cfg, d, pids: each started model's engine pid, taken before the disk
 * filled, filler: the filler's path (unlink it to make room) }.
 */
async function daemonOnFullDisk(models, running) {
    const state = smallDisk(16 * 1024);
    const cfg = await configFor(models);
    const d = await daemonOn(state, cfg);
    for (const n of running) assert.equal((await yard(['start', n, '--wait'], { stateDir: state })).code, 0);
    const pids = {};
    for (const n of running) pids[n] = (await entry(state, n)).pid;
    return { state, cfg, d, pids, filler: fillDisk(state) };
}

/** The one line the CLI printed, for a refused start. */
function oneLine(r) {
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
    return lines[0];
}

async function assertRefused(stateDir, cfg, name, why, wait = false) {
    const r = await yard(['start', name, ...(wait ? ['--wait'] : [])], { stateDir });
    assert.equal(r.code, 1, `yard start succeeded: ${r.stdout}${r.stderr}`);
    const line = oneLine(r);
    assert.match(line, new RegExp(`cannot start '${name}'.*state database .*cannot be written`));
    if (why) assert.match(line, why);
    assert.equal(enginesNamed(name).length, 0, 'an engine was started that is not recorded');
    assert.equal((await entry(stateDir, name)).state, 'stopped');

    const res = await httpPost(`${cfg.base}/v1/chat/completions`, chatBody(name));
    assert.equal(res.status, 503, res.body);
    const e = assertOpenAIError(res.body);
    assert.equal(e.code, 'state_unwritable');
    assert.ok(Number(res.headers['retry-after']) > 0, 'no Retry-After');
    assert.equal(enginesNamed(name).length, 0, 'a request started an engine that is not recorded');
}

test('a full state disk: a start is refused, not made; what runs keeps serving; with room it starts, once', async () => {
    const run = uniq('run'), m = uniq('m');
    const { state, cfg, d, filler } = await daemonOnFullDisk(
        {
            [run]: { engine: 'vllm', cmd: mock('vllm', '--load-time 50ms') },
            [m]: { engine: 'vllm', cmd: mock('vllm', '--load-time 50ms') },
        },
        [run]
    );
    await assertRefused(state, cfg, m, /No space left on device/);
    // A second try (waiting for it) is refused the same way: nothing was left half done.
    await assertRefused(state, cfg, m, /No space left on device/, true);
    const ok = await httpPost(`${cfg.base}/v1/chat/completions`, chatBody(run));
    assert.equal(ok.status, 200, 'the running model stopped serving on a full disk');
    assert.ok(pidAlive(d.pid));

    fs.unlinkSync(filler);
    assert.equal((await yard(['start', m, '--wait'], { stateDir: state })).code, 0);
    const started = await entry(state, m);
    d.kill('SIGKILL');
    await d.waitExit(5000);
    const d2 = await daemonOn(state, cfg);
    const res = await httpPost(`${cfg.base}/v1/chat/completions`, chatBody(m));
    assert.equal(res.status, 200);
    assert.equal((await entry(state, m)).pid, started.pid, 'the recorded engine was not adopted');
    assert.equal(enginesNamed(m).length, 1, 'a second copy was started');
    await d2.stop();
    assert.equal(enginesNamed(m).length + enginesNamed(run).length, 0);
});

test('a stop on a full disk: never reported as an exit while no daemon ran; recorded once there is room', async () => {
    const a = uniq('a'), b = uniq('b');
    const full = await daemonOnFullDisk(
        {
            [a]: { engine: 'vllm', cmd: mock('vllm', '--load-time 50ms') },
            [b]: { engine: 'sglang', cmd: mock('sglang', '--load-time 50ms') },
        },
        [a, b]
    );
    const { state, cfg, d } = full;
    const pa = full.pids[a];
    let filler = full.filler;
    assert.equal((await yard(['stop', a, b], { stateDir: state })).code, 0);
    assert.ok(!pidAlive(pa));
    assert.equal((await entry(state, a)).state, 'stopped');

    // Room again while it runs: the daemon records what it could not.
    fs.unlinkSync(filler);
    await waitFor(
        async () => {
            const r = await eventsOf(state);
            return r.some((e) => e.model === b && e.to === 'stopped');
        },
        { timeoutMs: 10000, what: `'${b}' stopped recorded late` }
    );
    // Full again, a new run of 'a', stopped, and the daemon killed before it can record it.
    assert.equal((await yard(['start', a, '--wait'], { stateDir: state })).code, 0);
    const pa2 = (await entry(state, a)).pid;
    filler = fillDisk(state);
    assert.equal((await yard(['stop', a], { stateDir: state })).code, 0);
    assert.ok(!pidAlive(pa2));
    d.kill('SIGKILL');
    await d.waitExit(5000);
    fs.unlinkSync(filler);

    const d2 = await daemonOn(state, cfg);
    const ea = await entry(state, a);
    const eb = await entry(state, b);
    assert.equal(ea.state, 'stopped');
    assert.equal(eb.state, 'stopped');
    assert.doesNotMatch(ea.reason, /exited while no daemon/);
    assert.match(ea.reason, /last recorded ready/);
    assert.doesNotMatch(eb.reason, /no daemon/);
    assert.equal(enginesNamed(a).length + enginesNamed(b).length, 0);
    await d2.stop();
});

test('a crash on a full disk: the automatic restart is refused until there is room, then made once', async () => {
    const m = uniq('crash');
    const { state, cfg, d, pids, filler } = await daemonOnFullDisk(
        {
            [m]: {
                engine: 'vllm',
                cmd: mock('vllm', '--load-time 50ms --fail crash-after:0'),
                restart: 'on-failure',
            },
        },
        [m]
    );
    const first = pids[m];
    await httpPost(`${cfg.base}/v1/chat/completions`, chatBody(m)).catch(() => null);
    await waitFor(() => !pidAlive(first), { what: 'the engine to crash' });
    // Restarts come after 1 s of backoff: watch through a few of them.
    const t0 = Date.now();
    while (Date.now() - t0 < 3500) {
        assert.equal(enginesNamed(m).length, 0, 'a restart started an engine it could not record');
        await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal((await entry(state, m)).state, 'failed');

    fs.unlinkSync(filler);
    const again = await waitState(state, m, 'ready', 15000);
    assert.notEqual(again.pid, first);
    assert.equal(enginesNamed(m).length, 1);
    d.kill('SIGKILL');
    await d.waitExit(5000);
    const d2 = await daemonOn(state, cfg);
    assert.equal((await waitState(state, m, 'ready', 5000)).pid, again.pid, 'the restart was not recorded');
    assert.equal(enginesNamed(m).length, 1);
    await d2.stop();
});

test('a sleep on a full disk is refused: the engine stays awake and serving, and sleeps once there is room', async () => {
    const m = uniq('nap');
    const { state, cfg, d, pids, filler } = await daemonOnFullDisk(
        { [m]: { engine: 'vllm', cmd: mock('vllm', '--load-time 50ms'), eviction: { weights: 'offload' } } },
        [m]
    );
    const pid = pids[m];
    const r = await yard(['sleep', m], { stateDir: state });
    assert.equal(r.code, 1, `the sleep was made: ${r.stdout}`);
    assert.match(oneLine(r), new RegExp(`cannot sleep '${m}'`));
    assert.equal((await entry(state, m)).state, 'ready');
    // Awake for real: the mock vLLM answers 500 and exits if a request reaches it asleep.
    const ok = await httpPost(`${cfg.base}/v1/chat/completions`, chatBody(m));
    assert.equal(ok.status, 200, ok.body);

    fs.unlinkSync(filler);
    const r2 = await yard(['sleep', m], { stateDir: state });
    assert.equal(r2.code, 0, r2.stderr);
    const e = await entry(state, m);
    assert.equal(e.state, 'sleeping');
    assert.equal(e.pid, pid);
    await d.stop();
});

test('a sleep refused on a full disk says why, in one line: the database, the full disk, what to do', async () => {
    const m = uniq('why');
    const { state, d, filler } = await daemonOnFullDisk(
        { [m]: { engine: 'vllm', cmd: mock('vllm', '--load-time 50ms'), eviction: { weights: 'offload' } } },
        [m]
    );
    const r = await yard(['sleep', m], { stateDir: state });
    assert.equal(r.code, 1, `the sleep was made: ${r.stdout}`);
    // Not just "cannot sleep 'm': ready": the reason the daemon had, whole.
    const db = `${state}/yard.db`.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    assert.match(
        oneLine(r),
        new RegExp(`^yard: cannot sleep '${m}': the state database '${db}' cannot be written ` +
            `\\(No space left on device\\).*; free space on its disk, then try again$`),
    );
    assert.equal((await entry(state, m)).state, 'ready');

    // A wake of a model that is awake says so, writes nothing, and is no failure.
    const w = await yard(['wake', m], { stateDir: state });
    assert.equal(w.code, 0, w.stderr);
    assert.equal(w.stdout, `'${m}' is already ready\n`);

    fs.unlinkSync(filler);
    assert.equal((await yard(['sleep', m], { stateDir: state })).code, 0);
    await d.stop();
});

test('yard events on an unreadable store says so in one line; events -f, pin and logs too', async () => {
    const state = tmpdir();
    const run = uniq('urun');
    const cfg = await configFor({ [run]: { engine: 'vllm', cmd: mock('vllm', '--load-time 50ms') } });
    const d = await daemonOn(state, cfg);
    assert.equal((await yard(['start', run, '--wait'], { stateDir: state })).code, 0);
    assert.ok((await eventsOf(state)).length > 0, 'no events before the damage');

    const junk = (n) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 131 + 7) & 0xff));
    for (const f of ['yard.db', 'yard.db-wal', 'yard.db-shm']) {
        const p = path.join(state, f);
        const size = fs.existsSync(p) ? fs.statSync(p).size : 0;
        const fd = fs.openSync(p, 'r+');
        fs.writeSync(fd, junk(Math.max(size, 8192)), 0, Math.max(size, 8192), 0);
        fs.closeSync(fd);
    }
    const db = `'${state}/yard.db'`;
    const ev = await yard(['events'], { stateDir: state });
    assert.equal(ev.code, 1, `events printed: ${ev.stdout}`);
    assert.equal(ev.stdout, '');
    const line = oneLine(ev);
    assert.ok(line.startsWith(`yard: cannot read the events: the state database ${db} `), line);
    assert.match(line, /may be damaged; .*move the file and its -wal aside/);

    // A follower is told, and ends, instead of waiting on a store it cannot read.
    const f = await yard(['events', '-f'], { stateDir: state, timeoutMs: 10000 });
    assert.equal(f.signal, null, 'events -f hung on an unreadable store');
    assert.equal(f.code, 1);
    assert.ok(oneLine(f).startsWith(`yard: cannot read the events: the state database ${db}`));

    const pin = await yard(['pin', run], { stateDir: state });
    assert.equal(pin.code, 1, `pinned: ${pin.stdout}`);
    assert.ok(oneLine(pin).startsWith(`yard: cannot pin '${run}': the state database ${db}`));

    // What does not need the store still answers.
    assert.equal((await yard(['logs', run], { stateDir: state })).code, 0);
    assert.equal((await entry(state, run)).state, 'ready');
    assert.ok(pidAlive(d.pid), 'the daemon died');
    await d.stop();
});

test('a database another process holds locked: a start is refused, and made once the lock is gone', async () => {
    const state = tmpdir();
    const run = uniq('lrun'), m = uniq('lm');
    const cfg = await configFor({
        [run]: { engine: 'vllm', cmd: mock('vllm', '--load-time 50ms') },
        [m]: { engine: 'vllm', cmd: mock('vllm', '--load-time 50ms') },
    });
    const d = await daemonOn(state, cfg);
    assert.equal((await yard(['start', run, '--wait'], { stateDir: state })).code, 0);

    const which = spawnSync('sqlite3', ['-version'], { encoding: 'utf8' });
    assert.equal(which.status, 0, "this test needs the 'sqlite3' command (Debian package sqlite3)");
    const holder = spawn('sqlite3', [path.join(state, 'yard.db')], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
        let out = '';
        holder.stdout.on('data', (c) => (out += c));
        holder.stdin.write("BEGIN IMMEDIATE;\nSELECT 'locked';\n");
        await waitFor(() => out.includes('locked'), { what: 'sqlite3 holding the write lock' });

        await assertRefused(state, cfg, m, /busy\).*holds it locked: end that process/i);
        const ok = await httpPost(`${cfg.base}/v1/chat/completions`, chatBody(run));
        assert.equal(ok.status, 200);

        holder.stdin.end('ROLLBACK;\n.quit\n');
        await new Promise((r) => holder.once('exit', r));
    } finally {
        if (holder.exitCode === null) holder.kill('SIGKILL');
    }
    assert.equal((await yard(['start', m, '--wait'], { stateDir: state })).code, 0);
    assert.equal(enginesNamed(m).length, 1);
    await d.stop();
});

test('a database corrupted under the running daemon: a start is refused; the daemon stays up and serves', async () => {
    const state = tmpdir();
    const run = uniq('crun'), m = uniq('cm');
    const cfg = await configFor({
        [run]: { engine: 'vllm', cmd: mock('vllm', '--load-time 50ms') },
        [m]: { engine: 'vllm', cmd: mock('vllm', '--load-time 50ms') },
    });
    const d = await daemonOn(state, cfg);
    assert.equal((await yard(['start', run, '--wait'], { stateDir: state })).code, 0);

    // Overwrite the database, its log and its index with junk: SQLite must read them again.
    const junk = (n) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 131 + 7) & 0xff));
    for (const f of ['yard.db', 'yard.db-wal', 'yard.db-shm']) {
        const p = path.join(state, f);
        const size = fs.existsSync(p) ? fs.statSync(p).size : 0;
        const fd = fs.openSync(p, 'r+');
        fs.writeSync(fd, junk(Math.max(size, 8192)), 0, Math.max(size, 8192), 0);
        fs.closeSync(fd);
    }
    await assertRefused(state, cfg, m);
    const ok = await httpPost(`${cfg.base}/v1/chat/completions`, chatBody(run));
    assert.equal(ok.status, 200);
    // The CLI still answers from the daemon's memory; events say they cannot be read.
    assert.equal((await entry(state, run)).state, 'ready');
    const ev = await yard(['events'], { stateDir: state });
    assert.ok(pidAlive(d.pid), `the daemon died: ${ev.stderr}`);
    await d.stop();
    assert.equal(enginesNamed(run).length, 0);
});

// ---------------------------------------------------------------- bounded disk use

test('an engine flooding its log: the log and its .1 stay within twice log_max_size', async (t) => {
    const state = tmpdir();
    const name = uniq('flood');
    const chunk = path.join(tmpdir(), 'chunk.txt');
    fs.writeFileSync(chunk, `${'x'.repeat(99)}\n`.repeat(1280)); // 128 KiB of lines
    // The engine serves (so it is ready) while a loop writes its log, at most 128 KiB per 2 ms
    // (64 MB/s) whatever the machine: the rate of the example, not a machine's cat speed.
    const cmd = `sh -c "while :; do cat ${chunk}; sleep 0.002; done & exec ${mock('vllm', '--load-time 50ms')}"`;
    const cap = 16 << 20;
    const cfg = await configFor({ [name]: { engine: 'vllm', cmd } }, 'log_max_size: 16MiB\n');
    const d = await daemonOn(state, cfg);
    assert.equal((await yard(['start', name, '--wait'], { stateDir: state })).code, 0);
    const log = path.join(state, 'logs', `${name}.log`);
    const size = (p) => {
        try {
            return fs.statSync(p).size;
        } catch {
            return 0;
        }
    };
    // Until the flood has written four caps' worth (the bound is what is measured, not a time).
    let most = 0, samples = 0, written = 0, last = 0;
    const t0 = Date.now();
    while (written < 4 * cap && Date.now() - t0 < 30000) {
        most = Math.max(most, size(log) + size(`${log}.1`));
        samples++;
        await new Promise((r) => setTimeout(r, 5));
        const cur = size(log);
        written += cur >= last ? cur - last : cur;
        last = cur;
    }
    assert.ok(written >= 4 * cap, `the flood wrote only ${written} bytes; no flood to test`);
    assert.ok(most <= 2 * cap, `log + .1 reached ${most} bytes (cap ${cap}) over ${samples} samples`);
    t.diagnostic(`flood of ${(written / 1048576).toFixed(0)} MiB: log + .1 peaked at ${(most / cap).toFixed(2)}x the cap`);
    assert.match(d.logText(), /writes its log faster than yard reads it/);
    await d.stop();
    assert.equal(enginesNamed(name).length, 0);
});

test('the event log is bounded by events.keep and events.max_age, and the keys are checked', async () => {
    const state = tmpdir();
    const name = uniq('ev');
    const models = { [name]: { engine: 'vllm', cmd: mock('vllm') } };
    const cfg = await configFor(models);
    const d = await daemonOn(state, cfg);
    for (let i = 0; i < 3; i++) {
        assert.equal((await yard(['start', name, '--wait'], { stateDir: state })).code, 0);
        assert.equal((await yard(['stop', name], { stateDir: state })).code, 0);
    }
    await d.stop();
    const all = await (async () => {
        const d1 = await daemonOn(state, cfg);
        const r = await eventsOf(state);
        await d1.stop();
        return r;
    })();
    assert.ok(all.length >= 12, `only ${all.length} events`);

    // A daemon with a smaller bound prunes at start, keeping the newest.
    const small = await configFor(models, 'events: { keep: 5, max_age: 7d }\n');
    const d2 = await daemonOn(state, small);
    const kept = await waitFor(
        async () => {
            const r = await eventsOf(state);
            return r.length <= 5 ? r : null;
        },
        { timeoutMs: 5000, what: 'events pruned to 5' }
    );
    assert.equal(kept.at(-1).id, Math.max(...kept.map((e) => e.id)));
    assert.ok(kept[0].id > all[0].id);
    await d2.stop();

    // And by age: everything is older than a second a moment later.
    const young = await configFor(models, 'events: { keep: 100, max_age: 1s }\n');
    const t = Date.now();
    await waitFor(() => Date.now() - t > 1100, { what: 'a second to pass' });
    const d3 = await daemonOn(state, young);
    await waitFor(
        async () => (await eventsOf(state)).length === 0,
        { timeoutMs: 5000, what: 'old events pruned' }
    );
    await d3.stop();

    for (const [bad, what] of [
        ['events: { keep: 0 }\n', /events\.keep/],
        ['events: { max_age: 10ms }\n', /events\.max_age.*too short/],
        ['events: { kept: 5 }\n', /unknown key 'kept'/],
    ]) {
        const c = await configFor(models, bad);
        const r = await yard(['check', '-c', c.file]);
        assert.equal(r.code, 2, `${bad} passed yard check`);
        assert.match(r.stdout + r.stderr, /yard\.yaml:\d+:\d+: /);
        assert.match(r.stdout + r.stderr, what);
    }
});

// ---------------------------------------------------------------- reload

test('a model removed by reload drains: its stream in flight finishes whole, then it stops', async () => {
    const state = tmpdir();
    const keep = uniq('keep'), gone = uniq('gone');
    const models = {
        [keep]: { engine: 'vllm', cmd: mock('vllm') },
        [gone]: { engine: 'vllm', cmd: mock('vllm', '--tokens-per-sec 20') },
    };
    const cfg = await configFor(models);
    const d = await daemonOn(state, cfg);
    assert.equal((await yard(['start', gone, '--wait'], { stateDir: state })).code, 0);
    const pid = (await entry(state, gone)).pid;

    const s = await openStream(
        `${cfg.base}/v1/chat/completions`,
        chatBody(gone, { stream: true, max_tokens: 30 })
    );
    assert.equal(s.status, 200);
    await s.waitFor((text) => text.includes('tok2 '));

    const head = cfg.yaml.split('models:')[0];
    fs.writeFileSync(cfg.file, `${head}models:\n  ${keep}: ${JSON.stringify(models[keep])}\n`);
    d.kill('SIGHUP');
    await waitFor(() => /reloaded/.test(d.logText()), { what: 'the reload' });
    // New requests for it are refused at once; the one in flight goes on.
    const late = await httpPost(`${cfg.base}/v1/chat/completions`, chatBody(gone));
    assert.equal(late.status, 404, late.body);

    const r = await s.done;
    assert.ok(r.complete, 'the stream was cut');
    const events = s.events();
    assert.equal(chatStreamText(events), mockText(30));
    assert.equal(events.at(-1).data, '[DONE]');
    await waitFor(() => !pidAlive(pid), { timeoutMs: 10000, what: 'the removed model stopped' });
    await waitFor(async () => !(await entry(state, gone)), { what: 'the removed model forgotten' });
    await d.stop();
});
