// The table bench/run prints (and writes as Markdown), and the project's
// performance budgets checked against the figures. A budget is never asserted: a miss
// is reported as such.

const fmt = (x, d = 0) => (x == null ? '-' : Number(x).toFixed(d));

/** Each performance budget: the figure it is judged on and whether it holds. */
export function budgets(r) {
    const out = [];
    const add = (what, budget, value, met) => out.push({ what, budget, value, met: value == null ? null : met });
    const p = r.proxy;
    if (p) {
        add('proxy throughput yard/nginx', '>= 1.00', p.ratio_yard_nginx_rps, p.ratio_yard_nginx_rps >= 1);
        add('added latency p50', '< 50 us', p.added_p50_us, p.added_p50_us < 50);
        add('added latency p99', '< 1000 us', p.added_p99_us, p.added_p99_us < 1000);
    }
    const s = r.stream;
    if (s) {
        add('SSE chunks lost + reordered', '0', s.lost + s.reordered, s.lost + s.reordered === 0 && s.failed_streams === 0);
        add('SSE RSS per stream (KiB)', '< 64', s.rss_per_stream_kib, s.rss_per_stream_kib < 64);
    }
    const rd = r.ready_detect_ms;
    if (rd) add('readiness detection p99 (ms)', '<= 20', rd.p99, rd.p99 <= 20);
    const sw = r.switch_overhead_ms;
    if (sw) {
        add('switch overhead, stop/start (ms)', '<= 30', sw.restart, sw.restart <= 30);
        add('switch overhead, sleep/wake (ms)', '<= 30', sw.wake, sw.wake <= 30);
    }
    if (r.scan_us) add('model scan, 1 MiB (us)', '< 1000', r.scan_us['1m'], r.scan_us['1m'] < 1000);
    if (r.idle_rss_kib != null) {
        add('idle RSS, 100 models (KiB)', '< 10240', r.idle_rss_kib, r.idle_rss_kib < 10240);
        add('exec to listening (ms)', '< 50', r.startup_ms, r.startup_ms < 50);
    }
    const rp = r.replicas;
    if (rp) add('replicas req/s / (N x one replica)', '>= 0.90', rp.ratio, rp.ratio >= 0.9);
    return out;
}

