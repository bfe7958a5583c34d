// Section "proxy": wrk posting a small non-streaming chat completion to the
// mock engine directly, through yard, and through nginx proxy_pass, all in
// the same run, interleaved round by round. See docs/bench.md.
import fs from 'node:fs';
import path from 'node:path';
import {
    ROOT,
    MOCK_BIN,
    start,
    run,
    tmpdir,
    freePort,
    tcpAccepts,
    waitFor,
    startYard,
    admin,
    mockCmd,
    summary,
    put,
    rotate,
    round,
    log,
    cpuMs,
    groupCpuMs,
    enginePid,
} from './util.mjs';

const LUA = path.join(ROOT, 'bench/wrk/chat.lua');
const TARGETS = ['direct', 'yard', 'nginx'];

/** Runs wrk once; resolves its BENCH line parsed, with rps. */
export async function wrk(url, { connections, seconds, model }) {
    const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '5s', '-s', LUA, url];
    const r = await run('wrk', args, { env: { BENCH_MODEL: model }, timeoutMs: (seconds + 30) * 1000 });
    const line = r.stdout.split('\n').find((l) => l.startsWith('BENCH '));
    if (r.code !== 0 || !line) throw new Error(`wrk ${args.join(' ')} failed (${r.code}): ${r.stderr || r.stdout}`);
    const o = JSON.parse(line.slice(6));
    o.rps = o.requests / (o.duration_us / 1e6);
    o.errors = o.connect + o.read + o.write + o.status + o.timeout;
    return o;
}

async function startNginx(upstreamPort) {
    const prefix = tmpdir('yb-nginx-');
    const port = await freePort();
    const user = process.getuid && process.getuid() === 0 ? 'user root;' : '';
    const conf = fs
        .readFileSync(path.join(ROOT, 'bench/nginx.conf.in'), 'utf8')
        .replaceAll('@USER@', user)
        .replaceAll('@PREFIX@', prefix)
        .replaceAll('@PORT@', String(port))
        .replaceAll('@UPSTREAM_PORT@', String(upstreamPort));
    const confPath = path.join(prefix, 'nginx.conf');
    fs.writeFileSync(confPath, conf);
    const proc = start('nginx', ['-p', prefix, '-c', confPath, '-e', path.join(prefix, 'error.log')], {
        logPath: path.join(prefix, 'stderr.log'),
    });
    await waitFor(
        async () => {
            if (!proc.alive()) throw new Error(`nginx exited: ${fs.readFileSync(path.join(prefix, 'stderr.log'), 'utf8')}`);
            return tcpAccepts(port);
        },
        { timeoutMs: 10000, what: 'nginx listening' }
    );
    return { port, proc };
}

