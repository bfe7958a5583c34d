// Bytes from outside that are not valid UTF-8 (an engine's log lines, names given on
// the command line, rows an older daemon stored) reach every JSON answer as U+FFFD,
// never as a dropped answer, a hang or a crash; and a `logs -f` reader that stops
// reading costs the daemon a bounded amount of memory.
import { test } from 'node:test';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import {
    assert,
    YARD_BIN,
    tmpdir,
    writeConfig,
    startDaemon,
    yard,
    ps,
    admin,
    waitFor,
    httpGet,
    httpPost,
    freePort,
} from './lib/harness.mjs';
import { noQuarantineEnv } from './lib/router-helpers.mjs';

const FFFD = '\uFFFD';

/** A daemon with one generic model whose engine is the shell script `script`. */
async function daemonWithScript(script, { extra = '', args = [], env = {} } = {}) {
    const dir = tmpdir();
    const port = await freePort();
    const engine = path.join(dir, 'engine.sh');
    fs.writeFileSync(engine, script, { mode: 0o755 });
    const config = writeConfig(
        dir,
        `listen: 127.0.0.1:${port}\nstart_port: ${20000 + Math.floor(Math.random() * 20000)}\n` +
            `${extra}models:\n  bad:\n    engine: generic\n    cmd: ${JSON.stringify(`sh ${engine}`)}\n` +
            `    restart: never\n    startup_timeout: 120s\n    stop_timeout: 1s\n`
    );
    const d = await startDaemon({ config, stateDir: dir, args, env });
    return { dir, d, port };
}

