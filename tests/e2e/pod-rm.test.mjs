// `yard pod rm` of a pod that does not answer (docs/pods.md, "Removing a pod"),
// and the reserved name `local`, against a real sshd (lib/sshd.mjs):
//   - two pods reach the sshd through TCP proxies that count connections
//     (each ssh attempt is one: the master died with the proxy's sockets);
//     both proxies then refuse, a start on each fails, and both pods are
//     retried with backoff
//   - `yard pod rm` of one stops its polls at once: while the other pod is
//     tried twice more (so more than one retry interval passed), the removed
//     one is not tried at all
//   - `yard pod add local ...` is refused with the reason, and nothing recorded
// It skips, saying why, when it does not run as root or sshd or ssh is missing.
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { sshdSkipReason, startSshd } from './lib/sshd.mjs';
import { countingProxy } from './lib/proxy.mjs';

const { assert } = h;
const SKIP = sshdSkipReason();
if (SKIP) console.log(`# skipping the pod-rm e2e tests: ${SKIP}`);

test('yard pod rm of an unreachable pod stops its polls; local is reserved', { skip: SKIP || false }, async () => {
    const dir = h.tmpdir('yard-podrm-');
    const sshd = await startSshd();
    const gone = await countingProxy(sshd.port);
    const other = await countingProxy(sshd.port);
    // The proxies are other ports of the same host: its key is pinned for them too.
    const kh = path.join(sshd.dir, 'known_hosts');
    const pinned = fs.readFileSync(kh, 'utf8').split('\n')[0].replace(/^\S+/, '');
    for (const p of [gone, other]) fs.appendFileSync(kh, `[127.0.0.1]:${p.port}${pinned}\n`);
    const port = await h.freePort();
    const model = (pod) => `    engine: generic\n    cmd: "sleep 600"\n    pod: ${pod}\n    restart: never\n`;
    const config = h.writeConfig(
        dir,
        `listen: 127.0.0.1:${port}\nmodels:\n  g:\n${model('gone')}  o:\n${model('other')}`
    );
    const d = await h.startDaemon({ config, stateDir: dir });
    const yard = (...args) => h.yard(args, { stateDir: dir });
    try {
        const r = await yard('pod', 'add', 'local', '--ssh', sshd.sshCmd);
        assert.equal(r.code, 1);
        assert.equal(r.stderr, "yard: 'local' is reserved for this machine; name the pod differently\n");

        for (const [name, proxy] of [['gone', gone], ['other', other]]) {
            const a = await yard('pod', 'add', name, '--ssh', sshd.cmdForPort(proxy.port));
            assert.equal(a.code, 0, a.stderr);
        }
        const pods = await h.yardJson(['pod', 'ls', '--json'], { stateDir: dir });
        assert.deepEqual(pods.map((p) => p.name).sort(), ['gone', 'other']);

        // Both stop answering; a start on each finds out, and the pods are retried.
        gone.break();
        other.break();
        for (const m of ['g', 'o']) assert.notEqual((await yard('start', m, '--wait')).code, 0);
        await h.waitFor(() => gone.count >= 2 && other.count >= 2, {
            timeoutMs: 20000,
            what: 'both pods retried',
        });

        const rm = await yard('pod', 'rm', 'gone', '--force');
        assert.equal(rm.code, 0, rm.stderr);
        const atRm = gone.count;
        const otherAtRm = other.count;
        // Two more tries of the other pod: more than one retry interval went by.
        await h.waitFor(() => other.count >= otherAtRm + 2, {
            timeoutMs: 30000,
            what: "the other pod's next two tries",
        });
        assert.equal(gone.count, atRm, 'the removed pod was tried again');
        assert.match(d.logText(), /removed pod 'gone'/);
    } finally {
        await d.stop();
        await gone.close();
        await other.close();
        await sshd.proc.stop();
    }
});
