// The state directory is the daemon's own: one owned by another user or
// writable by others is refused before anything is written in it; links
// planted in it (yard.lock, yard.db, logs/NAME.log, its .1) are never written
// through; the single-daemon lock holds when yard.lock is deleted under a
// running daemon; and only a stale socket is removed from yard.sock's place.
// Some cases chown a directory to another user: they need root.
import { test } from 'node:test';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
    assert,
    MOCK_ENGINE_BIN,
    tmpdir,
    writeConfig,
    startDaemon,
    yard,
    ps,
    freePort,
    waitFor,
} from './lib/harness.mjs';

const NAME = `sd${process.pid}`;

/** A config in its own directory, so the state dir starts empty. */
async function config() {
    const port = await freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    const yaml =
        `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n` +
        `defaults: { stop_timeout: 2s }\nmodels:\n` +
        `  ${NAME}:\n    engine: vllm\n` +
        `    cmd: ${MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME}\n`;
    return writeConfig(tmpdir('yard-cfg-'), yaml);
}

/** A file outside the state dir that nothing may write: its content and mtime. */
function victim(content = 'precious\n') {
    const file = path.join(tmpdir('yard-victim-'), 'victim');
    fs.writeFileSync(file, content, { mode: 0o644 });
    const past = new Date(Date.now() - 3600 * 1000);
    fs.utimesSync(file, past, past);
    return { file, content, mtimeMs: fs.statSync(file).mtimeMs };
}

function assertUntouched(v) {
    assert.equal(fs.readFileSync(v.file, 'utf8'), v.content, `${v.file} was written`);
    assert.equal(fs.statSync(v.file).mtimeMs, v.mtimeMs, `${v.file} was modified`);
}

function nobodyUid() {
    const line = fs
        .readFileSync('/etc/passwd', 'utf8')
        .split('\n')
        .find((l) => l.startsWith('nobody:'));
    return line ? Number(line.split(':')[2]) : 65534;
}

function requireRoot() {
    if (process.getuid() !== 0)
        assert.fail('this test needs root: it gives a directory to another user (chown nobody)');
}

