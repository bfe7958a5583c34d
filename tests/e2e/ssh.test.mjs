// runner/ssh against a real OpenSSH server: the transport for pods (docs/pods.md).
//
// The file starts its own sshd on 127.0.0.1 (as root, generated host and client
// keys, authorized_keys and pid file in a temp dir) and drives the executor
// through build/ssh-exec-driver (tests/e2e/tools/ssh_exec_driver.c):
//   - a script that succeeds (stdout captured), one that exits 3 (a command
//     failure with its stderr, not a transport failure), `set -euo pipefail`
//   - the probe, a hostile value echoed back intact through the remote shell
//   - the second command goes over the same ControlMaster (socket, `ssh -O check`,
//     same master pid), and the redacted invocation names no key path
//   - a host key that does not match, a timeout, and sshd stopped: transport
//     failures, told apart from a command failure
// It skips, saying why, when sshd or ssh is missing or it does not run as root.

import { test, after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as h from './lib/harness.mjs';
import { sshdSkipReason, startSshd, sshControl } from './lib/sshd.mjs';

const { assert } = h;
const DRIVER = path.join(path.dirname(h.YARD_BIN), 'ssh-exec-driver');

function skipReason() {
    const why = sshdSkipReason();
    if (why) return why;
    if (!fs.existsSync(DRIVER)) return `'${DRIVER}' not built (make)`;
    return null;
}

const SKIP = skipReason();
if (SKIP) console.log(`# skipping the ssh e2e tests: ${SKIP}`);

let sshd = null;
let env = null; // { dir, port, sshCmd, badHostCmd }
const masters = []; // [stateDir, pod, sshCmd] whose master is stopped at the end

/** Runs the driver; returns its JSON answer with out/errout decoded. */
function drive(stateDir, pod, sshCmd, mode, ...args) {
    const r = spawnSync(DRIVER, [stateDir, pod, sshCmd, mode, ...args], {
        env: { ...process.env, YARD_E2E_MARKER: h.MARKER },
        timeout: 60000,
    });
    assert.equal(r.status, 0, `driver failed: ${r.stderr}`);
    if (mode === 'text') return r.stdout.toString().trimEnd();
    const res = JSON.parse(r.stdout.toString());
    res.out = Buffer.from(res.out_hex, 'hex');
    res.errout = Buffer.from(res.errout_hex, 'hex').toString('utf8');
    return res;
}

const control = (res, sshCmd, op) => sshControl(res.control_path, sshCmd, op);

function stopMaster(stateDir, pod, sshCmd) {
    const ctl = path.join(stateDir, 'ssh', `${pod}.sock`);
    if (fs.existsSync(ctl)) control({ control_path: ctl }, sshCmd, 'exit');
}

after(async () => {
    for (const [stateDir, pod, sshCmd] of masters) stopMaster(stateDir, pod, sshCmd);
    if (sshd) await sshd.stop();
});

test('ssh transport against a real sshd', { skip: SKIP || false }, async (t) => {
    env = await startSshd();
    sshd = env.proc;
    const stateDir = h.tmpdir('yard-st-');
    const run = (mode, ...args) => drive(stateDir, 'gpu1', env.sshCmd, mode, ...args);
    masters.push([stateDir, 'gpu1', env.sshCmd]);

    await t.test('the probe reaches the pod', () => {
        const r = run('probe');
        assert.equal(r.status, 'ok', r.describe);
        assert.equal(r.out.toString(), '__YARD_OK__');
        assert.equal(r.verdict, 0);
    });

    await t.test('a script that succeeds: stdout captured', () => {
        const r = run('exec', 'echo hello; echo "$((6 * 7))"; echo to-stderr >&2');
        assert.equal(r.status, 'ok', r.describe);
        assert.equal(r.exit_code, 0);
        assert.equal(r.out.toString(), 'hello\n42\n');
        assert.equal(r.errout, 'to-stderr\n');
    });

    await t.test('the second command reuses the ControlMaster', () => {
        const first = run('exec', 'true');
        assert.equal(first.control_path, path.join(stateDir, 'ssh', 'gpu1.sock'));
        assert.ok(fs.statSync(first.control_path).isSocket(), 'the control socket exists');
        const c1 = control(first, env.sshCmd, 'check');
        assert.equal(c1.status, 0, c1.stderr);
        const pid1 = /pid=(\d+)/.exec(c1.stderr)?.[1];
        assert.ok(pid1, `master pid in '${c1.stderr}'`);
        const second = run('exec', 'echo again');
        assert.equal(second.status, 'ok', second.describe);
        const c2 = control(second, env.sshCmd, 'check');
        assert.equal(c2.status, 0, c2.stderr);
        assert.equal(/pid=(\d+)/.exec(c2.stderr)?.[1], pid1, 'the same master serves both');
        // only the master logged a session: sshd saw one publickey authentication
        const accepted = sshd.logText().match(/Accepted publickey/g) || [];
        assert.equal(accepted.length, 1, sshd.logText());
    });

    await t.test('a script that exits 3 is a command failure, stderr kept', () => {
        const r = run('exec', 'echo partial; echo "no such model" >&2; exit 3');
        assert.equal(r.status, 'command', r.describe);
        assert.equal(r.exit_code, 3);
        assert.equal(r.err, 0);
        assert.equal(r.out.toString(), 'partial\n');
        assert.equal(r.errout, 'no such model\n');
        assert.equal(r.describe, "command on pod 'gpu1' exited 3: no such model");
        assert.equal(r.verdict, -71); // -EPROTO: it ran, it is not the probe's answer
    });

    await t.test('scripts run under set -euo pipefail', () => {
        let r = run('exec', 'false | true; echo not-reached');
        assert.equal(r.status, 'command');
        assert.equal(r.out.toString(), '');
        r = run('exec', 'echo "$UNSET_VARIABLE_X"; echo not-reached');
        assert.equal(r.status, 'command');
        assert.match(r.errout, /UNSET_VARIABLE_X: unbound variable/);
        r = run('exec', 'printf %s "$-"');
        assert.match(r.out.toString(), /e/);
    });

    await t.test('hostile values come back intact through the remote shell', () => {
        const canary = path.join(env.dir, 'canary');
        const values = [
            "it's",
            "'; touch " + canary + "; '",
            `$(touch ${canary})`,
            `\`touch ${canary}\``,
            `; touch ${canary}`,
            `a\nb\ntouch ${canary}\n`,
            '  spaces  and\ttabs ',
            '',
            '$HOME ${PATH} \\ " * ~ !x #c',
            'h\u00e9llo \u2603 \u6f22\u5b57',
            '-n',
        ];
        // one remote script prints each value, then a NUL
        const r = run('echo', ...values);
        assert.equal(r.status, 'ok', r.describe);
        const want = Buffer.concat(values.map((v) => Buffer.from(`${v}\0`, 'utf8')));
        assert.deepEqual(r.out, want);
        assert.equal(fs.existsSync(canary), false, 'nothing ran');
    });

    await t.test('the logged invocation redacts the key path', () => {
        const text = run('text', 'echo hi');
        assert.ok(text.includes('-i <redacted>'), text);
        assert.ok(!text.includes('client_key'), text);
        assert.ok(text.includes('-o BatchMode=yes'), text);
        assert.ok(text.includes(`-S ${path.join(stateDir, 'ssh', 'gpu1.sock')}`), text);
    });

    await t.test('a host key that does not match is a transport failure', () => {
        const st = h.tmpdir('yard-st-');
        masters.push([st, 'badhost', env.badHostCmd]);
        const r = drive(st, 'badhost', env.badHostCmd, 'exec', 'exit 3');
        assert.equal(r.status, 'transport', r.describe);
        assert.equal(r.exit_code, -1);
        assert.match(r.errout, /Host key verification failed/);
        assert.match(r.describe, /^cannot reach pod 'badhost': /);
    });

    await t.test('a timeout is a transport failure', () => {
        const r = run('exec', 'sleep 2', '300');
        assert.equal(r.status, 'transport', r.describe);
        assert.equal(r.err, -110); // -ETIMEDOUT
        assert.match(r.describe, /^pod 'gpu1' did not answer within \d+ ms$/);
    });

    await t.test('sshd stopped: a transport failure, not a command failure', async () => {
        const ctl = path.join(stateDir, 'ssh', 'gpu1.sock');
        const ex = control({ control_path: ctl }, env.sshCmd, 'exit');
        assert.equal(ex.status, 0, ex.stderr);
        await h.waitFor(() => !fs.existsSync(ctl), { timeoutMs: 5000, what: 'master gone' });
        await sshd.stop();
        let r = run('exec', 'exit 3');
        assert.equal(r.status, 'transport', r.describe);
        assert.equal(r.err, -111); // -ECONNREFUSED
        assert.equal(r.exit_code, -1);
        assert.match(r.describe, /^cannot reach pod 'gpu1': .*Connection refused/);
        r = run('probe');
        assert.equal(r.status, 'transport');
        assert.equal(r.verdict, -113); // -EHOSTUNREACH: unreachable, not broken
        assert.equal(fs.existsSync(ctl), false, 'no master left behind');
    });
});
