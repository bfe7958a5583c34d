// `yard pod setup NAME` against a real OpenSSH server (docs/pods.md, "Setup").
//
// The file starts its own sshd on 127.0.0.1 (lib/sshd.mjs), a daemon whose
// config has `pods:` with a setup script per pod, records the pods, and checks:
//   - the output streams as it comes (the script waits for a file that the test
//     creates only once it has read the first line), in order, then the outcome
//   - setup_file (relative to the config's directory) works, and a script far
//     longer than a command line may be (stdin, not argv)
//   - a failing script: its output, then "failed: exited 3" and exit 1
//   - `set -u` and `pipefail` apply to the script
//   - hostile script content runs as the script says: quotes and $(...) inside
//     the script are the script's own, and nothing else runs (canary files)
//   - a pod not recorded, and a recorded pod with no setup: one-line errors
//   - Ctrl-C of the CLI kills ssh, and the remote script ends with it
//   - --timeout stops a script that runs too long
//   - an unreachable pod (sshd stopped): "cannot reach pod" with ssh's message
// It skips, saying why, when it does not run as root or sshd or ssh is missing.

import { test } from 'node:test';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { sshdSkipReason, startSshd, sshControl } from './lib/sshd.mjs';

const { assert } = h;

const SKIP = sshdSkipReason();
if (SKIP) console.log(`# skipping the pod setup e2e tests: ${SKIP}`);

/** YAML block scalar of text, indented for `      setup: |`. */
function block(text) {
    return `|\n${text
        .split('\n')
        .map((l) => `      ${l}`)
        .join('\n')}\n`;
}

