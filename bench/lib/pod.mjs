// Section "pod": the host path. A model on a pod (a real sshd on this machine:
// yard starts the engine over ssh and reaches it through the local forward of
// its ssh master), against the same engine reached through a plain `ssh -L`
// forward (what users glue by hand) and directly, interleaved round by round.
// What yard adds on a pod is its proxy over the forward ssh already is: the
// figures to read are yard/ssh -L. No budget. See docs/bench.md.
// Skipped with the reason where sshd cannot run (not root, not installed).
import path from 'node:path';
import {
    ROOT,
    YARD_BIN,
    MOCK_BIN,
    start,
    run,
    tmpdir,
    freePort,
    tcpAccepts,
    waitFor,
    startYard,
    admin,
    summary,
    put,
    rotate,
    round,
    log,
} from './util.mjs';
import { wrk } from './proxy.mjs';

const TARGETS = ['direct', 'ssh', 'yard'];

export async function runPod(p) {
    const sshd = await import('../../tests/e2e/lib/sshd.mjs');
    const why = sshd.sshdSkipReason();
    if (why) return { skipped: `no sshd for the pod: ${why}` };
    const model = 'm';
    const engineArgs = ['--load-time', '0s', '--tokens-per-sec', '0'];
    const fixtures = path.join(ROOT, 'tests/e2e/fixtures'); // the stand-in nvidia-smi
    const pod = await sshd.startSshd({
        keyEnv: {
            PATH: `${fixtures}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
            YARD_FAKE_GPUS: '0,NVIDIA H100 80GB HBM3,81559',
        },
    });
    const y = await startYard({
        models: {
            [model]: {
                engine: 'vllm',
                pod: 'box',
                cmd: `${MOCK_BIN} --flavor vllm --port \${PORT} --name \${NAME} ${engineArgs.join(' ')}`,
            },
        },
    });
    const added = await run(YARD_BIN, ['--state-dir', y.stateDir, 'pod', 'add', 'box', '--ssh', pod.sshCmd]);
    if (added.code !== 0) throw new Error(`yard pod add failed: ${added.stderr}`);
    await admin(y.stateDir, { cmd: 'start', model, wait: true });

    // The yardsticks: an identical engine, and an ssh -L forward to it through the same sshd.
    const dir = tmpdir('yb-pod-');
    const enginePort = await freePort();
    const engine = start(MOCK_BIN, ['--flavor', 'vllm', '--port', String(enginePort), '--name', model, ...engineArgs], {
        logPath: path.join(dir, 'engine.log'),
    });
    await waitFor(() => tcpAccepts(enginePort), { what: 'the direct mock engine' });
    const fwdPort = await freePort();
    const words = pod.sshCmd.split(' ');
    const dest = words.pop();
    const fwd = start(
        words[0],
        [...words.slice(1), '-N', '-o', 'ExitOnForwardFailure=yes', '-L', `127.0.0.1:${fwdPort}:127.0.0.1:${enginePort}`, dest],
        { logPath: path.join(dir, 'ssh-L.log') }
    );
    await waitFor(() => tcpAccepts(fwdPort), { what: 'the ssh -L forward' });

    const url = {
        direct: `http://127.0.0.1:${enginePort}/v1/chat/completions`,
        ssh: `http://127.0.0.1:${fwdPort}/v1/chat/completions`,
        yard: `${y.base}/v1/chat/completions`,
    };
    const tput = { direct: [], ssh: [], yard: [] };
    const lat = { direct: [], ssh: [], yard: [] };
    for (const t of TARGETS) await wrk(url[t], { connections: p.connections, seconds: 1, model });
    for (let r = 0; r < p.rounds; r++) {
        for (const t of rotate(TARGETS, r)) tput[t].push(await wrk(url[t], { connections: p.connections, seconds: p.seconds, model }));
        for (const t of rotate(TARGETS, r + 1)) lat[t].push(await wrk(url[t], { connections: 1, seconds: p.latSeconds, model }));
        log(
            `pod round ${r + 1}/${p.rounds}: ` +
                TARGETS.map((t) => `${t} ${Math.round(tput[t][r].rps)} req/s p50 ${lat[t][r].p50_us} us`).join(', ')
        );
    }
    await fwd.stop();
    await engine.stop();
    await y.proc.stop();
    await pod.proc.stop();

    const out = {};
    for (const t of TARGETS) {
        const o = {};
        put(o, 'rps', summary(tput[t].map((x) => x.rps)), 0);
        put(o, 'p50_us', summary(lat[t].map((x) => x.p50_us)), 0);
        put(o, 'p99_us', summary(lat[t].map((x) => x.p99_us)), 0);
        o.errors = [...tput[t], ...lat[t]].reduce((a, x) => a + x.errors, 0);
        out[t] = o;
    }
    const pair = (f) => summary(tput.yard.map((_, i) => f(i)));
    put(out, 'ratio_yard_ssh_rps', pair((i) => tput.yard[i].rps / tput.ssh[i].rps), 3);
    const lpair = (f) => summary(lat.yard.map((_, i) => f(i)));
    put(out, 'added_p50_over_ssh_us', lpair((i) => lat.yard[i].p50_us - lat.ssh[i].p50_us), 0);
    put(out, 'added_p99_over_ssh_us', lpair((i) => lat.yard[i].p99_us - lat.ssh[i].p99_us), 0);
    out.connections = p.connections;
    out.seconds = p.seconds;
    out.rounds = p.rounds;
    out.round_rps = Object.fromEntries(TARGETS.map((t) => [t, tput[t].map((x) => round(x.rps, 0))]));
    return out;
}
