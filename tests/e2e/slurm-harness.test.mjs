// The Slurm tier's cluster (lib/slurm.mjs) tested alone with real jobs, no daemon:
// a batch job that serves HTTP on its node and says where, squeue's states and
// pending reasons, GRES GPUs as CUDA_VISIBLE_DEVICES, scancel --signal=TERM --full
// reaching every process of a job, a time limit ending a job TIMEOUT (SIGTERM, then
// SIGKILL), finished jobs' state and exit code from scontrol and the jobcomp file,
// and two more clusters at once beside the first, each stopped without touching
// the others. docs/testing.md, "Slurm tier".
//
// It skips, saying why, only where Slurm cannot run here (not root, slurm-wlm or
// munge missing, no mknod). The time-limit job is submitted first and checked
// last, so its minute and a half overlaps the other cases.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { startSlurm, slurmSkipReason } from './lib/slurm.mjs';

const SKIP = slurmSkipReason();
if (SKIP) console.log(`# skipping the Slurm harness tests: ${SKIP}`);

// A job's server: binds a free port on the node, writes "HOST PORT GPUS" to
// OUT.addr (renamed into place, so a reader never sees half a line), answers GET
// with the job id, writes OUT.server-term on SIGTERM and exits; gives up after
// two minutes by itself.
const SERVER_PY = `
import http.server, os, signal, socket, sys
out = sys.argv[1]
signal.alarm(120)
def term(*_):
    with open(out + '.server-term', 'w') as f:
        f.write('TERM\\n')
    os._exit(0)
signal.signal(signal.SIGTERM, term)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ('job %s\\n' % os.environ['SLURM_JOB_ID']).encode()
        self.send_response(200)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *_):
        pass
srv = http.server.HTTPServer(('0.0.0.0', 0), H)
with open(out + '.tmp', 'w') as f:
    f.write('%s %d %s\\n' % (socket.gethostname(), srv.server_address[1],
                             os.environ.get('CUDA_VISIBLE_DEVICES', '-')))
os.rename(out + '.tmp', out + '.addr')
srv.serve_forever()
`;

/** The batch script of a serving job: the server in the background, the shell
 *  waiting for it; SIGTERM to the shell is recorded (OUT.shell-term) and ends the
 *  job with status 0 once the server has gone. A cancel signals every process of
 *  the job, so the server may die of it before the shell's wait is interrupted:
 *  the shell then waits on, for its own SIGTERM (KillWait's SIGKILL ends it
 *  otherwise), instead of ending the job with the server's status. */
function servingJob(out) {
    return [
        '#!/bin/bash',
        `python3 -c "$(cat <<'PY'\n${SERVER_PY}\nPY\n)" ${out} &`,
        'srv=$!',
        `trap 'echo TERM > ${out}.shell-term; wait $srv; exit 0' TERM`,
        'wait $srv',
        'sleep 60 &',
        'wait $!',
        '',
    ].join('\n');
}

function readIf(file) {
    try {
        return fs.readFileSync(file, 'utf8');
    } catch {
        return null;
    }
}

/** Waits for a job's OUT.addr: {host, port, gpus}. */
async function jobAddress(out, what) {
    const line = await h.waitFor(() => readIf(`${out}.addr`), { timeoutMs: 30000, what });
    const [host, port, gpus] = line.trim().split(' ');
    return { host, port: Number(port), gpus };
}