test('a state dir writable by others (0777) is refused; nothing is written in it', async () => {
    const file = await config();
    const dir = tmpdir();
    fs.chmodSync(dir, 0o777);
    const r = await yard(['serve', '-c', file, '--state-dir', dir], { timeoutMs: 10000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /is writable by other users \(mode 777\).*chmod go-w/);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line, got:\n${r.stderr}`);
    assert.deepEqual(fs.readdirSync(dir), []);
});

test('a group-writable logs/ under the state dir is refused', async () => {
    const file = await config();
    const dir = tmpdir();
    fs.mkdirSync(path.join(dir, 'logs'));
    fs.chmodSync(path.join(dir, 'logs'), 0o775);
    const r = await yard(['serve', '-c', file, '--state-dir', dir], { timeoutMs: 10000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /logs' is writable by its group \(mode 775\)/);
    assert.deepEqual(fs.readdirSync(dir), ['logs']);
});

test('a state dir owned by another user is refused', async () => {
    requireRoot();
    const file = await config();
    const dir = tmpdir();
    const uid = nobodyUid();
    fs.chownSync(dir, uid, uid);
    const r = await yard(['serve', '-c', file, '--state-dir', dir], { timeoutMs: 10000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`belongs to uid ${uid}, not to this user`));
    assert.deepEqual(fs.readdirSync(dir), []);
});

test('a logs/ owned by another user is refused', async () => {
    requireRoot();
    const file = await config();
    const dir = tmpdir();
    const logs = path.join(dir, 'logs');
    fs.mkdirSync(logs, { mode: 0o700 });
    fs.chownSync(logs, nobodyUid(), nobodyUid());
    const r = await yard(['serve', '-c', file, '--state-dir', dir], { timeoutMs: 10000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /logs' belongs to uid \d+, not to this user/);
});

test('yard.lock planted as a link to a victim file: refused, the victim is not written', async () => {
    const file = await config();
    const dir = tmpdir();
    const v = victim();
    fs.symlinkSync(v.file, path.join(dir, 'yard.lock'));
    const r = await yard(['serve', '-c', file, '--state-dir', dir], { timeoutMs: 10000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /yard\.lock' is a symbolic link; yard does not write through links/);
    assertUntouched(v);
});

test('yard.db planted as a link to an empty file: refused, the file does not become a database', async () => {
    const file = await config();
    const dir = tmpdir();
    const v = victim('');
    fs.symlinkSync(v.file, path.join(dir, 'yard.db'));
    const r = await yard(['serve', '-c', file, '--state-dir', dir], { timeoutMs: 10000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /yard\.db' is a symbolic link; yard does not write through links/);
    assertUntouched(v);
});

test('logs/NAME.log planted as a link: the start fails with the reason, the victim is untouched', async () => {
    const file = await config();
    const dir = tmpdir();
    const d = await startDaemon({ config: file, stateDir: dir });
    try {
        const v = victim();
        fs.symlinkSync(v.file, path.join(dir, 'logs', `${NAME}.log`));
        const r = await yard(['start', NAME, '--wait'], { stateDir: dir });
        assert.notEqual(r.code, 0);
        assert.match(r.stdout + r.stderr, /log file '.*\.log' is a symbolic link/);
        const e = (await ps(dir)).find((x) => x.name === NAME);
        assert.equal(e.state, 'failed');
        assert.match(JSON.stringify(e), /is a symbolic link/);
        assertUntouched(v);
    } finally {
        await d.stop();
    }
});

test('logs/NAME.log.1 planted as a link: rotation does not write through it', async () => {
    const dir = tmpdir();
    const port = await freePort();
    const script =
        'i=0; while [ $i -lt 3000 ]; do echo "line $i padding padding padding padding"; i=$((i+1)); done; exec sleep 60';
    const file = writeConfig(
        tmpdir('yard-cfg-'),
        `listen: 127.0.0.1:${port}\nlog_max_size: 16KiB\nmodels:\n  chatty:\n    engine: generic\n` +
            `    cmd: ${JSON.stringify(`sh -c '${script}'`)}\n    startup_timeout: 60s\n` +
            `    stop_timeout: 1s\n`
    );
    const d = await startDaemon({ config: file, stateDir: dir });
    try {
        const v = victim();
        fs.symlinkSync(v.file, path.join(dir, 'logs', 'chatty.log.1'));
        await yard(['start', 'chatty'], { stateDir: dir });
        const changed = () => fs.readFileSync(v.file, 'utf8') !== 'precious\n';
        await waitFor(() => changed() || /cannot rotate '.*chatty\.log'/.test(d.logText()), {
            timeoutMs: 15000,
            what: 'a refused rotation in the daemon log',
        });
        assertUntouched(v);
        assert.ok(fs.lstatSync(path.join(dir, 'logs', 'chatty.log.1')).isSymbolicLink());
    } finally {
        await d.stop();
    }
});

test('yard.lock deleted under a running daemon: a second daemon is still refused', async () => {
    const file = await config();
    const dir = tmpdir();
    const d = await startDaemon({ config: file, stateDir: dir });
    try {
        const sockIno = fs.statSync(d.sock).ino;
        fs.unlinkSync(path.join(dir, 'yard.lock'));
        // another port, so nothing but the lock stands in the second daemon's way
        const listen = `127.0.0.1:${await freePort()}`;
        const r = await yard(['serve', '-c', file, '--state-dir', dir, '--listen', listen], {
            timeoutMs: 10000,
        });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /another daemon \(pid [\d?]+\) already uses state dir/);
        // the first daemon still serves on its own socket
        assert.equal(fs.statSync(d.sock).ino, sockIno, 'the admin socket was replaced');
        const p = await yard(['ps'], { stateDir: dir });
        assert.equal(p.code, 0, p.stderr);
        assert.ok(!d.exited, 'the first daemon exited');
    } finally {
        await d.stop();
    }
});

test('a file that is not a socket at yard.sock is refused, not removed', async () => {
    const file = await config();
    const dir = tmpdir();
    const sock = path.join(dir, 'yard.sock');
    fs.writeFileSync(sock, 'not a socket\n', { mode: 0o600 });
    const r = await yard(['serve', '-c', file, '--state-dir', dir], { timeoutMs: 10000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /yard\.sock' exists and is not a socket; remove it/);
    assert.equal(fs.readFileSync(sock, 'utf8'), 'not a socket\n');
});

test('a socket something answers on at yard.sock is left alone: the daemon refuses', async () => {
    const file = await config();
    const dir = tmpdir();
    const sock = path.join(dir, 'yard.sock');
    const srv = net.createServer((c) => c.end());
    await new Promise((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(sock, resolve);
    });
    try {
        const r = await yard(['serve', '-c', file, '--state-dir', dir], { timeoutMs: 10000 });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /another daemon answers on '.*yard\.sock'/);
        assert.ok(fs.statSync(sock).isSocket(), 'the socket was removed');
    } finally {
        await new Promise((resolve) => srv.close(resolve));
    }
});
