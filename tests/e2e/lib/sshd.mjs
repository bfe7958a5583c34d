// A real OpenSSH server on 127.0.0.1 (or on another address, in a network
// namespace) for tests that reach a "pod": generated host and client keys,
// authorized_keys, a pinned known_hosts and the pid file in a temp dir, plus
// `keyEnv`: variables set in every session of the client key (authorized_keys
// environment="..." with PermitUserEnvironment), e.g. a PATH that puts a
// stand-in nvidia-smi first. A second key, plain_key, logs in without them.

import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as h from './harness.mjs';

const { assert } = h;
export const SSHD = '/usr/sbin/sshd';

function which(cmd) {
    return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

/** Why a test that needs sshd cannot run here, or null. */
export function sshdSkipReason() {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'not running as root';
    if (!fs.existsSync(SSHD)) return `'${SSHD}' not installed (apt-get install openssh-server)`;
    if (!which('ssh') || !which('ssh-keygen')) return "'ssh' or 'ssh-keygen' not in PATH";
    return null;
}

function keygen(file) {
    const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file], {
        encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
}

function tcpAccepts(host, port) {
    return h.httpProbe(`http://${host}:${port}/`).then((r) => r.error !== 'ECONNREFUSED');
}

/** known_hosts names a host on port 22 bare and any other port as [host]:port. */
function knownHostsName(host, port) {
    return port === 22 ? host : `[${host}]:${port}`;
}

/**
 * Starts sshd; resolves { dir, host, port, proc, sshCmd, plainCmd, badHostCmd, cmdForPort(port),
 * restart() }.
 * sshCmd logs in as root with the client key (and keyEnv) and known_hosts;
 * plainCmd with plain_key (no keyEnv); badHostCmd with a known_hosts that pins
 * another host key (verification must fail); cmdForPort builds sshCmd for
 * another port. restart() starts sshd again (same port, keys and config) after
 * proc.stop(), and sets proc to the new process.
 *
 * host and port: where it listens (default 127.0.0.1 and a free port). netns: the
 * name of a network namespace (`ip netns`) to run it in, where host is one of that
 * namespace's addresses; the namespace is the caller's to make and remove.
 */
export async function startSshd({ keyEnv = {}, host = '127.0.0.1', port, netns } = {}) {
    const dir = h.tmpdir('yard-sshd-');
    if (port === undefined) port = await h.freePort();
    keygen(path.join(dir, 'host_key'));
    keygen(path.join(dir, 'client_key'));
    keygen(path.join(dir, 'plain_key'));
    const opts = Object.entries(keyEnv)
        .map(([k, v]) => `environment="${k}=${v}"`)
        .join(',');
    const pub = (name) => fs.readFileSync(path.join(dir, `${name}.pub`), 'utf8').trim();
    fs.writeFileSync(
        path.join(dir, 'authorized_keys'),
        `${opts ? `${opts} ` : ''}${pub('client_key')}\n${pub('plain_key')}\n`,
    );
    fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // privilege separation dir
    const config = path.join(dir, 'sshd_config');
    fs.writeFileSync(
        config,
        [
            `ListenAddress ${host}`,
            `HostKey ${dir}/host_key`,
            `PidFile ${dir}/sshd.pid`,
            'PermitRootLogin prohibit-password',
            `AuthorizedKeysFile ${dir}/authorized_keys`,
            'StrictModes no',
            'UsePAM no',
            'PasswordAuthentication no',
            'KbdInteractiveAuthentication no',
            'PermitUserEnvironment yes',
            '',
        ].join('\n'),
    );
    const hostPub = fs.readFileSync(path.join(dir, 'host_key.pub'), 'utf8').trim().split(' ');
    fs.writeFileSync(
        path.join(dir, 'known_hosts'),
        `${knownHostsName(host, port)} ${hostPub[0]} ${hostPub[1]}\n`,
    );
    keygen(path.join(dir, 'other_key'));
    const otherPub = fs.readFileSync(path.join(dir, 'other_key.pub'), 'utf8').trim().split(' ');
    fs.writeFileSync(
        path.join(dir, 'bad_hosts'),
        `${knownHostsName(host, port)} ${otherPub[0]} ${otherPub[1]}\n`,
    );
    const sshdArgs = ['-D', '-e', '-f', config, '-p', String(port)];
    const launch = async (logName) => {
        // `ip netns exec` execs sshd in place: the pid tracked is sshd's.
        const p = netns
            ? h.startProcess('ip', ['netns', 'exec', netns, SSHD, ...sshdArgs], {
                  logPath: path.join(dir, logName),
                  name: 'sshd',
              })
            : h.startProcess(SSHD, sshdArgs, { logPath: path.join(dir, logName), name: 'sshd' });
        await h.waitFor(
            async () => {
                if (p.exited) throw h.fatal(`sshd exited: ${p.logText()}`);
                return (await tcpAccepts(host, port)) && p.logText().includes('listening');
            },
            { timeoutMs: 10000, what: `sshd listening on ${host}:${port}` },
        );
        return p;
    };
    const proc = await launch('sshd.log');
    let restarts = 0;
    const cmdFor = (p, key) =>
        `ssh -F /dev/null -p ${p} -i ${dir}/${key} -o IdentitiesOnly=yes ` +
        `-o UserKnownHostsFile=${dir}/known_hosts root@${host}`;
    return {
        dir,
        host,
        port,
        proc,
        sshCmd: cmdFor(port, 'client_key'),
        plainCmd: cmdFor(port, 'plain_key'),
        badHostCmd:
            `ssh -F /dev/null -p ${port} -i ${dir}/client_key -o IdentitiesOnly=yes ` +
            `-o UserKnownHostsFile=${dir}/bad_hosts root@${host}`,
        cmdForPort: (p) => cmdFor(p, 'client_key'),
        async restart() {
            restarts += 1;
            this.proc = await launch(`sshd-${restarts}.log`);
            return this.proc;
        },
    };
}

/** `ssh -S CONTROL -O op` with a pod's ssh command line: { status, stderr }. */
export function sshControl(controlPath, sshCmd, op) {
    const words = sshCmd.split(' ');
    const r = spawnSync(words[0], ['-S', controlPath, '-O', op, ...words.slice(1)], {
        encoding: 'utf8',
        timeout: 20000,
    });
    return { status: r.status, stderr: r.stderr };
}