export async function runProxy(p) {
    const model = 'm';
    const engineArgs = '--load-time 0s --tokens-per-sec 0';

    // The engine yard supervises (for the yard path) and a second, identical
    // one started here (for direct and nginx): see docs/bench.md.
    const y = await startYard({
        models: { [model]: { engine: 'vllm', cmd: mockCmd('vllm', engineArgs) } },
    });
    await admin(y.stateDir, { cmd: 'start', model, wait: true });
    const dir = tmpdir('yb-direct-');
    const enginePort = await freePort();
    const engine = start(
        MOCK_BIN,
        ['--flavor', 'vllm', '--port', String(enginePort), '--name', model, ...engineArgs.split(' ')],
        { logPath: path.join(dir, 'engine.log') }
    );
    await waitFor(() => tcpAccepts(enginePort), { what: 'the direct mock engine' });
    const nginx = await startNginx(enginePort);

    const url = {
        direct: `http://127.0.0.1:${enginePort}/v1/chat/completions`,
        yard: `${y.base}/v1/chat/completions`,
        nginx: `http://127.0.0.1:${nginx.port}/v1/chat/completions`,
    };
    const tput = { direct: [], yard: [], nginx: [] };
    const lat = { direct: [], yard: [], nginx: [] };
    // CPU time per request of the proxy and of the engine, from /proc (10 ms ticks)
    const yardEngine = await enginePid(y.stateDir, model);
    const cpuOf = {
        direct: () => ({ proxy: 0, engine: cpuMs(engine.pid) }),
        yard: () => ({ proxy: cpuMs(y.proc.pid), engine: cpuMs(yardEngine) }),
        nginx: () => ({ proxy: groupCpuMs(nginx.proc.pid), engine: cpuMs(engine.pid) }),
    };
    const timed = async (t, opts) => {
        const c0 = cpuOf[t]();
        const o = await wrk(url[t], opts);
        const c1 = cpuOf[t]();
        o.proxy_cpu_us = ((c1.proxy - c0.proxy) * 1000) / Math.max(1, o.requests);
        o.engine_cpu_us = ((c1.engine - c0.engine) * 1000) / Math.max(1, o.requests);
        return o;
    };

    // warm-up: connections, caches, the upstream pools
    for (const t of TARGETS) await wrk(url[t], { connections: p.connections, seconds: 1, model });

    for (let r = 0; r < p.rounds; r++) {
        for (const t of rotate(TARGETS, r)) {
            tput[t].push(await timed(t, { connections: p.connections, seconds: p.seconds, model }));
        }
        for (const t of rotate(TARGETS, r + 1)) {
            const o = await wrk(url[t], { connections: 1, seconds: p.latSeconds, model });
            lat[t].push(o);
        }
        log(
            `proxy round ${r + 1}/${p.rounds}: ` +
                TARGETS.map(
                    (t) =>
                        `${t} ${Math.round(tput[t][r].rps)} req/s p50 ${lat[t][r].p50_us} us p99 ${lat[t][r].p99_us} us`
                ).join(', ')
        );
    }
    await nginx.proc.stop();
    await engine.stop();
    await y.proc.stop();

    const out = {};
    for (const t of TARGETS) {
        const o = {};
        put(o, 'rps', summary(tput[t].map((x) => x.rps)), 0);
        put(o, 'p50_us', summary(lat[t].map((x) => x.p50_us)), 0);
        put(o, 'p99_us', summary(lat[t].map((x) => x.p99_us)), 0);
        put(o, 'loaded_p50_us', summary(tput[t].map((x) => x.p50_us)), 0);
        put(o, 'loaded_p99_us', summary(tput[t].map((x) => x.p99_us)), 0);
        if (t !== 'direct') put(o, 'proxy_cpu_us_per_req', summary(tput[t].map((x) => x.proxy_cpu_us)), 1);
        put(o, 'engine_cpu_us_per_req', summary(tput[t].map((x) => x.engine_cpu_us)), 1);
        o.errors = [...tput[t], ...lat[t]].reduce((a, x) => a + x.errors, 0);
        o.requests = [...tput[t], ...lat[t]].reduce((a, x) => a + x.requests, 0);
        out[t] = o;
    }
    // ratios and differences per round (paired), then their median
    const pair = (f) => summary(tput.yard.map((_, i) => f(i)));
    put(out, 'ratio_yard_nginx_rps', pair((i) => tput.yard[i].rps / tput.nginx[i].rps), 3);
    put(out, 'ratio_yard_direct_rps', pair((i) => tput.yard[i].rps / tput.direct[i].rps), 3);
    put(out, 'ratio_nginx_direct_rps', pair((i) => tput.nginx[i].rps / tput.direct[i].rps), 3);
    put(out, 'ratio_yard_nginx_cpu', pair((i) => tput.yard[i].proxy_cpu_us / tput.nginx[i].proxy_cpu_us), 3);
    const lpair = (f) => summary(lat.yard.map((_, i) => f(i)));
    put(out, 'added_p50_us', lpair((i) => lat.yard[i].p50_us - lat.direct[i].p50_us), 0);
    put(out, 'added_p99_us', lpair((i) => lat.yard[i].p99_us - lat.direct[i].p99_us), 0);
    put(out, 'nginx_added_p50_us', lpair((i) => lat.nginx[i].p50_us - lat.direct[i].p50_us), 0);
    put(out, 'nginx_added_p99_us', lpair((i) => lat.nginx[i].p99_us - lat.direct[i].p99_us), 0);
    // what yard adds beyond what nginx adds: yard minus nginx (the direct run cancels)
    put(out, 'added_p50_over_nginx_us', lpair((i) => lat.yard[i].p50_us - lat.nginx[i].p50_us), 0);
    out.connections = p.connections;
    out.seconds = p.seconds;
    out.latency_seconds = p.latSeconds;
    out.rounds = p.rounds;
    out.round_rps = Object.fromEntries(TARGETS.map((t) => [t, tput[t].map((x) => round(x.rps, 0))]));
    return out;
}