/** Runs `yard ARGS` and hands each stdout line to onLine as it comes. */
function yardStreaming(args, stateDir, onLine) {
    const child = spawn(h.YARD_BIN, args, {
        env: { ...process.env, YARD_STATE_DIR: stateDir },
        stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let pending = '';
    child.stdout.setEncoding('utf8').on('data', (c) => {
        stdout += c;
        pending += c;
        let nl;
        while ((nl = pending.indexOf('\n')) >= 0) {
            onLine(pending.slice(0, nl));
            pending = pending.slice(nl + 1);
        }
    });
    child.stderr.setEncoding('utf8').on('data', (c) => (stderr += c));
    const done = new Promise((resolve) => {
        child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    });
    return { child, done };
}

test('yard pod setup against a real sshd', { skip: SKIP || false }, async (t) => {
    const sshd = await startSshd();
    const dir = h.tmpdir('yard-pod-setup-');
    const port = await h.freePort();
    const go = path.join(dir, 'go');
    const canary = path.join(dir, 'canary');
    // 300 KiB: more than one argument of a command line may hold (128 KiB)
    const long = `${'# padding padding padding padding padding padding padding\n'.repeat(5300)}echo long script ran\n`;
    fs.mkdirSync(path.join(dir, 'scripts'));
    fs.writeFileSync(path.join(dir, 'scripts', 'long.sh'), long);
    const hostile = [
        `printf '%s\\n' '$(touch ${canary}-1)' "it's" '\`touch ${canary}-2\`' '; touch ${canary}-3'`,
        `echo "a'b\\"c"`,
        `x='$(touch ${canary}-4)'; echo "$x"`,
        `cat <<'EOF'`,
        `$(touch ${canary}-5) '\\'' done`,
        `EOF`,
    ].join('\n');
    const config = h.writeConfig(
        dir,
        [
            `listen: 127.0.0.1:${port}`,
            'models:',
            '  a:',
            '    engine: vllm',
            '    cmd: "x --port ${PORT}"',
            'pods:',
            '  stream:',
            `    setup: ${block(
                `echo first\nfor i in $(seq 1 400); do [ -e ${go} ] && break; sleep 0.05; done\n` +
                    `[ -e ${go} ]\necho second\necho third >&2\necho fourth`,
            )}`,
            '  long:',
            '    setup_file: scripts/long.sh',
            '  fail:',
            `    setup: ${block('echo before\nexit 3\necho never')}`,
            '  unset:',
            `    setup: ${block('echo start\necho "$NOT_SET_ANYWHERE"\necho never')}`,
            '  pipe:',
            `    setup: ${block('false | cat\necho never')}`,
            '  hostile:',
            `    setup: ${block(hostile)}`,
            '  slow:',
            `    setup: ${block('echo started\nfor i in $(seq 1 600); do echo tick; sleep 0.1; done')}`,
            '',
        ].join('\n'),
    );
    const d = await h.startDaemon({ config, stateDir: dir });
    const yard = (...args) => h.yard(args, { stateDir: dir });
    const pods = ['stream', 'long', 'fail', 'unset', 'pipe', 'hostile', 'slow', 'nosetup'];
    try {
        for (const pod of pods) {
            const r = await yard('pod', 'add', pod, '--ssh', sshd.sshCmd);
            assert.equal(r.code, 0, `${pod}: ${r.stderr}`);
        }

        await t.test('the output streams as it comes, in order, then the outcome', async () => {
            const seen = [];
            const run = yardStreaming(['pod', 'setup', 'stream'], dir, (line) => {
                seen.push(line);
                if (line === 'first') fs.writeFileSync(go, '');
            });
            const r = await run.done;
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.stderr, '');
            assert.deepEqual(seen.slice(0, 4), ['first', 'second', 'third', 'fourth']);
            assert.equal(seen.length, 5, r.stdout);
            assert.match(seen[4], /^setup of pod 'stream' finished in \d+\.\d s$/);
        });

        await t.test('setup_file, and a script longer than a command line', async () => {
            const r = await yard('pod', 'setup', 'long');
            assert.equal(r.code, 0, r.stderr);
            assert.match(r.stdout, /^long script ran\nsetup of pod 'long' finished in /);
        });

        await t.test("a failing script: its output, then its exit code", async () => {
            const r = await yard('pod', 'setup', 'fail');
            assert.equal(r.code, 1);
            assert.equal(r.stdout, 'before\n');
            assert.equal(r.stderr, "yard: setup of pod 'fail' failed: exited 3\n");
        });

        await t.test('set -u and pipefail apply', async () => {
            let r = await yard('pod', 'setup', 'unset');
            assert.equal(r.code, 1);
            assert.match(r.stdout, /^start\n.*NOT_SET_ANYWHERE: unbound variable\n$/);
            assert.equal(r.stderr, "yard: setup of pod 'unset' failed: exited 1\n");
            r = await yard('pod', 'setup', 'pipe');
            assert.equal(r.code, 1);
            assert.equal(r.stdout, '');
            assert.equal(r.stderr, "yard: setup of pod 'pipe' failed: exited 1\n");
        });

        await t.test('hostile content runs as the script says, and nothing else', async () => {
            const r = await yard('pod', 'setup', 'hostile');
            assert.equal(r.code, 0, r.stderr);
            const lines = r.stdout.split('\n');
            assert.deepEqual(lines.slice(0, 7), [
                `$(touch ${canary}-1)`,
                "it's",
                `\`touch ${canary}-2\``,
                `; touch ${canary}-3`,
                'a\'b"c',
                `$(touch ${canary}-4)`,
                `$(touch ${canary}-5) '\\'' done`,
            ]);
            const made = fs.readdirSync(dir).filter((f) => f.startsWith('canary'));
            assert.deepEqual(made, [], 'nothing ran that the script did not say');
        });

        await t.test('an unknown pod, and a pod with no setup: one line each', async () => {
            let r = await yard('pod', 'setup', 'nope');
            assert.equal(r.code, 1);
            assert.equal(
                r.stderr,
                "yard: no pod named 'nope'; add it first with 'yard pod add nope --ssh \"ssh ARGS...\"'\n",
            );
            r = await yard('pod', 'setup', 'nosetup');
            assert.equal(r.code, 1);
            assert.match(r.stderr, /^yard: no setup script for pod 'nosetup' in '.*yard\.yaml'; add 'pods: \{ nosetup: \{ setup: \.\.\. \} \}'/);
            assert.equal(r.stderr.trimEnd().split('\n').length, 1);
            r = await yard('pod', 'setup', 'stream', '--timeout', 'soon');
            assert.equal(r.code, 2);
            assert.match(r.stderr, /'--timeout soon' is not a duration/);
        });

        await t.test('Ctrl-C of the cli kills ssh; the remote script ends with it', async () => {
            let started = false;
            const run = yardStreaming(['pod', 'setup', 'slow'], dir, (line) => {
                if (line === 'started') started = true;
            });
            await h.waitFor(() => started, { timeoutMs: 20000, what: 'the script started' });
            assert.ok(h.processesMatching('yard-setup.').length > 0, 'ssh and the script run');
            run.child.kill('SIGINT');
            const r = await run.done;
            assert.equal(r.signal, 'SIGINT');
            await h.waitFor(() => h.processesMatching('yard-setup.').length === 0, {
                timeoutMs: 10000,
                what: 'ssh and the remote script gone',
            });
            assert.match(d.logText(), /the client of the setup of pod 'slow' left: stopping ssh/);
        });

        await t.test('--timeout stops a script that runs too long', async () => {
            // (a session may take a second to open on a busy machine: the output may
            // not have begun when the time is up)
            const r = await yard('pod', 'setup', 'slow', '--timeout', '2500ms');
            assert.equal(r.code, 1);
            assert.match(r.stdout, /^(started\n(tick\n)*)?$/);
            assert.equal(
                r.stderr,
                "yard: setup of pod 'slow' did not finish within 2.5 s and was stopped (the script " +
                    'may still run on the pod); give it longer with --timeout\n',
            );
            await h.waitFor(() => h.processesMatching('yard-setup.').length === 0, {
                timeoutMs: 10000,
                what: 'ssh and the remote script gone',
            });
        });

        await t.test('an unreachable pod: a transport error with ssh\'s message', async () => {
            for (const pod of pods) sshControl(path.join(dir, 'ssh', `${pod}.sock`), sshd.sshCmd, 'exit');
            await sshd.proc.stop();
            const r = await yard('pod', 'setup', 'fail');
            assert.equal(r.code, 1);
            assert.equal(r.stdout, '');
            assert.match(r.stderr, /^yard: cannot reach pod 'fail': ssh: connect to host 127\.0\.0\.1 port \d+: Connection refused\n$/);
        });
    } finally {
        for (const pod of pods) {
            const ctl = path.join(dir, 'ssh', `${pod}.sock`);
            if (fs.existsSync(ctl)) sshControl(ctl, sshd.sshCmd, 'exit');
        }
        if (!d.exited) await d.stop();
        if (!sshd.proc.exited) await sshd.proc.stop();
    }
});
