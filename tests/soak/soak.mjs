// The soak tier's driver (tests/soak/run; docs/testing.md "Soak"). Runs the
// scenarios in order, each printing one PASS/FAIL line per check, and ends with
// `N passed, N failed`; exits 1 when a check failed.
//
//   node tests/soak/soak.mjs [--quick] [--only kill,leak,idle,stall] [--kills N]
//                            [--connections N] [--idle N] [--stalled N]
//
// SOAK_KILLS (default 50; 5 with --quick) and SOAK_CONNECTIONS (default 10000;
// 1000 with --quick) set the iteration counts; the flags win over the variables.
// SOAK_IDLE (default 1000) is the idle connection count, SOAK_STALLED (default
// 200; 100 with --quick) the number of clients that stop reading.

import { cleanup } from '../e2e/lib/harness.mjs';
import { Report } from './lib/common.mjs';
import { killEnginesSync, setFatalHook } from './lib/cleanup.mjs';
import * as kill from './kill.mjs';
import * as leak from './leak.mjs';
import * as idle from './idle.mjs';
import * as stall from './stall.mjs';

function parseArgs(argv) {
    const quick = argv.includes('--quick');
    const opts = {
        kills: Number(process.env.SOAK_KILLS || (quick ? 5 : 50)),
        connections: Number(process.env.SOAK_CONNECTIONS || (quick ? 1000 : 10000)),
        idle: Number(process.env.SOAK_IDLE || 1000),
        stalled: Number(process.env.SOAK_STALLED || (quick ? 100 : 200)),
        only: ['kill', 'leak', 'idle', 'stall'],
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
            return argv[++i];
        };
        if (a === '--quick') continue;
        else if (a === '--kills') opts.kills = Number(next());
        else if (a === '--connections') opts.connections = Number(next());
        else if (a === '--idle') opts.idle = Number(next());
        else if (a === '--stalled') opts.stalled = Number(next());
        else if (a === '--only') opts.only = next().split(',');
        else
            throw new Error(
                `unknown argument '${a}'; use --quick, --only kill,leak,idle,stall, --kills N, ` +
                    '--connections N, --idle N, --stalled N'
            );
    }
    for (const k of ['kills', 'connections', 'idle', 'stalled']) {
        if (!Number.isInteger(opts[k]) || opts[k] < 1) throw new Error(`${k} must be a positive integer`);
    }
    for (const s of opts.only) {
        if (!['kill', 'leak', 'idle', 'stall'].includes(s)) {
            throw new Error(`unknown scenario '${s}'; use kill, leak, idle, stall`);
        }
    }
    return opts;
}

async function main() {
    let opts;
    try {
        opts = parseArgs(process.argv.slice(2));
    } catch (err) {
        console.error(`soak: ${err.message}`);
        process.exitCode = 2;
        return;
    }
    const report = new Report();
    const t0 = Date.now();
    setFatalHook((err) => {
        report.check('soak: no uncaught error', false, err && err.stack ? err.stack : String(err));
        console.log(report.summary());
    });
    console.log(
        `soak: ${opts.only.join(', ')}; kills ${opts.kills}, connections ${opts.connections}, ` +
            `idle connections ${opts.idle}, stalled clients ${opts.stalled}`
    );
    const scenarios = { kill, leak, idle, stall };
    for (const name of opts.only) {
        const t = Date.now();
        try {
            await scenarios[name].run(report, opts);
        } catch (err) {
            report.check(`${name}: scenario ran to the end`, false, err.stack || err.message);
        }
        report.info(`${name}: ${((Date.now() - t) / 1000).toFixed(1)} s`);
        // Between scenarios: nothing of the last one may keep running.
        try {
            await cleanup();
        } catch (err) {
            report.check(`${name}: every process it started is gone`, false, err.message);
        }
        killEnginesSync();
    }
    report.info(`total: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    console.log(report.summary());
    process.exitCode = report.failed ? 1 : 0;
}

await main();
