/*
 * Following an engine's log file. The engine writes the file itself (so it
 * keeps logging while no daemon runs); the daemon reads what is new on each
 * inotify event while the engine starts, stops, sleeps or wakes, and every
 * TAIL_POLL_MS while it serves (sooner while a flood keeps it busy), classifies each line
 * through the engine adapter, keeps the last lines for failure reports, and
 * rotates the file when it passes its cap (copy, then truncate in place: the
 * engine appends with O_APPEND, so it continues at the new end).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/units.h"
#include "sup/sup_int.h"

#define TAIL_POLL_MS 250
#define TAIL_BUSY_MS 10 /* the next look after one that left bytes unread or rotated */
#define TAIL_READ_MAX (256 * 1024)
#define TAIL_SKIP_LOG_MS 10000 /* at most one "rotated with lines unread" log line per this */

_Static_assert(SUP_LINE_MAX <= UINT16_MAX, "a ring slot's capacity is a uint16_t");

void sup__tail_init(struct logtail *t, struct instance *in, const char *path)
{
    memset(t, 0, sizeof *t);
    t->in = in;
    t->path = xstrdup(path);
    t->fd = -1;
    uv_fs_event_init(in->sup->app->loop, &t->ev);
    t->ev.data = in;
    uv_timer_init(in->sup->app->loop, &t->timer);
    t->timer.data = in;
}

/*
 * Keeps the line in the ring. A slot keeps its memory for the next line that
 * fits it (a serving engine logs a line per request: no allocation for each).
 */
static void ring_push(struct logtail *t, const char *line, size_t len)
{
    size_t i = t->ring_next;
    if (t->ring_cap[i] < len + 1) {
        size_t cap = len + 1 < 256 ? 256 : len + 1; /* len < SUP_LINE_MAX */
        t->ring[i] = xrealloc(t->ring[i], cap);
        t->ring_cap[i] = (uint16_t)cap;
    }
    memcpy(t->ring[i], line, len);
    t->ring[i][len] = '\0';
    t->ring_next = (i + 1) % SUP_TAIL_LINES;
}

static void emit_line(struct logtail *t, const char *line, size_t len)
{
    while (len && line[len - 1] == '\r')
        len--;
    ring_push(t, line, len);
    sup__inst_on_line(t->in, line, len);
}

static void feed(struct logtail *t, const char *data, size_t n)
{
    const char *p = data, *end = data + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t take = (size_t)((nl ? nl : end) - p);
        /* Past SUP_LINE_MAX the rest of a line is dropped; the line still ends at '\n'. */
        size_t room = SUP_LINE_MAX - 1 - t->plen;
        memcpy(t->partial + t->plen, p, take < room ? take : room);
        t->plen += take < room ? take : room;
        if (!nl)
            return;
        p = nl + 1;
        emit_line(t, t->partial, t->plen);
        t->plen = 0;
        if (!t->active)
            return; /* the line's handling stopped the tail */
    }
}

/*
 * Copies the newest bytes of the file to PATH.1 and truncates it in place.
 * PATH.1 keeps at most `keep` bytes (from a line start; the copy is repeated
 * for what arrives while copying, within keep); bytes written after the last
 * copy and before the truncate are lost. Returns how many bytes of the file
 * the tail had not read.
 */
