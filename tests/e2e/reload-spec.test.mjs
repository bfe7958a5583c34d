// Reload compares what a running engine would be started with (docs/sup.md,
// "Reload"): the expanded argv, with the arguments the engine adapter adds
// (vLLM's --enable-sleep-mode for a model that sleeps), the env, cwd and host.
//   - a reload that changes nothing, or only what applies under a running
//     engine (ttl), keeps its process
//   - switching a running vLLM model to eviction { weights: offload } restarts
//     it with --enable-sleep-mode, and `yard sleep` then works
import { test } from 'node:test';
import fs from 'node:fs';
import {
    assert,
    MOCK_ENGINE_BIN,
    tmpdir,
    writeConfig,
    startDaemon,
    yard,
    ps,
    waitFor,
    waitState,
    pidAlive,
    cmdlineOf,
    freePort,
} from './lib/harness.mjs';

const CMD = `${MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME} --load-time 100ms`;

test('reload restarts an engine whose argv changes with its eviction, and keeps one that does not', async () => {
    const dir = tmpdir();
    const port = await freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    const head = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\ndefaults: { stop_timeout: 2s }\n`;
    const model = (extra) => `models:\n  m:\n    engine: vllm\n    cmd: ${JSON.stringify(CMD)}\n${extra}`;
    const file = writeConfig(dir, head + model(''));
    const d = await startDaemon({ config: file, stateDir: dir });
    try {
        assert.equal((await yard(['start', 'm', '--wait'], { stateDir: dir })).code, 0);
        const first = (await ps(dir)).find((e) => e.name === 'm');
        assert.ok(!cmdlineOf(first.pid).includes('--enable-sleep-mode'));

        // Each reload logs one line; the n-th one is how the test knows it happened.
        const reloads = () => (d.logText().match(/reloaded .*: kept \[/g) || []).length;
        const reload = async (text) => {
            const n = reloads();
            fs.writeFileSync(file, text);
            d.kill('SIGHUP');
            await waitFor(() => reloads() > n, { what: 'the reload' });
            return d.logText().split('\n').filter((l) => /reloaded /.test(l)).pop();
        };

        // Nothing changes, then only ttl: the process stays.
        let line = await reload(head + model(''));
        assert.match(line, /kept \[m\] restarted \[\]/);
        line = await reload(head + model('    ttl: 1h\n'));
        assert.match(line, /kept \[m\] restarted \[\]/);
        let now = (await ps(dir)).find((e) => e.name === 'm');
        assert.equal(now.state, 'ready');
        assert.equal(now.pid, first.pid, 'an unchanged engine was restarted');

        // Sleeping in place needs the engine started in sleep mode: a new process.
        line = await reload(head + model('    ttl: 1h\n    eviction: { weights: offload }\n'));
        assert.match(line, /kept \[\] restarted \[m\]/);
        now = await waitFor(
            async () => {
                const e = (await ps(dir)).find((x) => x.name === 'm');
                return e && e.state === 'ready' && e.pid !== first.pid ? e : null;
            },
            { what: "'m' restarted" }
        );
        assert.ok(!pidAlive(first.pid));
        assert.ok(cmdlineOf(now.pid).includes('--enable-sleep-mode'), cmdlineOf(now.pid).join(' '));
        // Only the argv the eviction adds changed, and the restart's events say so.
        const ev = await yard(['events', '--json', 'm'], { stateDir: dir });
        const stopping = ev.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.to === 'stopping');
        assert.equal(stopping.pop()?.reason, 'config changed: eviction', ev.stdout);
        const s = await yard(['sleep', 'm'], { stateDir: dir });
        assert.equal(s.code, 0, s.stderr);
        const slept = await waitState(dir, 'm', 'sleeping', 10000);
        assert.equal(slept.pid, now.pid);

        // offload -> discard: the same argv (--enable-sleep-mode either way), the same process.
        line = await reload(head + model('    ttl: 1h\n    eviction: { weights: discard }\n'));
        assert.match(line, /kept \[m\] restarted \[\]/);
        assert.equal((await ps(dir)).find((e) => e.name === 'm').pid, now.pid);
    } finally {
        await d.stop();
    }
});
