// `yard serve` under a service manager (docs/service.md): the notify protocol, as
// systemd's NOTIFY_SOCKET receives it, and log lines the journal keeps.
//
// A socket that records the datagrams (tests/e2e/tools/notify_sink.py, with each
// sender's pid) stands in for systemd's. Asserted, in order:
//   - READY=1 (with STATUS=serving N models on HOST:PORT) comes first, sent by the
//     daemon's own pid, when its HTTP port and admin socket already answer
//   - WATCHDOG=1 pings arrive while WATCHDOG_USEC is set and WATCHDOG_PID is the
//     daemon's; with another process's WATCHDOG_PID there are none
//   - a SIGHUP reload is RELOADING=1 (with MONOTONIC_USEC, the time it began) then
//     READY=1 saying it reloaded; a reload of an invalid file says it was refused
//   - SIGTERM gives STOPPING=1, and no ping follows it
// And with JOURNAL_STREAM naming its stderr, each log line starts with the journal's
// "<N>" priority and carries no timestamp of its own; in JSON too.
import { test } from 'node:test';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { mockCmd, tcpAccepts } from './lib/router-helpers.mjs';

const { assert } = h;
const SINK = path.join(h.YARD_SRC_DIR, 'tests/e2e/tools/notify_sink.py');

/** Starts the recording socket at sockPath: { messages, next(pred, what), stop() }. */
async function notifySink(sockPath) {
    const child = spawn('python3', [SINK, sockPath], {
        stdio: ['pipe', 'pipe', 'inherit'],
        env: { ...process.env, YARD_E2E_MARKER: h.MARKER },
    });
    const messages = [];
    let listening = false;
    let buf = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
        buf += chunk;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
            const m = JSON.parse(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
            if (m.listening) listening = true;
            else messages.push(m);
        }
    });
    const exited = new Promise((resolve) => child.on('close', resolve));
    await h.waitFor(() => listening, { what: 'the notify socket to be bound' });
    let seen = 0;
    return {
        messages,
        /** The next message after those already taken that satisfies pred (waits for it). */
        async next(pred, what) {
            return h.waitFor(
                () => {
                    while (seen < messages.length) {
                        const m = messages[seen++];
                        if (pred(m)) return m;
                    }
                    return null;
                },
                { timeoutMs: 15000, what },
            );
        },
        async stop() {
            child.stdin.end();
            await exited;
        },
    };
}

const isState = (name) => (m) => m.fields[name] === '1';
const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

