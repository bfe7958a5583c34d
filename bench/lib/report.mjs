// The table bench/run prints (and writes as Markdown), and the project's
// performance budgets checked against the figures. A budget is never asserted: a miss
// is reported as such.

const fmt = (x, d = 0) => (x == null ? '-' : Number(x).toFixed(d));

/**
 * The performance budgets (docs/bench.md), each with the figure it is judged
 * on: { key, what, budget, value, met, note }. met is null when the run has
 * no figure, or when it measured something smaller than the budget speaks of
 * (fewer streams: BENCH_STREAMS and the like), which note then says.
 */
function judge(r) {
    const out = [];
    const add = (key, what, budget, value, test, notJudged = null) => {
        const e = { key, what, budget, value: value ?? null, met: null };
        if (value != null) {
            if (notJudged) e.note = notJudged;
            else e.met = test(value);
        }
        out.push(e);
    };
    const p = r.proxy;
    if (p) {
        add('proxy_rps', 'proxy throughput, yard/nginx req/s', '>= 1.05', p.ratio_yard_nginx_rps, (v) => v >= 1.05);
        add('proxy_cpu', 'proxy CPU per request, yard/nginx', '< 1.00', p.ratio_yard_nginx_cpu, (v) => v < 1);
        add('added_p50', 'added latency p50, yard minus nginx (us)', '<= 0', p.added_p50_over_nginx_us, (v) => v <= 0);
        add('added_p99', 'added latency p99, yard minus direct (us)', '< 1000', p.added_p99_us, (v) => v < 1000);
    }
    const s = r.stream;
    if (s) {
        const f = s.few || { lost: 0, reordered: 0, failed_streams: 0 };
        const bad = s.lost + s.reordered + f.lost + f.reordered;
        const failed = s.failed_streams + f.failed_streams;
        // a lost chunk is a miss at any size; none lost proves the budget only at its size
        const broke = bad > 0 || failed > 0;
        add(
            'sse_order',
            'SSE chunks lost + reordered, both sets',
            '0',
            bad,
            () => !broke,
            !broke && s.streams < 1000 ? `${s.streams} streams, the budget speaks of 1,000` : null
        );
        if (failed) out[out.length - 1].note = `${failed} streams failed`;
        const many = s.streams === 1000 ? null : `measured at ${s.streams} streams, not 1,000`;
        add('sse_rss', 'SSE RSS per stream, 1,000 streams (KiB)', '< 64', s.rss_per_stream_kib, (v) => v < 64, many);
        add(
            'sse_p50_few',
            'SSE added chunk latency p50, 100 streams (us)',
            '< 200',
            s.few && s.few.p50_us,
            (v) => v < 200,
            s.few && s.few.streams !== 100 ? `measured at ${s.few.streams} streams, not 100` : null
        );
        add(
            'sse_p50_many',
            'SSE added chunk latency p50, 1,000 streams (us)',
            '< 1000',
            s.p50_us,
            (v) => v < 1000,
            many
        );
    }
    const rd = r.ready_detect_ms;
    if (rd) add('ready_p99', 'readiness detection p99 (ms)', '<= 5', rd.p99, (v) => v <= 5);
    const sw = r.switch_overhead_ms;
    if (sw) {
        add('switch_restart', 'switch overhead, stop/start (ms over the load)', '<= 10', sw.restart, (v) => v <= 10);
        add('switch_wake', 'switch overhead, sleep/wake (ms over the wake)', '<= 5', sw.wake, (v) => v <= 5);
    }
    if (r.scan_us) add('scan_1m', 'model scan, 1 MiB, slowest shape (us)', '< 500', r.scan_us['1m'], (v) => v < 500);
    if (r.footprint) {
        const n = r.footprint.models;
        const other = n === 1000 ? null : `${n} models, the budget speaks of 1,000`;
        add('idle_rss', 'idle RSS, 1,000 models (KiB)', '< 16384', r.idle_rss_kib, (v) => v < 16384, other);
        add('startup', 'exec to listening, 1,000 models (ms)', '<= 20', r.startup_ms, (v) => v <= 20, other);
    }
    const rp = r.replicas;
    if (rp) {
        add('replicas', 'replicas req/s / (N x one replica)', '>= 0.90', rp.ratio, (v) => v >= 0.9);
        // each N on its own, for the table's rows (the budget is judged on the worse)
        for (const n of [2, 4]) {
            add(`replicas_x${n}`, '', '>= 0.90', rp[`x${n}`] && rp[`x${n}`].ratio, (v) => v >= 0.9);
            out[out.length - 1].rowOnly = true;
        }
    }
    const cl = r.cloud;
    if (cl && !cl.skipped) {
        const poll = `<= ${cl.poll_ms}`;
        add('cloud_ready', 'rented: running answered -> engine ready, less its own (ms)', '<= 1000', cl.to_ready_ms, (v) => v <= 1000);
        add('cloud_poll', 'rented: running -> read by yard, slowest (ms)', poll, cl.poll_gap_ms_max, (v) => v <= cl.poll_ms);
        add('cloud_bad', 'rented: fatal status -> destroy, slowest (ms)', poll, cl.bad_host_ms_max, (v) => v <= cl.poll_ms);
        add('cloud_lost', 'rented: serving instance exited -> destroy, slowest (ms)', poll, cl.lost_ms_max, (v) => v <= cl.poll_ms);
    }
    const sl = r.slurm;
    if (sl && !sl.skipped) {
        add('slurm_ready', 'Slurm: engine ready -> yard ready (ms)', '<= 1000', sl.ready_ms, (v) => v <= 1000);
        add('slurm_renewal', 'Slurm: failed requests across a renewal', '0', sl.renewal && sl.renewal.failed, (v) => v === 0);
    }
    const ss = r.sessions;
    if (ss && !ss.skipped) {
        add(
            'session_exec',
            'session exec of `true`, p50, the worse of back to back and spaced (ms)',
            '< 10',
            ss.exec_p50_ms,
            (v) => v < 10
        );
        add(
            'session_backup',
            'session backup of 1 GiB of mixed files (s)',
            '< 10',
            ss.backup_s,
            (v) => v < 10,
            ss.backup_mib === 1024 ? null : `measured on ${ss.backup_mib} MiB, the budget speaks of 1 GiB`
        );
    }
    return out;
}