/** Runs yard with raw byte output (no decoding), for checks of what it prints. */
function yardRaw(args, stateDir) {
    const r = spawnSync(YARD_BIN, args, {
        env: { ...process.env, YARD_STATE_DIR: stateDir },
        timeout: 20000,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Whether buf is valid UTF-8 (TextDecoder with fatal: true refuses anything else). */
function isUtf8(buf) {
    try {
        new TextDecoder('utf-8', { fatal: true }).decode(buf);
        return true;
    } catch {
        return false;
    }
}

// The engine prints a fatal line (CUDA out of memory) holding \xff\xfe, a line with a
// lone \xff, a valid line with two- and three-byte characters, then exits 1 during load.
const FATAL_SCRIPT =
    '#!/bin/sh\n' +
    "printf 'ERROR: CUDA out of memory. \\377\\376 tried to allocate\\n'\n" +
    "printf 'plain \\377 line\\n'\n" +
    "printf 'valid \\303\\251 \\342\\202\\254 line\\n'\n" +
    'sleep 0.3\n' +
    'exit 1\n';

test('an engine fatal line with invalid bytes: start --wait, ps, events, events -f, logs, logs -f and the next request', async () => {
    const { dir, d, port } = await daemonWithScript(FATAL_SCRIPT, {
        args: ['--log-format', 'json'],
    });
    // Followers first, so they see the failure as it happens.
    const eventsF = admin(dir, { cmd: 'events', follow: true }, {
        timeoutMs: 30000,
        until: (l) => l.event && l.event.to === 'failed',
    });
    const logsF = admin(dir, { cmd: 'logs', model: 'bad', follow: true }, {
        timeoutMs: 30000,
        until: (l, all) => all.some((x) => /^plain /.test(x.line || '')),
    });
    // Give both requests time to reach the daemon: a ps round trip after them is
    // answered after theirs (one loop, requests handled as they arrive).
    await ps(dir);

    // start --wait ends with the failure (it hung: the failure could not be encoded).
    const start = await yard(['start', 'bad', '--wait'], { stateDir: dir, timeoutMs: 30000 });
    assert.equal(start.code, 1, `start --wait: code ${start.code}\n${start.stderr}`);
    assert.match(start.stderr, /cannot start 'bad': .*CUDA out of memory/);
    assert.ok(start.stderr.includes(`${FFFD}${FFFD} tried to allocate`), start.stderr);

    // ps shows the reason (the row had none).
    const row = (await ps(dir)).find((e) => e.name === 'bad');
    assert.equal(row.state, 'failed');
    assert.match(row.reason, /CUDA out of memory/);
    assert.ok(row.reason.includes(FFFD), row.reason);
    const table = yardRaw(['ps'], dir);
    assert.equal(table.code, 0);
    assert.ok(isUtf8(table.stdout));
    assert.match(table.stdout.toString(), /failed .*CUDA out of memory/);

    // events shows the failure (it was dropped although the store had it).
    const ev = yardRaw(['events', '--json'], dir);
    assert.equal(ev.code, 0, ev.stderr.toString());
    assert.ok(isUtf8(ev.stdout));
    const events = ev.stdout.toString().trim().split('\n').map((l) => JSON.parse(l));
    const failed = events.find((e) => e.to === 'failed');
    assert.ok(failed, ev.stdout.toString());
    assert.match(failed.reason, /CUDA out of memory/);
    assert.ok(failed.reason.includes(`plain ${FFFD} line`), failed.reason); // the last log lines
    const evText = yardRaw(['events'], dir);
    assert.match(evText.stdout.toString(), /starting -> failed .*CUDA out of memory/);

    // events -f saw it as it happened.
    const followed = await eventsF;
    assert.ok(followed.some((l) => l.event && l.event.to === 'failed' && l.event.reason.includes(FFFD)));

    // logs: every line, invalid bytes as U+FFFD, valid ones byte for byte.
    const logs = yardRaw(['logs', 'bad'], dir);
    assert.equal(logs.code, 0, logs.stderr.toString());
    assert.ok(isUtf8(logs.stdout));
    assert.deepEqual(logs.stdout.toString().split('\n'), [
        `ERROR: CUDA out of memory. ${FFFD}${FFFD} tried to allocate`,
        `plain ${FFFD} line`,
        'valid \u00e9 \u20ac line',
        '',
    ]);
    const followedLines = (await logsF).map((l) => l.line);
    assert.ok(followedLines.includes(`plain ${FFFD} line`), JSON.stringify(followedLines));

    // The next request is answered, and the daemon lives on (it crashed here).
    const r = await httpPost(`http://127.0.0.1:${port}/v1/chat/completions`, {
        model: 'bad',
        messages: [{ role: 'user', content: 'hi' }],
    });
    assert.ok(r.status >= 400, `status ${r.status}`);
    JSON.parse(r.body);
    assert.equal((await httpGet(`http://127.0.0.1:${port}/health`)).status, 200);
    assert.equal(d.exited, false);

    // The JSON log kept the failure line (it was dropped: json_pack refused it).
    await d.stop();
    const lines = d.logText().trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(
        lines.some((o) => /starting -> failed: .*CUDA out of memory/.test(o.msg) && o.msg.includes(FFFD)),
        d.logText()
    );
});

test('a model name that is not UTF-8 on the command line gets a one-line answer', async () => {
    const { dir, d } = await daemonWithScript('#!/bin/sh\nexec sleep 60\n');
    // spawn takes strings; sh makes the byte. \xff is not UTF-8 on its own.
    for (const cmd of ['start', 'logs', 'stop']) {
        const r = spawnSync('sh', ['-c', `exec "$0" ${cmd} "$(printf 'x\\377y')"`, YARD_BIN], {
            env: { ...process.env, YARD_STATE_DIR: dir },
            timeout: 20000,
        });
        assert.equal(r.status, 1, `${cmd}: ${r.stderr}`);
        assert.ok(isUtf8(r.stderr));
        assert.match(r.stderr.toString(), new RegExp(`unknown model 'x${FFFD}y'`), `${cmd}: ${r.stderr}`);
    }
    assert.equal(d.exited, false);
    await d.stop();
});

test('ssh output with invalid bytes in a pod add failure gets a one-line answer', async () => {
    const { dir, d } = await daemonWithScript('#!/bin/sh\nexec sleep 60\n');
    // An "ssh" that fails as a transport failure, its stderr not UTF-8.
    const fake = path.join(dir, 'fake-ssh');
    fs.writeFileSync(
        fake,
        '#!/bin/sh\nprintf "ssh: connect to host \\377\\376: Connection refused\\n" >&2\nexit 255\n',
        { mode: 0o755 }
    );
    // It hung: the error quoting ssh's stderr could not be encoded, so no answer came.
    const r = yardRaw(['pod', 'add', 'p1', '--ssh', `${fake} gpu-host`], dir);
    assert.equal(r.code, 1, r.stderr.toString());
    assert.ok(isUtf8(r.stderr));
    assert.match(
        r.stderr.toString(),
        new RegExp(`cannot reach pod 'p1': ssh: connect to host ${FFFD}${FFFD}: Connection refused`)
    );
    assert.equal(d.exited, false);
    await d.stop();
});

test('a reload refused for a config whose path is not UTF-8 lists its error, not an empty list', async () => {
    const dir = tmpdir();
    const port = await freePort();
    const confDir = Buffer.concat([Buffer.from(`${dir}/c`), Buffer.from([0xff])]);
    fs.mkdirSync(confDir);
    const conf = Buffer.concat([confDir, Buffer.from('/yard.yaml')]);
    const yaml = (extra) =>
        `listen: 127.0.0.1:${port}\nstart_port: ${20000 + Math.floor(Math.random() * 20000)}\n${extra}` +
        `models:\n  m: { engine: generic, cmd: "sleep 60" }\n`;
    fs.writeFileSync(conf, yaml(''));
    fs.mkdirSync(path.join(dir, 'st'), { mode: 0o700 });
    // spawn takes strings; sh makes the byte, and exec leaves yard at the pid we hold.
    const child = spawn(
        'sh',
        ['-c', `exec "$0" serve -c "$(printf '%s/c\\377/yard.yaml' "$1")" --state-dir "$1/st"`, YARD_BIN, dir],
        { stdio: ['ignore', 'ignore', 'pipe'] }
    );
    let log = '';
    child.stderr.on('data', (c) => (log += c));
    const exited = new Promise((r) => child.once('exit', r));
    try {
        await waitFor(() => fs.existsSync(path.join(dir, 'st', 'yard.sock')), { what: `the daemon: ${log}` });
        fs.writeFileSync(conf, yaml('bogus: 1\n'));
        const lines = await admin(path.join(dir, 'st'), { cmd: 'reload' });
        const last = lines[lines.length - 1];
        assert.equal(last.ok, false, JSON.stringify(last));
        // The message quotes the path: its byte became U+FFFD instead of emptying the list.
        assert.equal(last.errors.length, 1, JSON.stringify(last));
        assert.match(last.errors[0], new RegExp(`/c${FFFD}/yard\\.yaml:3:1: unknown key 'bogus'`));
    } finally {
        child.kill('SIGTERM');
        await exited;
    }
});

test('an event an older daemon stored with invalid bytes is shown, not dropped', async (t) => {
    if (spawnSync('sqlite3', ['-version']).status !== 0) {
        t.skip('sqlite3 (the command) is not installed');
        return;
    }
    const { dir, d } = await daemonWithScript('#!/bin/sh\nexec sleep 60\n');
    await d.stop();
    const db = path.join(dir, 'yard.db');
    const cols = spawnSync('sqlite3', [db, 'PRAGMA table_info(events)'], { encoding: 'utf8' }).stdout;
    assert.match(cols, /reason/);
    // A recent time: the history is pruned by age.
    const sql =
        "INSERT INTO events (ts_ms, model, host, from_state, to_state, reason) VALUES " +
        `(${Date.now() - 1000}, 'bad', 'local', 'starting', 'failed', CAST(X'6f6f6d20ff20636f7265' AS TEXT));`;
    const ins = spawnSync('sqlite3', [db, sql], { encoding: 'utf8' });
    assert.equal(ins.status, 0, ins.stderr);
    const d2 = await startDaemon({ config: d.config, stateDir: dir });
    const ev = yardRaw(['events', '--json'], dir);
    assert.equal(ev.code, 0, ev.stderr.toString());
    const events = ev.stdout
        .toString()
        .split('\n')
        .filter((l) => l)
        .map((l) => JSON.parse(l));
    assert.ok(events.some((e) => e.reason === `oom ${FFFD} core`), ev.stdout.toString());
    await d2.stop();
});

/** VmRSS of pid in KiB. */
function rssKiB(pid) {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return Number(m[1]);
}

/** Bytes pid has read so far (read, pread) from /proc/PID/io. */
function readBytes(pid) {
    return Number(/rchar: (\d+)/.exec(fs.readFileSync(`/proc/${pid}/io`, 'utf8'))[1]);
}

// 400 chunks of 650 lines of 101 bytes: 26 MB, paced so that the daemon reads it all.
const FLOOD_BYTES = 400 * 650 * 101;

/** A daemon whose model 'bad' logs one line, waits for DIR/go, floods, then ticks. */
async function floodDaemon() {
    const script =
        '#!/bin/sh\n' +
        'echo "flood engine up"\n' +
        'while [ ! -e "$(dirname "$0")/go" ]; do sleep 0.05; done\n' +
        "line=$(printf '%0100d' 0)\n" +
        'chunk=$(i=0; while [ $i -lt 650 ]; do echo "$line"; i=$((i+1)); done)\n' +
        'i=0; while [ $i -lt 400 ]; do printf \'%s\\n\' "$chunk"; i=$((i+1)); sleep 0.01; done\n' +
        'echo FLOOD-END\n' +
        'while :; do echo tick; sleep 0.1; done\n';
    // log_max_size above the flood: the rotation's own reads would blur the count below.
    const { dir, d } = await daemonWithScript(script, {
        extra: 'log_max_size: 1GiB\n',
        env: noQuarantineEnv(),
    });
    const s = await yard(['start', 'bad'], { stateDir: dir });
    assert.equal(s.code, 0, s.stderr);
    await waitFor(() => fs.readFileSync(path.join(dir, 'logs', 'bad.log'), 'utf8').includes('up'), {
        what: 'the engine to start',
    });
    return { dir, d };
}

/** A `logs -f` follower that reads its first line, then stops reading (a paused pager). */
async function pausedFollower(dir) {
    const sock = net.createConnection(path.join(dir, 'yard.sock'));
    const f = { sock, got: '' };
    await new Promise((resolve) => {
        sock.on('data', (c) => {
            f.got += c.toString('utf8');
            if (f.got.includes('flood engine up')) {
                sock.pause();
                resolve();
            }
        });
        sock.on('error', () => {}); // dropped by the daemon: seen in its log
        sock.write(`${JSON.stringify({ cmd: 'logs', model: 'bad', n: 1, follow: true })}\n`);
    });
    return f;
}

/** Starts the flood and waits until the daemon has read it; returns its RSS growth in KiB. */
async function floodAndMeasure(dir, d) {
    const rss0 = rssKiB(d.pid);
    const read0 = readBytes(d.pid);
    fs.writeFileSync(path.join(dir, 'go'), '');
    await waitFor(() => readBytes(d.pid) - read0 >= FLOOD_BYTES, {
        timeoutMs: 120000,
        intervalMs: 100,
        what: `the daemon to read the ${FLOOD_BYTES}-byte flood`,
    });
    return { rss0, grown: rssKiB(d.pid) - rss0 };
}

test('a logs -f reader that stops reading: memory stays bounded, lines are skipped with a marker', async (t) => {
    const { dir, d } = await floodDaemon();
    const f = await pausedFollower(dir);
    const { rss0, grown } = await floodAndMeasure(dir, d);
    t.diagnostic(`RSS ${rss0} KiB before the flood, grew by ${grown} KiB`);
    // Unbounded, it grows by more than the flood (about 85 MiB); capped, by a few MiB
    // (about 10 under AddressSanitizer, whose shadow memory counts too).
    assert.ok(grown < 24 * 1024, `the daemon's RSS grew by ${grown} KiB for a reader that stopped`);
    assert.match(d.logText(), /a 'logs -f' reader of 'bad' fell \d+ KiB behind; skipping lines/);

    // Reading again: a marker says how many lines were skipped, then lines flow again.
    const sock = f.sock;
    let buf = f.got.slice(f.got.indexOf('flood engine up'));
    const resumed = new Promise((resolve) => {
        sock.removeAllListeners('data');
        sock.on('data', (c) => {
            buf += c.toString('utf8');
            if (/"line":"tick"/.test(buf.slice(buf.indexOf('skipped')))) resolve();
        });
    });
    sock.resume();
    let timer;
    await Promise.race([
        resumed,
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no line after the marker; got ${buf.slice(-500)}`)), 30000);
        }),
    ]);
    clearTimeout(timer);
    const marker = buf
        .split('\n')
        .filter((l) => l.includes('"skipped"'))
        .map((l) => JSON.parse(l))[0];
    assert.ok(marker && marker.skipped > 0, 'a marker line with the count of skipped lines');
    assert.match(marker.line, /^\.\.\. \d+ lines skipped: this reader fell \d+ KiB behind \.\.\.$/);
    sock.destroy();
    await d.stop();
});

test('many logs -f readers that stop reading: past 16 MiB in all, they are dropped', async (t) => {
    const { dir, d } = await floodDaemon();
    const followers = [];
    for (let i = 0; i < 30; i++) followers.push(await pausedFollower(dir));
    const { rss0, grown } = await floodAndMeasure(dir, d);
    t.diagnostic(`RSS ${rss0} KiB before the flood, grew by ${grown} KiB with 30 stopped readers`);
    // 30 readers at their 1 MiB cap would hold 30 MiB; the total stops at 16 MiB.
    assert.ok(grown < 28 * 1024, `the daemon's RSS grew by ${grown} KiB for 30 readers that stopped`);
    const drops = d.logText().match(/dropped a follower of 'bad' that stopped reading: admin clients hold \d+ KiB, more than 16384 KiB/g);
    assert.ok(drops && drops.length >= 14, `${drops ? drops.length : 0} readers dropped`);
    assert.equal(d.exited, false);
    for (const f of followers) f.sock.destroy();
    await d.stop();
});

test('an events -f reader that stops reading misses no event when it reads again', async () => {
    // 60 models whose engines print 10 lines of 4000 bytes and fail: each failure event
    // carries those lines, about 40 KB, so the reader falls more than 1 MiB behind.
    const dir = tmpdir();
    const port = await freePort();
    const engine = path.join(dir, 'engine.sh');
    fs.writeFileSync(
        engine,
        "#!/bin/sh\nl=$(printf '%04000d' 0)\ni=0; while [ $i -lt 10 ]; do echo \"$i $l\"; i=$((i+1)); done\nexit 1\n",
        { mode: 0o755 }
    );
    const N = 60;
    let yaml = `listen: 127.0.0.1:${port}\nmodels:\n`;
    for (let i = 0; i < N; i++) yaml += `  m${i}:\n    engine: generic\n    cmd: "sh ${engine}"\n    restart: never\n`;
    const d = await startDaemon({ config: writeConfig(dir, yaml), stateDir: dir });
    assert.equal((await yard(['start', 'm0', '--wait'], { stateDir: dir })).code, 1);

    // The follower gets the last event (m0's failure), then stops reading.
    const sock = net.createConnection(path.join(dir, 'yard.sock'));
    let buf = '';
    await new Promise((resolve) => {
        sock.on('data', (c) => {
            buf += c.toString('utf8');
            if (buf.includes('\n')) {
                sock.pause();
                resolve();
            }
        });
        sock.write(`${JSON.stringify({ cmd: 'events', n: 1, follow: true })}\n`);
    });
    const firstId = JSON.parse(buf.split('\n')[0]).event.id;

    for (let i = 1; i < N; i++) await admin(dir, { cmd: 'start', model: `m${i}` });
    await waitFor(async () => (await ps(dir)).every((e) => e.state === 'failed'), {
        timeoutMs: 60000,
        what: 'every model to fail',
    });
    const lastId = Math.max(
        ...yardRaw(['events', '--json', '-n', '5'], dir)
            .stdout.toString()
            .split('\n')
            .filter((l) => l)
            .map((l) => JSON.parse(l).id)
    );

    // Reading again: every event after the first one, in order, none skipped.
    const ids = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`got ${buf.length} bytes, not event ${lastId}`)), 30000);
        const have = () => {
            const got = buf
                .split('\n')
                .filter((l) => l.startsWith('{'))
                .map((l) => {
                    try {
                        return JSON.parse(l).event.id;
                    } catch {
                        return null; // the last line, still arriving
                    }
                })
                .filter((x) => x !== null);
            if (got.includes(lastId)) {
                clearTimeout(timer);
                resolve(got);
            }
        };
        sock.removeAllListeners('data');
        sock.on('data', (c) => {
            buf += c.toString('utf8');
            have();
        });
        sock.resume();
    });
    const want = [];
    for (let id = firstId; id <= lastId; id++) want.push(id);
    assert.deepEqual(ids, want);
    sock.destroy();
    await d.stop();
});
