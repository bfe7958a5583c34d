// Section "scan": router_scan_model on 1 KiB .. 8 MiB bodies, with
// build/bench/scan_bench (bench/scan_bench.c), which prints per shape and
// size the median, best and worst time per call over its rounds.
import path from 'node:path';
import { HELPER_DIR, run, round } from './util.mjs';

const SIZES = { 1024: '1k', 65536: '64k', 1048576: '1m', 8388608: '8m' };

/** The size key of a body of n bytes (the bench pads to about the size). */
function sizeKey(n) {
    let best = null;
    for (const [s, k] of Object.entries(SIZES)) if (!best || Math.abs(n - s) < Math.abs(n - best[0])) best = [s, k];
    return best[1];
}

export async function runScan(p) {
    const r = await run(path.join(HELPER_DIR, 'scan_bench'), [String(p.rounds), String(p.mib)]);
    if (r.code !== 0) throw new Error(`scan_bench failed (${r.code}): ${r.stderr}`);
    const by = {};
    const re = /^(\S+)\s+(\d+) bytes\s+median\s+([\d.]+) us\s+best\s+([\d.]+) us\s+worst\s+([\d.]+) us/;
    for (const line of r.stdout.split('\n')) {
        const m = re.exec(line);
        if (!m) continue;
        const [, shape, bytes, med, best, worst] = m;
        by[shape] ??= {};
        by[shape][sizeKey(Number(bytes))] = { median: Number(med), min: Number(best), max: Number(worst) };
    }
    // The headline is the slowest shape at each size: a budget holds for any body.
    const out = { min: {}, max: {}, shape: {}, chat: {}, rounds: p.rounds, by_shape: {} };
    for (const k of Object.values(SIZES)) {
        let worst = null;
        for (const [shape, v] of Object.entries(by)) if (v[k] && (!worst || v[k].median > worst[1].median)) worst = [shape, v[k]];
        if (!worst) continue;
        out[k] = round(worst[1].median, 1);
        out.min[k] = round(worst[1].min, 1);
        out.max[k] = round(worst[1].max, 1);
        out.shape[k] = worst[0];
        if (by.chat && by.chat[k]) out.chat[k] = round(by.chat[k].median, 1);
    }
    for (const [shape, v] of Object.entries(by))
        out.by_shape[shape] = Object.fromEntries(Object.entries(v).map(([k, x]) => [k, round(x.median, 1)]));
    return out;
}
