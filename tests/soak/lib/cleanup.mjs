// Last-resort cleanup of the engines a soak run's daemons started. The e2e
// harness already stops its daemons and kills, by process group, whatever
// carries its marker; this adds the engines the soak knows of itself: the
// process groups of the pids `yard ps` last reported, and every mock engine
// whose command line names one of the run's paths. Runs at exit (Ctrl-C
// included: the harness turns SIGINT/SIGTERM into an exit).

import fs from 'node:fs';
import { processesInGroup } from '../../e2e/lib/harness.mjs';
import { mockEngines } from './common.mjs';

const needles = new Set();
const groups = new Set();

/** Engines whose command line contains `needle` (a path of this run) are ours. */
export function trackNeedle(needle) {
    needles.add(needle);
}

/** Remembers the process groups of a `yard ps --json` list. */
export function trackPs(list) {
    for (const e of list) if (e.pid > 1) groups.add(e.pid);
}

/** True when a process of group g has one of the run's paths on its command line:
 *  a pid `yard ps` reported long ago may since lead a stranger's group. */
function groupIsOurs(g) {
    for (const pid of processesInGroup(g)) {
        let cmd = '';
        try {
            cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1');
        } catch {
            continue;
        }
        for (const n of needles) if (cmd.includes(n)) return true;
    }
    return false;
}

/** SIGKILL to every engine group of the run; returns the pids found by command line. */
export function killEnginesSync() {
    const found = [];
    for (const n of needles) {
        for (const e of mockEngines(n)) {
            found.push(e.pid);
            groups.add(e.pgid);
        }
    }
    for (const g of groups) {
        if (g <= 1 || g === process.pid || !groupIsOurs(g)) continue;
        try {
            process.kill(-g, 'SIGKILL');
        } catch {
            // gone already
        }
    }
    groups.clear();
    return found;
}

process.on('exit', killEnginesSync);

let fatalHook = (err) => console.log(`FAIL soak: uncaught ${err && err.stack ? err.stack : err}`);

/** What to print when an uncaught error ends the run (before the exit cleanup). */
export function setFatalHook(fn) {
    fatalHook = fn;
}

// An uncaught error would otherwise end the process through node:test's own
// handler, which skips the `exit` handlers (the harness's cleanup and ours).
for (const ev of ['uncaughtException', 'unhandledRejection']) {
    process.prependListener(ev, (err) => {
        try {
            fatalHook(err);
        } finally {
            process.exit(1);
        }
    });
}