/** Each performance budget: the figure it is judged on and whether it holds (the JSON's budgets[]). */
export function budgets(r) {
    return judge(r)
        .filter((b) => !b.rowOnly)
        .map(({ key, ...e }) => e);
}

/** Rows: [figure, median, min, max, budget, verdict]. */
function rows(r) {
    const out = [];
    const judged = Object.fromEntries(judge(r).map((b) => [b.key, b]));
    const verdict = (b) => (!b || b.value == null ? '' : b.met == null ? 'not judged' : b.met ? 'met' : 'MISSED');
    // a figure with its min and max; `key` names the budget judged on it
    const row = (name, o, field, d, key = null) => {
        const b = key ? judged[key] : null;
        const v = [o[field], o[`${field}_min`], o[`${field}_max`]].map((x) => fmt(x, d));
        out.push([name, ...v, b ? b.budget : '', verdict(b)]);
    };
    const head = (name) => out.push([name, '', '', '', '', '']);
    const p = r.proxy;
    if (p) {
        head(`proxy (wrk -c${p.connections}, ${p.seconds}s x ${p.rounds} rounds)`);
        for (const t of ['direct', 'yard', 'nginx']) row(`  ${t} req/s`, p[t], 'rps', 0);
        row('  yard/nginx req/s', p, 'ratio_yard_nginx_rps', 2, 'proxy_rps');
        row('  yard/direct req/s', p, 'ratio_yard_direct_rps', 2);
        row('  yard CPU us per request', p.yard, 'proxy_cpu_us_per_req', 1);
        row('  nginx CPU us per request', p.nginx, 'proxy_cpu_us_per_req', 1);
        row('  yard/nginx CPU per request', p, 'ratio_yard_nginx_cpu', 2, 'proxy_cpu');
        for (const t of ['direct', 'yard', 'nginx']) {
            row(`  ${t} p50 us (1 conn)`, p[t], 'p50_us', 0);
            row(`  ${t} p99 us (1 conn)`, p[t], 'p99_us', 0);
        }
        row('  added by yard, p50 us', p, 'added_p50_us', 0);
        row('  added by yard, p99 us', p, 'added_p99_us', 0, 'added_p99');
        row('  added by nginx, p50 us', p, 'nginx_added_p50_us', 0);
        row('  added by nginx, p99 us', p, 'nginx_added_p99_us', 0);
        row('  yard minus nginx, p50 us', p, 'added_p50_over_nginx_us', 0, 'added_p50');
    }
    const s = r.stream;
    if (s) {
        head(`stream (${s.tokens_per_sec} tokens/s a stream, ${s.rounds} rounds)`);
        const count = (name, v, key = null) => {
            const b = key ? judged[key] : null;
            out.push([name, String(v), '', '', b ? b.budget : '0', b ? verdict(b) : v === 0 ? 'met' : 'MISSED']);
        };
        const sets = [
            [s, 'sse_p50_many'],
            [s.few, 'sse_p50_few'],
        ];
        for (const [o, key] of sets) {
            if (!o) continue;
            head(`  ${o.streams} streams x ${o.tokens} tokens`);
            count('    chunks lost (all rounds)', o.lost);
            count('    chunks reordered', o.reordered);
            count('    streams failed', o.failed_streams);
            row('    added per-chunk p50 us', o, 'p50_us', 0, key);
            row('    added per-chunk p99 us', o, 'p99_us', 0);
            row('    yard chunk p50 us', o.yard, 'p50_us', 0);
            row('    yard chunk p99 us', o.yard, 'p99_us', 0);
            row('    direct chunk p50 us', o.direct, 'p50_us', 0);
            row('    direct chunk p99 us', o.direct, 'p99_us', 0);
            if (o === s) row('    yard RSS per stream KiB', s, 'rss_per_stream_kib', 1, 'sse_rss');
            row('    yard CPU us per chunk', o, 'cpu_us_per_chunk', 2);
        }
    }
    const rd = r.ready_detect_ms;
    if (rd) {
        head(`readiness detection (${rd.starts} starts)`);
        out.push(['  ms, p50 (all flavors)', fmt(rd.p50, 2), fmt(rd.min, 2), fmt(rd.max, 2), '', '']);
        const b = judged.ready_p99;
        out.push(['  ms, p99 (all flavors)', fmt(rd.p99, 2), '', '', b.budget, verdict(b)]);
        for (const [f, v] of Object.entries(rd.by_flavor || {}))
            out.push([`  ${f} p50 / p99 ms`, `${fmt(v.p50, 2)} / ${fmt(v.p99, 2)}`, fmt(v.min, 2), fmt(v.max, 2), '', '']);
    }
    const sw = r.switch_overhead_ms;
    if (sw) {
        head(`switch overhead (${sw.rounds} rounds, load ${sw.load_ms} ms, wake ${sw.wake_ms} ms)`);
        row('  stop/start ms', sw, 'restart', 1, 'switch_restart');
        row('  sleep/wake ms', sw, 'wake', 1, 'switch_wake');
    }
    const sc = r.scan_us;
    if (sc) {
        head(`model scan (slowest body shape, ${sc.rounds} rounds)`);
        for (const k of ['1k', '64k', '1m', '8m']) {
            const o = { v: sc[k], v_min: sc.min[k], v_max: sc.max[k] };
            row(`  ${k} us (${sc.shape[k]}; chat ${fmt(sc.chat[k], 1)})`, o, 'v', 1, k === '1m' ? 'scan_1m' : null);
        }
    }
    if (r.footprint) {
        head(`footprint (${r.footprint.models} models, ${r.footprint.rounds} rounds)`);
        row('  idle RSS KiB', r, 'idle_rss_kib', 0, 'idle_rss');
        row('  exec to listening ms', r, 'startup_ms', 1, 'startup');
    }
    const rp = r.replicas;
    if (rp) {
        head(
            `replicas (concurrency 1, ${rp.request_ms} ms a request, ${rp.clients} clients, ` +
                `${rp.seconds}s x ${rp.rounds} rounds)`
        );
        for (const n of [1, 2, 4]) {
            const o = rp[`x${n}`];
            const share = Object.values(o.share).map((v) => fmt(100 * v, 0)).join('/');
            row(`  ${n} replica${n > 1 ? 's' : ''} req/s (share % ${share})`, o, 'rps', 1);
            if (n > 1) row(`  ${n} replicas / (${n} x one)`, o, 'ratio', 2, `replicas_x${n}`);
        }
        row('  added by 2 replicas, p50 us (1 conn)', rp, 'added_p50_us', 0);
        row('  added by 2 replicas, p99 us (1 conn)', rp, 'added_p99_us', 0);
    }
    const ll = r.llama;
    if (ll && ll.skipped) out.push([`llama: skipped (${ll.skipped})`, '', '', '', '', '']);
    else if (ll) {
        head(`real llama-server, stories260K (${ll.rounds} direct starts, ${2 * ll.rounds} switches)`);
        row('  direct: spawn to first byte ms', ll, 'direct_first_byte_ms', 1);
        row("  the engine's own clock at listening ms", ll, 'engine_listening_ms', 1);
        row('  switch through yard, first byte ms', ll, 'switch_ms', 1);
        out.push(['  switch minus direct ms (stop of the other included)', fmt(ll.overhead_ms, 1), '', '', '', '']);
        row("  yard's account: stop of the other ms", ll, 'yard_stop_ms', 1);
        row("  yard's account: start to ready ms", ll, 'yard_start_ms', 1);
        row('  loaded, first byte ms', ll, 'warm_ms', 1);
    }
    const pd = r.pod;
    if (pd && pd.skipped) out.push([`pod: skipped (${pd.skipped})`, '', '', '', '', '']);
    else if (pd) {
        head(`pod: the host path (wrk -c${pd.connections}, ${pd.seconds}s x ${pd.rounds} rounds)`);
        for (const [t, name] of [['direct', 'engine direct'], ['ssh', 'ssh -L forward'], ['yard', 'yard, model on the pod']])
            row(`  ${name} req/s`, pd[t], 'rps', 0);
        row('  yard/ssh -L req/s', pd, 'ratio_yard_ssh_rps', 2);
        for (const [t, name] of [['direct', 'engine direct'], ['ssh', 'ssh -L forward'], ['yard', 'yard']]) {
            row(`  ${name} p50 us (1 conn)`, pd[t], 'p50_us', 0);
            row(`  ${name} p99 us (1 conn)`, pd[t], 'p99_us', 0);
        }
        row('  yard minus ssh -L, p50 us', pd, 'added_p50_over_ssh_us', 0);
    }
    const cl = r.cloud;
    if (cl && cl.skipped) out.push([`cloud: skipped (${cl.skipped})`, '', '', '', '', '']);
    else if (cl) {
        head(`rented machines, Vast stand-in (${cl.rounds} rents, yard reads a starting instance every ${cl.poll_ms} ms)`);
        row('  running -> read by yard ms (the poll gap)', cl, 'poll_gap_ms', 0);
        row('  max of it', { v: cl.poll_gap_ms_max }, 'v', 0, 'cloud_poll');
        row('  running answered -> engine ready, less its own ms', cl, 'to_ready_ms', 0, 'cloud_ready');
        row('    of which: -> host ready (ssh, nvidia-smi)', cl, 'host_ms', 0);
        row('    host ready -> engine started (ssh)', cl, 'launch_ms', 0);
        row('    engine ready -> yard ready', cl, 'detect_ms', 0);
        row('  one ssh login to the machine ms (for scale)', cl, 'ssh_login_ms', 0);
        row('  OCI error -> instance destroyed ms', cl, 'bad_host_ms', 0);
        row('  max of it', { v: cl.bad_host_ms_max }, 'v', 0, 'cloud_bad');
        row('  serving instance exited -> destroyed ms', cl, 'lost_ms', 0);
        row('  max of it', { v: cl.lost_ms_max }, 'v', 0, 'cloud_lost');
    }
    const sl = r.slurm;
    if (sl && sl.skipped) out.push([`slurm: skipped (${sl.skipped})`, '', '', '', '', '']);
    else if (sl) {
        head(`Slurm (${sl.rounds} starts as jobs, poll ${sl.poll}; one walltime renewal, poll ${sl.renewal_poll})`);
        row('  engine ready -> yard ready ms', sl, 'ready_ms', 0, 'slurm_ready');
        row('  yard start -> ready ms (sbatch, scheduler, load)', sl, 'start_ready_ms', 0);
        const rn = sl.renewal || {};
        const b = judged.slurm_renewal;
        out.push([`  requests across the renewal, failed (of ${rn.requests})`, String(rn.failed), '', '', b.budget, verdict(b)]);
    }
    const ss = r.sessions;
    if (ss && ss.skipped) out.push([`sessions: skipped (${ss.skipped})`, '', '', '', '', '']);
    else if (ss) {
        head(`sessions (${ss.execs} execs + ${ss.spaced_execs} spaced ${ss.gap_ms} ms, ${ss.rounds} rounds)`);
        row('  exec `true` p50 ms, the worse of the two', ss, 'exec_p50_ms', 2, 'session_exec');
        row('  exec `true` through yard, p50 ms', ss.exec, 'p50_ms', 2);
        row('  exec `true` through yard, p99 ms', ss.exec, 'p99_ms', 2);
        row('  exec `true` through yard, min ms', ss.exec, 'min_ms', 2);
        row('  exec `true` spaced, p50 ms', ss.exec_spaced, 'p50_ms', 2);
        row('  exec `true` spaced, p99 ms', ss.exec_spaced, 'p99_ms', 2);
        row('  bwrap direct, fresh sandbox, p50 ms', ss.bwrap_direct, 'p50_ms', 2);
        row('  bwrap direct, min ms', ss.bwrap_direct, 'min_ms', 2);
        row('  /bin/sh -c true direct, p50 ms', ss.sh_direct, 'p50_ms', 2);
        row('  /bin/sh -c true direct, min ms', ss.sh_direct, 'min_ms', 2);
        head(`  backup of ${ss.backup_mib} MiB, ${ss.backup_files} files (${ss.backup_rounds} rounds)`);
        row(`    yard backup s (archive ${ss.backup.archive_mib} MiB)`, ss.backup, 'seconds', 2, 'session_backup');
        row('    yard backup MB/s', ss.backup, 'mb_per_s', 0);
        row(`    tar --zstd + sync s (archive ${ss.tar_direct.archive_mib} MiB)`, ss.tar_direct, 'seconds', 2);
        row('    tar --zstd MB/s', ss.tar_direct, 'mb_per_s', 0);
    }
    for (const s of Object.keys(r.failures || {})) out.push([`${s}: FAILED (see the log above)`, '', '', '', '', '']);
    return out;
}

/** The result as a table: 'text' (aligned columns) or 'markdown'. */
export function table(r, kind) {
    const head = ['figure', 'median', 'min', 'max', 'budget', 'verdict'];
    const body = rows(r);
    if (kind === 'markdown') {
        const esc = (c) => String(c).replaceAll('|', '\\|');
        const lines = [`| ${head.join(' | ')} |`, `| ${head.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`];
        for (const b of body) {
            if (b.slice(1).every((c) => c === '')) lines.push(`| **${esc(b[0].trim())}** | | | | | |`);
            else lines.push(`| ${b.map((c, i) => (i === 0 ? esc(c.trim()) : esc(c))).join(' | ')} |`);
        }
        return lines.join('\n') + '\n';
    }
    const all = [head, ...body];
    const w = head.map((_, i) => Math.max(...all.map((b) => String(b[i]).length)));
    const line = (b) =>
        b
            .map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i])))
            .join('  ')
            .trimEnd();
    return [line(head), ...body.map(line)].join('\n') + '\n';
}