static uint64_t rotate(struct logtail *t, uint64_t keep)
{
    char *old = xstrfmt("%s.1", t->path);
    int in_fd = open(t->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int out_fd = open(old, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    int ok = in_fd >= 0 && out_fd >= 0;
    off_t copied = 0, end = 0;
    char buf[65536];
    uint64_t cap = keep;
    struct stat st;
    if (ok && cap && fstat(in_fd, &st) == 0 && (uint64_t)st.st_size > cap) {
        copied = st.st_size - (off_t)cap;
        ssize_t n = pread(in_fd, buf, sizeof buf, copied);
        char *nl = n > 0 ? memchr(buf, '\n', (size_t)n) : NULL;
        if (nl)
            copied += nl - buf + 1; /* start at a whole line */
    }
    off_t first = copied;
    uint64_t limit = cap ? cap : UINT64_MAX;
    for (int pass = 0; ok && pass < 4; pass++) {
        ssize_t n;
        off_t before = copied;
        while (ok && (uint64_t)(copied - first) < limit &&
               (n = pread(in_fd, buf, sizeof buf, copied)) > 0) {
            ok = write(out_fd, buf, (size_t)n) == n;
            copied += n;
        }
        if (copied == before || (uint64_t)(copied - first) >= limit)
            break;
    }
    end = copied;
    if (in_fd >= 0)
        close(in_fd);
    if (out_fd >= 0 && close(out_fd) < 0)
        ok = 0;
    uint64_t unread = end > t->off ? (uint64_t)(end - t->off) : 0;
    /* truncate(2) would follow a link put in the log's place: truncate what is opened. */
    int trunc_fd = ok ? open(t->path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
    ok = ok && trunc_fd >= 0 && ftruncate(trunc_fd, 0) == 0;
    if (trunc_fd >= 0) {
        int e = errno; /* for the warning below */
        close(trunc_fd);
        errno = e;
    }
    if (ok) {
        t->off = 0;
        /* What was kept of a line whose rest went unread is no line. */
        if (unread)
            t->plen = 0;
    } else {
        log_warn("sup", "cannot rotate '%s': %s", t->path, strerror(errno));
        unread = 0;
    }
    free(old);
    return unread;
}

/* Says, at most once per TAIL_SKIP_LOG_MS, that a rotation left lines unread. */
static void note_skipped(struct logtail *t, uint64_t unread)
{
    t->skipped += unread;
    uint64_t now = clock_mono_ms();
    if (!t->skipped || (t->skip_logged_ms && now - t->skip_logged_ms < TAIL_SKIP_LOG_MS))
        return;
    char a[32], b[32];
    log_warn("sup",
             "'%s' writes its log faster than yard reads it: rotated '%s' at its cap (%s, "
             "log_max_size) with %s unread; those lines were not classified (the newest are "
             "in '%s.1')",
             t->in->name, t->path, units_fmt_size(t->in->sup->app->cfg->log_max_bytes, a, sizeof a),
             units_fmt_size(t->skipped, b, sizeof b), t->path);
    t->skipped = 0;
    t->skip_logged_ms = now;
}

int sup__tail_poll(struct logtail *t)
{
    if (!t->active || t->fd < 0)
        return 0;
    struct stat st;
    if (fstat(t->fd, &st) < 0)
        return 0;
    if (st.st_size < t->off) /* truncated by someone else */
        t->off = 0;
    const struct config *cfg = t->in->sup->app->cfg;
    uint64_t cap = cfg ? cfg->log_max_bytes : 0;
    /*
     * Past the cap with more unread than one read takes: the engine writes
     * faster than the tail reads (a flood). Rotate first, so the file never
     * grows far past the cap, and keep half the cap in PATH.1: the other half
     * is room for what the engine writes before the next look, so the two
     * files stay within twice the cap.
     */
    if (cap && (uint64_t)st.st_size > cap && (uint64_t)(st.st_size - t->off) > TAIL_READ_MAX) {
        note_skipped(t, rotate(t, cap / 2));
        return 1;
    }
    char buf[16384];
    size_t total = 0;
    while (total < TAIL_READ_MAX) {
        ssize_t n = pread(t->fd, buf, sizeof buf, t->off);
        if (n <= 0)
            break;
        t->off += n;
        total += (size_t)n;
        feed(t, buf, (size_t)n);
        if (!t->active) /* a line's handling stopped the tail */
            return 0;
    }
    if (cap && (uint64_t)t->off > cap) {
        note_skipped(t, rotate(t, cap));
        return 1;
    }
    return total >= TAIL_READ_MAX;
}

/*
 * Whether lines are read as they come. While it loads, stops, sleeps or
 * wakes, a line can say ready or fatal: read at once. A ready engine writes
 * an access-log line per request; an inotify wake-up for each would cost the
 * proxy a read and a wake-up per request, so the timer collects them (a
 * crash reads the rest at the exit).
 */
static int wants_prompt(const struct instance *in)
{
    return in->state != INST_READY || in->op != SUP__OP_NONE;
}

static void on_timer(uv_timer_t *h);

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct instance *in = h->data;
    if (!wants_prompt(in))
        sup__tail_follow(&in->tail);
    sup__tail_poll(&in->tail);
}

static void on_timer(uv_timer_t *h)
{
    struct instance *in = h->data;
    if (sup__tail_poll(&in->tail) && in->tail.active)
        uv_timer_start(&in->tail.timer, on_timer, TAIL_BUSY_MS, TAIL_POLL_MS);
}

void sup__tail_follow(struct logtail *t)
{
    if (!t->active)
        return;
    int want = wants_prompt(t->in);
    if (want && !t->ev_active) {
        if (uv_fs_event_start(&t->ev, on_fs_event, t->path, 0) == 0)
            t->ev_active = 1;
        /* what came while it was not watched: read on the next loop turn, never inside the
         * caller (a state change, which a line's handling can itself be making) */
        uv_timer_start(&t->timer, on_timer, 0, TAIL_POLL_MS);
    } else if (!want && t->ev_active) {
        uv_fs_event_stop(&t->ev);
        t->ev_active = 0;
    }
}

void sup__tail_start(struct logtail *t, int from_end)
{
    sup__tail_stop(t);
    t->fd = open(t->path, O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (t->fd < 0) {
        log_warn("sup", "cannot read log file '%s': %s", t->path, strerror(errno));
        return;
    }
    struct stat st;
    t->off = from_end && fstat(t->fd, &st) == 0 ? st.st_size : 0;
    t->plen = 0;
    for (size_t i = 0; i < SUP_TAIL_LINES; i++) {
        free(t->ring[i]);
        t->ring[i] = NULL;
        t->ring_cap[i] = 0;
    }
    t->ring_next = 0;
    if (!t->partial)
        t->partial = xmalloc(
            SUP_LINE_MAX); /* kept until the instance goes: a line's handler may still read it */
    t->active = 1;
    uv_timer_start(&t->timer, on_timer, TAIL_POLL_MS, TAIL_POLL_MS);
    sup__tail_follow(t);
}

void sup__tail_stop(struct logtail *t)
{
    if (t->active) {
        sup__tail_poll(t);
        if (t->plen && t->partial) {
            emit_line(t, t->partial, t->plen);
            t->plen = 0;
        }
    }
    t->active = 0;
    if (t->ev_active) {
        uv_fs_event_stop(&t->ev);
        t->ev_active = 0;
    }
    uv_timer_stop(&t->timer);
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
}

void sup__tail_close(struct logtail *t, uv_close_cb cb)
{
    uv_close((uv_handle_t *)&t->ev, cb);
    uv_close((uv_handle_t *)&t->timer, cb);
}

char *sup__tail_recent(struct logtail *t, size_t max_lines)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    size_t have = 0;
    for (size_t i = 0; i < SUP_TAIL_LINES; i++)
        have += t->ring[i] != NULL;
    size_t skip = have > max_lines ? have - max_lines : 0;
    for (size_t i = 0; i < SUP_TAIL_LINES; i++) {
        const char *l = t->ring[(t->ring_next + i) % SUP_TAIL_LINES];
        if (!l)
            continue;
        if (skip) {
            skip--;
            continue;
        }
        buf_printf(&b, "%s%s", b.len ? "\n  " : "", l);
    }
    return buf_detach(&b, NULL);
}