/** Rows: [figure, median, min, max, budget, verdict]. */
function rows(r) {
    const out = [];
    const verdict = (met) => (met == null ? '' : met ? 'met' : 'MISSED');
    const row = (name, o, key, d, budget = '', met = null) =>
        out.push([name, fmt(o[key], d), fmt(o[`${key}_min`], d), fmt(o[`${key}_max`], d), budget, verdict(met)]);
    const p = r.proxy;
    if (p) {
        out.push([`proxy (wrk -c${p.connections}, ${p.seconds}s x ${p.rounds} rounds)`, '', '', '', '', '']);
        for (const t of ['direct', 'yard', 'nginx']) row(`  ${t} req/s`, p[t], 'rps', 0);
        row('  yard/nginx req/s', p, 'ratio_yard_nginx_rps', 2, '>= 1.00', p.ratio_yard_nginx_rps >= 1);
        row('  yard/direct req/s', p, 'ratio_yard_direct_rps', 2);
        row('  yard CPU us per request', p.yard, 'proxy_cpu_us_per_req', 1);
        row('  nginx CPU us per request', p.nginx, 'proxy_cpu_us_per_req', 1);
        for (const t of ['direct', 'yard', 'nginx']) {
            row(`  ${t} p50 us (1 conn)`, p[t], 'p50_us', 0);
            row(`  ${t} p99 us (1 conn)`, p[t], 'p99_us', 0);
        }
        row('  added by yard, p50 us', p, 'added_p50_us', 0, '< 50', p.added_p50_us < 50);
        row('  added by yard, p99 us', p, 'added_p99_us', 0, '< 1000', p.added_p99_us < 1000);
        row('  added by nginx, p50 us', p, 'nginx_added_p50_us', 0);
        row('  added by nginx, p99 us', p, 'nginx_added_p99_us', 0);
    }
    const s = r.stream;
    if (s) {
        out.push([
            `stream (${s.streams} x ${s.tokens} tokens at ${s.tokens_per_sec}/s, ${s.rounds} rounds)`,
            '', '', '', '', '',
        ]);
        out.push(['  chunks lost (all rounds)', String(s.lost), '', '', '0', verdict(s.lost === 0)]);
        out.push(['  chunks reordered', String(s.reordered), '', '', '0', verdict(s.reordered === 0)]);
        out.push(['  streams failed', String(s.failed_streams), '', '', '0', verdict(s.failed_streams === 0)]);
        row('  added per-chunk p50 us', s, 'p50_us', 0);
        row('  added per-chunk p99 us', s, 'p99_us', 0);
        row('  yard chunk p50 us', s.yard, 'p50_us', 0);
        row('  yard chunk p99 us', s.yard, 'p99_us', 0);
        row('  direct chunk p50 us', s.direct, 'p50_us', 0);
        row('  direct chunk p99 us', s.direct, 'p99_us', 0);
        row('  yard RSS per stream KiB', s, 'rss_per_stream_kib', 1, '< 64', s.rss_per_stream_kib < 64);
        row('  yard CPU us per chunk', s, 'cpu_us_per_chunk', 2);
    }
    const rd = r.ready_detect_ms;
    if (rd) {
        out.push([`readiness detection (${rd.starts} starts)`, '', '', '', '', '']);
        out.push(['  ms, p50 (all flavors)', fmt(rd.p50, 2), fmt(rd.min, 2), fmt(rd.max, 2), '', '']);
        out.push(['  ms, p99 (all flavors)', fmt(rd.p99, 2), '', '', '<= 20', verdict(rd.p99 <= 20)]);
        for (const [f, v] of Object.entries(rd.by_flavor || {}))
            out.push([`  ${f} p50 / p99 ms`, `${fmt(v.p50, 2)} / ${fmt(v.p99, 2)}`, fmt(v.min, 2), fmt(v.max, 2), '', '']);
    }
    const sw = r.switch_overhead_ms;
    if (sw) {
        out.push([`switch overhead (${sw.rounds} rounds, load ${sw.load_ms} ms, wake ${sw.wake_ms} ms)`, '', '', '', '', '']);
        row('  stop/start ms', sw, 'restart', 1, '<= 30', sw.restart <= 30);
        row('  sleep/wake ms', sw, 'wake', 1, '<= 30', sw.wake <= 30);
    }
    const sc = r.scan_us;
    if (sc) {
        out.push([`model scan (slowest body shape, ${sc.rounds} rounds)`, '', '', '', '', '']);
        for (const k of ['1k', '64k', '1m', '8m']) {
            const o = { v: sc[k], v_min: sc.min[k], v_max: sc.max[k] };
            row(`  ${k} us (${sc.shape[k]}; chat ${fmt(sc.chat[k], 1)})`, o, 'v', 1, k === '1m' ? '< 1000' : '', k === '1m' ? sc[k] < 1000 : null);
        }
    }
    if (r.footprint) {
        out.push([`footprint (100 models, ${r.footprint.rounds} rounds)`, '', '', '', '', '']);
        row('  idle RSS KiB', r, 'idle_rss_kib', 0, '< 10240', r.idle_rss_kib < 10240);
        row('  exec to listening ms', r, 'startup_ms', 1, '< 50', r.startup_ms < 50);
    }
    const rp = r.replicas;
    if (rp) {
        const head = `${rp.request_ms} ms a request, ${rp.clients} clients, ${rp.seconds}s x ${rp.rounds} rounds`;
        out.push([`replicas (concurrency 1, ${head})`, '', '', '', '', '']);
        for (const n of [1, 2, 4]) {
            const o = rp[`x${n}`];
            const share = Object.values(o.share).map((v) => fmt(100 * v, 0)).join('/');
            row(`  ${n} replica${n > 1 ? 's' : ''} req/s (share % ${share})`, o, 'rps', 1);
            if (n > 1) row(`  ${n} replicas / (${n} x one)`, o, 'ratio', 2, '>= 0.90', o.ratio >= 0.9);
        }
        row('  added by 2 replicas, p50 us (1 conn)', rp, 'added_p50_us', 0);
        row('  added by 2 replicas, p99 us (1 conn)', rp, 'added_p99_us', 0);
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
            if (b.slice(1).every((c) => c === '')) lines.push(`| **${esc(b[0])}** | | | | | |`);
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
