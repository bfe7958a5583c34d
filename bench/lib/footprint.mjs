// Section "footprint": `yard serve` with 1,000 models configured (none
// started): time from exec to its HTTP port accepting connections
// (build/bench/startup_probe forks, execs and polls connect every 100 us),
// then its RSS after it has sat idle for a while. A fresh state dir each
// round (the SQLite store is created), and once more on an existing one.
import fs from 'node:fs';
import path from 'node:path';
import {
    HELPER_DIR,
    YARD_BIN,
    run,
    tmpdir,
    freePort,
    mockCmd,
    memKiB,
    pidAlive,
    summary,
    put,
    sleep,
    log,
    waitFor,
} from './util.mjs';

function config(port, n) {
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: 30000\ndefaults: { ttl: 10m }\nmodels:\n`;
    const flavors = ['vllm', 'sglang', 'llamacpp'];
    for (let i = 0; i < n; i++) {
        const f = flavors[i % 3];
        const body = {
            engine: f,
            cmd: mockCmd(f, '--load-time 1s'),
            aliases: [`alias-${i}`],
        };
        yaml += `  model-${String(i).padStart(4, '0')}: ${JSON.stringify(body)}\n`;
    }
    return yaml;
}

async function once(dir, settleMs, models) {
    const port = await freePort();
    fs.mkdirSync(path.join(dir, 'cfg'), { recursive: true });
    const cfg = path.join(dir, 'cfg', 'yard.yaml');
    fs.writeFileSync(cfg, config(port, models));
    const r = await run(path.join(HELPER_DIR, 'startup_probe'), [
        '--port', String(port),
        '--log', path.join(dir, 'daemon.log'),
        '--',
        YARD_BIN, 'serve', '-c', cfg, '--state-dir', path.join(dir, 'state'),
    ]);
    if (r.code !== 0) throw new Error(`startup_probe failed (${r.code}): ${r.stderr}`);
    const o = JSON.parse(r.stdout.trim());
    try {
        await sleep(settleMs);
        const m = memKiB(o.pid);
        return { listen_ms: o.listen_ms, ...m };
    } finally {
        try {
            process.kill(-o.pid, 'SIGTERM');
        } catch {
            /* gone */
        }
        await waitFor(() => !pidAlive(o.pid), { timeoutMs: 10000, what: 'yard serve to exit' }).catch(() => {
            try {
                process.kill(-o.pid, 'SIGKILL');
            } catch {
                /* gone */
            }
        });
    }
}

export async function runFootprint(p) {
    const fresh = [];
    for (let r = 0; r < p.rounds; r++) {
        fresh.push(await once(tmpdir('yb-fp-'), p.settleMs, p.models));
        log(`footprint round ${r + 1}/${p.rounds}: listening after ${fresh[r].listen_ms} ms, idle RSS ${fresh[r].rss} KiB`);
    }
    // the same, restarting on an existing state dir
    const dir = tmpdir('yb-fp-');
    await once(dir, 100, p.models);
    const again = [];
    for (let r = 0; r < p.rounds; r++) again.push(await once(dir, 100, p.models));

    const out = {};
    put(out, 'startup_ms', summary(fresh.map((x) => x.listen_ms)), 2);
    put(out, 'idle_rss_kib', summary(fresh.map((x) => x.rss)), 0);
    put(out, 'idle_rss_anon_kib', summary(fresh.map((x) => x.anon)), 0);
    put(out, 'idle_rss_file_kib', summary(fresh.map((x) => x.file)), 0);
    put(out, 'startup_ms_existing_state', summary(again.map((x) => x.listen_ms)), 2);
    out.models = p.models;
    out.settle_ms = p.settleMs;
    out.rounds = p.rounds;
    return out;
}