/** A config of n mock models listening on port. */
function configText(port, n) {
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${20000 + Math.floor(Math.random() * 20000)}\n`;
    yaml += 'defaults: { stop_timeout: 2s }\nmodels:\n';
    for (let i = 0; i < n; i++) yaml += `  m${i}: ${JSON.stringify({ engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') })}\n`;
    return yaml;
}

/**
 * Starts `yard serve` with env; watchdogPid 'self' sets WATCHDOG_PID to the
 * daemon's own pid, as systemd does (a shell that execs yard keeps its pid).
 */
function serve(dir, config, env, watchdogPid) {
    const args = ['serve', '-c', config, '--state-dir', dir];
    if (watchdogPid === 'self') {
        return h.startProcess('/bin/sh', ['-c', 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', 'sh', h.YARD_BIN, ...args], {
            env,
            logPath: path.join(dir, 'daemon.log'),
        });
    }
    return h.startProcess(h.YARD_BIN, args, {
        env: { ...env, WATCHDOG_PID: String(watchdogPid) },
        logPath: path.join(dir, 'daemon.log'),
    });
}

test('notify: READY once serving, watchdog pings, RELOADING/READY around SIGHUP, STOPPING at SIGTERM', async () => {
    const dir = h.tmpdir('yard-notify-');
    const sink = await notifySink(path.join(dir, 'notify.sock'));
    const port = await h.freePort();
    const config = h.writeConfig(dir, configText(port, 1));
    const d = serve(dir, config, { NOTIFY_SOCKET: path.join(dir, 'notify.sock'), WATCHDOG_USEC: '300000' }, 'self');
    try {
        const ready = await sink.next(() => true, 'the first datagram');
        // The first word is READY, and by then both sockets answer.
        assert.equal(ready.fields.READY, '1', ready.raw);
        assert.equal(await tcpAccepts(port), true, 'the HTTP port answers at READY');
        assert.equal(await h.socketAccepts(path.join(dir, 'yard.sock')), true, 'the admin socket answers at READY');
        assert.equal(ready.fields.STATUS, `serving 1 model on 127.0.0.1:${port}`);
        assert.equal(ready.pid, d.pid, 'sent by the daemon itself (NotifyAccess=main)');

        // Pings at half of WATCHDOG_USEC, from the daemon.
        for (let i = 0; i < 2; i++) {
            const ping = await sink.next(isState('WATCHDOG'), `watchdog ping ${i + 1}`);
            assert.equal(ping.raw, 'WATCHDOG=1');
            assert.equal(ping.pid, d.pid);
        }
        assert.match(d.logText(), /the service manager watches yard: a ping every 150 ms/);

        // A reload: RELOADING with the time it began, then READY with the new config.
        fs.writeFileSync(config, configText(port, 2));
        const before = monotonicUs();
        d.child.kill('SIGHUP');
        const reloading = await sink.next(isState('RELOADING'), 'RELOADING=1');
        const after = monotonicUs();
        const at = Number(reloading.fields.MONOTONIC_USEC);
        assert.ok(before <= at && at <= after, `MONOTONIC_USEC ${at} within [${before}, ${after}]`);
        assert.equal(reloading.fields.STATUS, `reloading ${config}`);
        const reloaded = await sink.next((m) => !isState('WATCHDOG')(m), 'the datagram after RELOADING');
        assert.equal(reloaded.fields.READY, '1', reloaded.raw);
        assert.equal(reloaded.fields.STATUS, `serving 2 models on 127.0.0.1:${port}; reloaded ${config}`);

        // An invalid file is refused; the manager still hears that yard is ready.
        fs.writeFileSync(config, 'models: [\n');
        d.child.kill('SIGHUP');
        await sink.next(isState('RELOADING'), 'RELOADING=1 of the invalid file');
        const refused = await sink.next((m) => !isState('WATCHDOG')(m), 'the datagram after it');
        assert.equal(refused.fields.READY, '1', refused.raw);
        assert.equal(
            refused.fields.STATUS,
            `serving 2 models on 127.0.0.1:${port}; reload refused: ${config} is invalid (the log says why)`,
        );

        // SIGTERM: STOPPING, and the pings end with it.
        d.child.kill('SIGTERM');
        const stopping = await sink.next((m) => !isState('WATCHDOG')(m), 'STOPPING=1');
        assert.equal(stopping.fields.STOPPING, '1', stopping.raw);
        assert.equal(stopping.fields.STATUS, 'stopping the engines');
        const exit = await d.waitExit(15000);
        assert.deepEqual(exit, { code: 0, signal: null });
        assert.equal(h.sanitizerReport(d.logText()), null);
        await sink.stop();
        const last = sink.messages.indexOf(stopping);
        assert.deepEqual(
            sink.messages.slice(last + 1).map((m) => m.raw),
            [],
            'nothing after STOPPING',
        );
    } finally {
        await d.stop();
        await sink.stop();
    }
});

test("notify: another process's WATCHDOG_PID means no pings for yard", async () => {
    const dir = h.tmpdir('yard-notify-');
    const sink = await notifySink(path.join(dir, 'notify.sock'));
    const port = await h.freePort();
    const config = h.writeConfig(dir, configText(port, 1));
    const d = serve(dir, config, { NOTIFY_SOCKET: path.join(dir, 'notify.sock'), WATCHDOG_USEC: '20000' }, process.pid);
    try {
        const ready = await sink.next(() => true, 'the first datagram');
        assert.equal(ready.fields.READY, '1', ready.raw);
        d.child.kill('SIGHUP');
        await sink.next(isState('RELOADING'), 'RELOADING=1');
        d.child.kill('SIGTERM');
        await sink.next(isState('STOPPING'), 'STOPPING=1');
        assert.deepEqual(await d.waitExit(15000), { code: 0, signal: null });
        assert.equal(h.sanitizerReport(d.logText()), null);
        await sink.stop();
        assert.deepEqual(
            sink.messages.filter(isState('WATCHDOG')),
            [],
            'no ping for a watchdog that watches another process',
        );
        assert.doesNotMatch(d.logText(), /watches yard/);
    } finally {
        await d.stop();
        await sink.stop();
    }
});

test('journal: with JOURNAL_STREAM naming its stderr, lines carry "<N>" and no timestamp', async () => {
    for (const format of ['text', 'json']) {
        const dir = h.tmpdir('yard-journal-');
        // The daemon's stderr file (startDaemon appends to it): its device and inode.
        const errPath = path.join(dir, 'daemon.stderr.log');
        fs.writeFileSync(errPath, '');
        const st = fs.statSync(errPath);
        const port = await h.freePort();
        const config = h.writeConfig(dir, configText(port, 1) + '  m9: { cmd: "true" }\ngroups:\n  g: { members: [] }\n');
        const d = await h.startDaemon({
            config,
            stateDir: dir,
            args: ['--log-format', format],
            env: { JOURNAL_STREAM: `${st.dev}:${st.ino}` },
        });
        await d.stop();
        const lines = d.logText().trimEnd().split('\n');
        assert.ok(lines.length >= 3, d.logText());
        for (const line of lines) assert.match(line, /^<[3467]>/, `${format}: ${line}`);
        if (format === 'text') {
            assert.match(lines.join('\n'), new RegExp(`^<6>info  serve: yard \\S+ \\(pid ${d.pid}\\): 2 models from`, 'm'));
            // A warning is priority 4 (the group without members).
            assert.match(lines.join('\n'), /^<4>warn {2}serve: .*groups\.g\.members: the group has no members/m);
        } else {
            for (const line of lines) {
                const o = JSON.parse(line.slice(3));
                assert.equal(line.slice(0, 3), o.level === 'warn' ? '<4>' : o.level === 'error' ? '<3>' : '<6>');
            }
        }
    }
    // Without it (or when stderr is another file), lines keep their timestamps.
    const dir = h.tmpdir('yard-journal-');
    const port = await h.freePort();
    const config = h.writeConfig(dir, configText(port, 1));
    const d = await h.startDaemon({ config, stateDir: dir, env: { JOURNAL_STREAM: '1:2' } });
    await d.stop();
    assert.match(d.logText(), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info  serve: yard /m);
});
