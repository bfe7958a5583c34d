// What two HTTP answers must share when one engine imitates another: status, content
// type, the JSON's shape (keys and value types, not values) and, for event streams, the
// framing (which fields each event has, data: [DONE], each chunk's shape). Used by
// e2e/llama-server to hold the mock engine's llamacpp flavor to the real llama-server.
import { parseSSE } from './harness.mjs';

/** The shape of a JSON value: objects by key (sorted), arrays by their first element. */
export function shapeOf(v) {
    if (v === null) return 'null';
    if (Array.isArray(v)) return v.length ? [shapeOf(v[0])] : [];
    if (typeof v === 'object') {
        const o = {};
        for (const k of Object.keys(v).sort()) o[k] = shapeOf(v[k]);
        return o;
    }
    return typeof v; // 'number' for 1 and 0.5 alike: JSON does not tell them apart
}

/** The shape with the keys in `drop` removed at every depth. */
export function without(shape, drop) {
    if (Array.isArray(shape)) return shape.map((s) => without(s, drop));
    if (shape && typeof shape === 'object') {
        const o = {};
        for (const [k, v] of Object.entries(shape)) if (!drop.includes(k)) o[k] = without(v, drop);
        return o;
    }
    return shape;
}

/** Paths where `small` has something `big` does not (or of another type); [] when it is a subset. */
export function notIn(small, big, at = '') {
    if (Array.isArray(small)) {
        if (!Array.isArray(big)) return [`${at || '.'}: array vs ${JSON.stringify(big)}`];
        return small.length && big.length ? notIn(small[0], big[0], `${at}[]`) : [];
    }
    if (small && typeof small === 'object') {
        if (!big || typeof big !== 'object' || Array.isArray(big)) return [`${at || '.'}: object vs ${JSON.stringify(big)}`];
        return Object.keys(small).flatMap((k) => (k in big ? notIn(small[k], big[k], `${at}.${k}`) : [`${at}.${k}: only in the mock`]));
    }
    return small === big ? [] : [`${at || '.'}: ${small} vs ${big}`];
}

/** Where two shapes differ, both ways; [] when they are the same. */
export function shapeDiff(mock, real) {
    return [...notIn(mock, real), ...notIn(real, mock).map((d) => d.replace('only in the mock', 'only in the engine'))];
}

/** Parses a body as JSON; undefined when it is not JSON. */
export function json(body) {
    try {
        return JSON.parse(body);
    } catch {
        return undefined;
    }
}

/**
 * An event stream as a list of frames: [{fields: 'event,data' | 'data', event, data}]
 * where data is '[DONE]' or the chunk's shape; frames of the same kind in a row (one per
 * token) are counted once, so engines that split text differently compare equal. Also
 * says whether every frame ends with a blank line (`\n\n`).
 */
export function frames(body, drop = []) {
    const raw = body.replace(/\r\n/g, '\n');
    const blocks = raw.split('\n\n').filter((b) => b.trim() !== '');
    const out = [];
    for (const [i, e] of parseSSE(body).entries()) {
        const fields = blocks[i]
            .split('\n')
            .map((l) => l.slice(0, l.indexOf(':')))
            .join(',');
        const data = e.data === '[DONE]' ? '[DONE]' : without(shapeOf(json(e.data) ?? e.data), drop);
        const f = { fields, event: e.event, data };
        const last = out[out.length - 1];
        if (!last || JSON.stringify(last) !== JSON.stringify(f)) out.push(f);
    }
    return { frames: out, terminated: raw.endsWith('\n\n') };
}
