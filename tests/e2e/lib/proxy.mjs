// TCP proxies for e2e tests that cut a connection on purpose.
import net from 'node:net';

/**
 * A TCP proxy to port: counts connections; once broken (p.break()), drops
 * every one until p.mend().
 */
export async function countingProxy(port) {
    const live = new Set();
    const p = { count: 0, broken: false };
    const server = net.createServer((c) => {
        p.count++;
        if (p.broken) return c.destroy();
        const up = net.connect(port, '127.0.0.1');
        live.add(c).add(up);
        const drop = () => {
            c.destroy();
            up.destroy();
            live.delete(c);
            live.delete(up);
        };
        c.on('error', drop).on('close', drop);
        up.on('error', drop).on('close', drop);
        c.pipe(up).pipe(c);
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    p.port = server.address().port;
    p.break = () => {
        p.broken = true;
        for (const s of live) s.destroy();
        live.clear();
    };
    p.mend = () => {
        p.broken = false;
    };
    p.close = () => new Promise((resolve) => server.close(resolve));
    return p;
}
