/*
 * The mock engine's GPU-memory ledger (docs/mock-engine.md): one line per
 * holder, "PID GPU BYTES NAME". It stands in for the driver on hosts whose
 * GPUs are declared in the config; lines of processes that are gone are
 * stale and count for nothing.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/proc.h"
#include "gpu/gpu.h"

static struct gpu_dev *dev_by_index(struct gpu_inventory *inv, int index)
{
    for (size_t i = 0; i < inv->n; i++)
        if (inv->devs[i].index == index)
            return &inv->devs[i];
    return NULL;
}

/* Parses an unsigned decimal field and the blank after it; end is past the blanks. */
static int field_u64(const char *s, uint64_t *v, const char **end)
{
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *e;
    unsigned long long x = strtoull(s, &e, 10);
    if (errno == ERANGE || (*e != ' ' && *e != '\t'))
        return -EINVAL;
    while (*e == ' ' || *e == '\t')
        e++;
    *v = x;
    *end = e;
    return 0;
}

/* One line, without its newline: 0 (added or ignored) or -EINVAL. */
static int parse_line(char *line, struct gpu_inventory *inv)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
        line[--n] = '\0';
    const char *s = line;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s)
        return 0;

    uint64_t pid, index, bytes;
    if (field_u64(s, &pid, &s) < 0 || field_u64(s, &index, &s) < 0)
        return -EINVAL;
    /* BYTES may end the line: a holder without a name. */
    char *e;
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    bytes = strtoull(s, &e, 10);
    if (errno == ERANGE || (*e && *e != ' ' && *e != '\t'))
        return -EINVAL;
    while (*e == ' ' || *e == '\t')
        e++;
    if (pid == 0 || pid > INT_MAX || index > INT_MAX)
        return -EINVAL;

    if (!proc_alive((int)pid))
        return 0; /* stale: its holder died without removing it */
    struct gpu_dev *dev = dev_by_index(inv, (int)index);
    if (!dev)
        return 0; /* a GPU this config does not declare */
    gpu__dev_add_proc(dev, (int)pid, bytes, e);
    dev->used = dev->used > UINT64_MAX - bytes ? UINT64_MAX : dev->used + bytes;
    return 0;
}

int gpu__parse_ledger(const char *text, struct gpu_inventory *inv)
{
    char *copy = xstrdup(text ? text : "");
    int rc = 0;
    for (char *line = copy; line && rc == 0;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        rc = parse_line(line, inv);
        line = nl ? nl + 1 : NULL;
    }
    free(copy);
    for (size_t i = 0; i < inv->n; i++) {
        struct gpu_dev *d = &inv->devs[i];
        d->free = d->total > d->used ? d->total - d->used : 0;
    }
    return rc;
}
