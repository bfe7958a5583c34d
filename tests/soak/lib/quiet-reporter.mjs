// A node:test reporter that prints nothing. The soak scripts are plain node
// programs that import the e2e harness, which registers a node:test `after` hook
// for its cleanup; without this the default reporter would add TAP lines after
// the soak's own summary line.
export default async function* quiet(source) {
    for await (const _ of source) {
        // drop every event
    }
}