describe('a real single-node Slurm', { skip: SKIP || false }, () => {
    let s;
    let timeoutJob; // {id, out, submitted}

    before(async () => {
        s = await startSlurm({ gpus: 2, maxTime: 5 });
        if (s.skipReason) {
            console.log(`# skipping the Slurm harness tests: ${s.skipReason}`);
            return;
        }
        console.log(`# cluster up in ${s.startupMs} ms (slurmctld :${s.ctldPort}, slurmd :${s.slurmdPort})`);
        // The time-limit job goes first: it runs while the other cases do. It
        // ignores SIGTERM (recording when it came) so the SIGKILL after KillWait
        // ends it.
        const out = path.join(s.dir, 'timeout');
        const id = await s.sbatch(
            ['--time=1', '-J', 'yard-timeout', '-o', `${out}.log`],
            [
                '#!/bin/bash',
                `trap 'date +%s.%N > ${out}.term' TERM`,
                `date +%s.%N > ${out}.start`,
                'while :; do sleep 1; done',
                '',
            ].join('\n')
        );
        timeoutJob = { id, out, submitted: Date.now() };
    });

    // The last case stops the cluster; this is for a run that ends earlier (a
    // failure, --test-name-pattern), before the harness looks for leftovers.
    after(async () => {
        if (s && s.stop) await s.stop();
    });

    const skipped = (t) => {
        if (s && s.skipReason) {
            t.skip(s.skipReason);
            return true;
        }
        return false;
    };

    test('the cluster: one idle node with its GPUs, the partition, clients through env', async (t) => {
        if (skipped(t)) return;
        const node = await s.node();
        assert.equal(node.name, s.nodeName);
        assert.match(node.state, /^(idle|mixed)/);
        assert.equal(node.gres, `gpu:${s.gpus}`);
        // A client with only the harness's env (no inherited SLURM_CONF) reaches it.
        const r = await s.run('sinfo', ['-h', '-o', '%P %l'], { env: {} });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.trim(), `${s.partition}* 5:00`);
        assert.equal(s.env.SLURM_CONF, s.conf);
        assert.ok(fs.existsSync(s.conf));
        for (const f of s.gpuFiles) {
            assert.ok(fs.statSync(f).isCharacterDevice(), `${f} is a character device`);
        }
    });

    test('a job serves HTTP on its node, is RUNNING, and gets a GPU', async (t) => {
        if (skipped(t)) return;
        const outA = path.join(s.dir, 'a');
        const outB = path.join(s.dir, 'b');
        const a = await s.sbatch(['--gres=gpu:1', '-J', 'yard-a', '-o', `${outA}.log`], servingJob(outA));
        const b = await s.sbatch(['--gres=gpu:1', '-J', 'yard-b', '-o', `${outB}.log`], servingJob(outB));
        assert.notEqual(a, b);
        const addrA = await jobAddress(outA, `job ${a} to write its address`);
        const addrB = await jobAddress(outB, `job ${b} to write its address`);
        // Each job serves on its node at the port it chose.
        assert.equal(addrA.host, s.nodeName === 'localhost' ? addrA.host : s.nodeName);
        for (const [id, addr] of [
            [a, addrA],
            [b, addrB],
        ]) {
            const res = await h.httpGet(`http://${addr.host}:${addr.port}/`);
            assert.equal(res.status, 200);
            assert.equal(res.body, `job ${id}\n`);
        }
        // Two gpu:1 jobs at once get the node's two GPUs, one each.
        assert.deepEqual([addrA.gpus, addrB.gpus].sort(), ['0', '1']);
        const q = await s.squeue(['-j', `${a},${b}`]);
        assert.equal(q.length, 2);
        for (const j of q) {
            assert.equal(j.state, 'RUNNING');
            assert.equal(j.nodes, s.nodeName);
            assert.equal(j.timeLimit, '5:00'); // the partition's default time
        }

        // A job that needs both GPUs waits behind them: PENDING, reason Resources
        // (None for the first seconds, until the scheduler has looked at it).
        const outC = path.join(s.dir, 'c');
        const c = await s.sbatch(
            ['--gres=gpu:2', '-J', 'yard-c', '-o', `${outC}.log`],
            `#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES" > ${outC}.gpus\nexit 3\n`
        );
        const pending = await h.waitFor(
            async () => {
                const [j] = await s.squeue(['-j', c]);
                assert.equal(j.state, 'PENDING', `job ${c} should wait for GPUs: ${JSON.stringify(j)}`);
                return j.reason === 'Resources' && j;
            },
            { timeoutMs: 30000, intervalMs: 250, what: `job ${c} to be PENDING with reason Resources` }
        );
        assert.equal(pending.nodes, '');

        // scancel --signal=TERM --full: the batch shell and the server it started
        // both get SIGTERM; the script then exits 0, so the job is COMPLETED.
        const r = await s.scancel(['--signal=TERM', '--full', a]);
        assert.equal(r.code, 0, r.stderr);
        const doneA = await s.waitJob(a, 'COMPLETED', { timeoutMs: 30000 });
        assert.equal(readIf(`${outA}.shell-term`), 'TERM\n');
        assert.equal(readIf(`${outA}.server-term`), 'TERM\n');
        assert.equal(doneA.ExitCode, '0:0');
        assert.ok((await h.httpProbe(`http://${addrA.host}:${addrA.port}/`)).error, 'job a stopped serving');

        // Plain scancel of b: CANCELLED, though its shell caught the SIGTERM and
        // exited 0 (the exit code is the script's). Then c gets both GPUs, runs,
        // and fails.
        assert.equal((await s.scancel([b])).code, 0);
        await s.waitJob(b, 'CANCELLED', { timeoutMs: 30000 });
        // slurmctld says CANCELLED as it takes the cancel; the shell's trap runs as
        // the signal lands, and the record is final once the step is done.
        await h.waitFor(() => readIf(`${outB}.shell-term`) === 'TERM\n', {
            timeoutMs: 15000,
            what: `job ${b}'s shell to record its SIGTERM`,
        });
        const doneB = await s.waitJob(b, 'CANCELLED', { timeoutMs: 30000 });
        assert.equal(doneB.ExitCode, '0:0');
        const doneC = await s.waitJob(c, 'FAILED', { timeoutMs: 30000 });
        assert.equal(readIf(`${outC}.gpus`), '0,1\n');
        assert.equal(doneC.ExitCode, '3:0');
        assert.equal(doneC.Reason, 'NonZeroExitCode');
        assert.equal(doneC.NodeList, s.nodeName);

        // Finished jobs stay listed (MinJobAge) and are in the jobcomp file.
        const all = await s.squeue(['-t', 'all', '-j', `${a},${b},${c}`]);
        assert.deepEqual(
            all.map((j) => [j.id, j.state]).sort(),
            [
                [a, 'COMPLETED'],
                [b, 'CANCELLED'],
                [c, 'FAILED'],
            ].sort()
        );
        const comp = await h.waitFor(
            () => {
                const recs = s.jobcomp().filter((x) => [a, b, c].includes(x.JobId));
                return recs.length === 3 && recs;
            },
            { timeoutMs: 10000, what: 'three jobcomp records' }
        );
        assert.deepEqual(
            Object.fromEntries(comp.map((x) => [x.JobId, `${x.JobState} ${x.ExitCode}`])),
            { [a]: 'COMPLETED 0:0', [b]: 'CANCELLED 0:0', [c]: 'FAILED 3:0' }
        );
        assert.deepEqual(await s.jobPids().filter((p) => h.cmdlineOf(p)?.join(' ').includes('python3')), []);
    });

    test('a job over a time limit that is not the partition\'s waits with its reason', async (t) => {
        if (skipped(t)) return;
        // sbatch accepts it; it never runs.
        const id = await s.sbatch(['--time=30', '-J', 'yard-long', '-o', '/dev/null'], '#!/bin/sh\ntrue\n');
        const j = await h.waitFor(
            async () => {
                const [q] = await s.squeue(['-j', id]);
                return q && q.state === 'PENDING' && /^Partition/.test(q.reason) && q;
            },
            { timeoutMs: 30000, intervalMs: 250, what: `job ${id} PENDING for its partition's limit` }
        );
        assert.match(j.reason, /^(PartitionConfig|PartitionTimeLimit)$/);
        assert.equal((await s.scancel([id])).code, 0);
        await s.waitJob(id, 'CANCELLED');
    });

    test('two more clusters at once beside this one; stop() ends a cluster and only it', async (t) => {
        if (skipped(t)) return;
        const both = await Promise.allSettled([
            startSlurm({ gpus: 1 }),
            startSlurm({ gpus: 0, partition: 'other' }),
        ]);
        const [x, y] = both.map((r) => (r.status === 'fulfilled' ? r.value : {}));
        try {
            for (const r of both) if (r.status === 'rejected') throw r.reason;
            for (const c of [x, y]) assert.equal(c.skipReason, null);
            const ports = [s, x, y].flatMap((c) => [c.ctldPort, c.slurmdPort]);
            assert.equal(new Set(ports).size, 6, `six distinct ports: ${ports}`);
            assert.equal(new Set([s, x, y].map((c) => c.cluster)).size, 3);
            assert.equal((await x.node()).gres, 'gpu:1');
            assert.equal((await y.node()).gres, '(null)');

            // A job in each; each cluster sees its own only. x's job leaves a
            // double-forked process behind, outside the job's process tree.
            const outX = path.join(x.dir, 'x');
            const outY = path.join(y.dir, 'y');
            const jx = await x.sbatch(
                ['--gres=gpu:1', '-o', `${outX}.log`],
                `#!/bin/bash\n(setsid sleep 600 & echo $! > ${outX}.fork)\n` +
                    `echo "$SLURM_CLUSTER_NAME $CUDA_VISIBLE_DEVICES" > ${outX}.env\nexec sleep 600\n`
            );
            const jy = await y.sbatch(
                ['-o', `${outY}.log`],
                `#!/bin/sh\necho "$SLURM_CLUSTER_NAME $SLURM_JOB_PARTITION" > ${outY}.env\nexec sleep 600\n`
            );
            await Promise.all([x.waitJob(jx, 'RUNNING'), y.waitJob(jy, 'RUNNING')]);
            assert.equal(
                await h.waitFor(() => readIf(`${outX}.env`), { what: 'x job env' }),
                `${x.cluster} 0\n`
            );
            assert.equal(
                await h.waitFor(() => readIf(`${outY}.env`), { what: 'y job env' }),
                `${y.cluster} other\n`
            );
            assert.deepEqual((await x.squeue()).map((j) => j.id), [jx]);
            assert.deepEqual((await y.squeue()).map((j) => j.id), [jy]);
            assert.deepEqual(
                (await s.squeue()).filter((j) => j.name !== 'yard-timeout'),
                [],
                'the first cluster has none of their jobs'
            );

            const forked = Number(await h.waitFor(() => readIf(`${outX}.fork`), { what: 'the fork pid' }));
            assert.ok(h.pidAlive(forked));
            const xPids = [...x.procs.map((p) => p.pid), ...x.jobPids()];
            assert.ok(xPids.includes(forked), 'the fork is among the job processes');
            const yPids = [...y.procs.map((p) => p.pid), ...y.jobPids()];
            await x.stop();
            for (const pid of xPids) assert.ok(!h.pidAlive(pid), `pid ${pid} of cluster x is gone`);
            assert.ok(!fs.existsSync(x.dir) || process.env.YARD_E2E_KEEP === '1', 'x removed its dir');
            // y and the first cluster carry on.
            for (const pid of yPids) assert.ok(h.pidAlive(pid), `pid ${pid} of cluster y still runs`);
            assert.equal((await y.squeue(['-j', jy]))[0].state, 'RUNNING');
            assert.match((await s.node()).state, /^(idle|mixed)/);
            await y.stop();
            for (const pid of yPids) assert.ok(!h.pidAlive(pid), `pid ${pid} of cluster y is gone`);
        } finally {
            await Promise.all([x.stop?.(), y.stop?.()]);
        }
    });

    test('a job past its time limit ends TIMEOUT: SIGTERM, then SIGKILL after KillWait', async (t) => {
        if (skipped(t)) return;
        const { id, out, submitted } = timeoutJob;
        try {
            const running = await s.squeue(['-j', id]);
            assert.equal(running[0]?.state, 'RUNNING', `job ${id}: ${JSON.stringify(running)}`);
            assert.equal(running[0].timeLimit, '1:00');
            const done = await s.waitJob(id, 'TIMEOUT', { timeoutMs: 150000, intervalMs: 500 });
            assert.equal(done.Reason, 'TimeLimit');
            const start = Number(readIf(`${out}.start`));
            const term = Number(readIf(`${out}.term`));
            assert.ok(start > 0 && term > start, `the job saw SIGTERM (start ${start}, term ${term})`);
            const rec = s.jobcomp().find((x) => x.JobId === id);
            assert.equal(rec?.JobState, 'TIMEOUT');
            console.log(
                `# TIMEOUT: SIGTERM ${(term - start).toFixed(1)} s after the job started; ` +
                    `seen TIMEOUT ${((Date.now() - submitted) / 1000).toFixed(1)} s after sbatch ` +
                    `(StartTime ${done.StartTime}, EndTime ${done.EndTime})`
            );
            assert.deepEqual(s.jobPids(), [], 'nothing of the job is left');
        } finally {
            const dir = s.dir;
            const pids = s.procs.map((p) => p.pid);
            await s.stop();
            for (const pid of pids) assert.ok(!h.pidAlive(pid), `daemon ${pid} is gone`);
            assert.ok(!fs.existsSync(dir) || process.env.YARD_E2E_KEEP === '1');
        }
    });
});
