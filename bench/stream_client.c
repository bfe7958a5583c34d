/*
 * bench/stream_client: opens N concurrent SSE chat streams and checks every
 * one of them (bench/run section "stream"; docs/bench.md).
 *
 *   stream_client --port P --model M [--host 127.0.0.1] [--streams 1000]
 *                 [--tokens 200] [--ramp-ms 1000] [--timeout-s 120] [--dump FILE]
 *
 * Each stream is one POST /v1/chat/completions with "stream": true and
 * max_tokens T, on its own connection. The mock engine's token chunks carry
 * "content":"tokN " and, with --stamp-chunks, "mock_ns": the CLOCK_MONOTONIC
 * instant the engine wrote the chunk. The client counts, per stream, tokens
 * missing (lost), seen twice (dup), or arriving after a later one (reordered),
 * and for every stamped chunk the latency from the engine's write to this
 * client's read (--dump writes each as "MS_SINCE_START LATENCY_US", for a
 * look at when the slow ones came). Connections are opened spread over --ramp-ms. One epoll
 * loop, no threads. Prints one JSON object on stdout; exit 0 unless the
 * command line is wrong or a setup call fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX (16 * 1024)
#define LINE_MAX_BYTES (64 * 1024)

enum conn_state { C_IDLE = 0, C_CONNECTING, C_SENDING, C_HEAD, C_BODY, C_DONE };
enum chunk_state { CK_SIZE = 0, CK_DATA, CK_DATA_CRLF, CK_END };

struct conn {
    int fd;
    enum conn_state state;
    size_t sent;
    char head[HEAD_MAX];
    size_t head_len;
    int status;
    int chunked;
    long long content_left; /* -1: until EOF */
    enum chunk_state ck;
    unsigned long long ck_left;
    char ck_line[64];
    size_t ck_line_len;
    char *line;
    size_t line_len;
    unsigned char *seen; /* one bit per token index */
    int distinct, max_idx, done_marker;
    long reordered, dup, bogus;
    int failed;
};

struct opts {
    const char *host;
    int port;
    const char *model;
    int streams;
    int tokens;
    int ramp_ms;
    int timeout_s;
    const char *dump;
};

struct totals {
    long finished, completed, errors, chunks, lost, reordered, dup, bogus, unstamped;
    uint64_t *lat;    /* ns */
    uint64_t *lat_at; /* when each was read, ns since start (for --dump) */
    size_t nlat, caplat;
    uint64_t t0;
    int first_error_shown;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "stream_client: %s: %s\n", what, strerror(errno));
    exit(1);
}

static long parse_long(const char *s, const char *flag, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "stream_client: bad value '%s' for %s\n", s, flag);
        exit(2);
    }
    return v;
}

static void parse_opts(struct opts *o, int argc, char **argv)
{
    *o = (struct opts){"127.0.0.1", 0, NULL, 1000, 200, 1000, 120, NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "stream_client: option '%s' needs a value\n", a);
            exit(2);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--host") == 0)
            o->host = v;
        else if (strcmp(a, "--port") == 0)
            o->port = (int)parse_long(v, a, 1, 65535);
        else if (strcmp(a, "--model") == 0)
            o->model = v;
        else if (strcmp(a, "--streams") == 0)
            o->streams = (int)parse_long(v, a, 1, 100000);
        else if (strcmp(a, "--tokens") == 0)
            o->tokens = (int)parse_long(v, a, 1, 1000000);
        else if (strcmp(a, "--ramp-ms") == 0)
            o->ramp_ms = (int)parse_long(v, a, 0, 600000);
        else if (strcmp(a, "--timeout-s") == 0)
            o->timeout_s = (int)parse_long(v, a, 1, 3600);
        else if (strcmp(a, "--dump") == 0)
            o->dump = v;
        else {
            fprintf(stderr, "stream_client: unknown option '%s'\n", a);
            exit(2);
        }
    }
    if (!o->port || !o->model) {
        fprintf(stderr, "usage: stream_client --port P --model M [--streams N] [--tokens T]\n");
        exit(2);
    }
}

static void conn_fail(struct totals *t, struct conn *c, const char *why)
{
    if (!c->failed && !t->first_error_shown) {
        fprintf(stderr, "stream_client: stream failed: %s\n", why);
        t->first_error_shown = 1;
    }
    c->failed = 1;
}

/* A "data:" line: the token index and the engine's stamp, when present. */
static void on_data_line(struct totals *t, struct conn *c, const char *s, size_t n, int tokens,
                         uint64_t at)
{
    if (n == 6 && memcmp(s, "[DONE]", 6) == 0) {
        c->done_marker = 1;
        return;
    }
    const char *k = memmem(s, n, "\"content\":\"tok", 14);
    if (!k)
        return;
    char *end;
    long idx = strtol(k + 14, &end, 10);
    t->chunks++;
    if (end == k + 14 || idx < 0 || idx >= tokens) {
        c->bogus++;
        return;
    }
    unsigned char bit = (unsigned char)(1u << (idx & 7));
    if (c->seen[idx >> 3] & bit) {
        c->dup++;
    } else {
        c->seen[idx >> 3] |= bit;
        c->distinct++;
    }
    if (idx < c->max_idx)
        c->reordered++;
    else
        c->max_idx = (int)idx;
    const char *st = memmem(s, n, "\"mock_ns\":", 10);
    if (!st) {
        t->unstamped++;
        return;
    }
    unsigned long long ns = strtoull(st + 10, NULL, 10);
    if (t->nlat < t->caplat) {
        if (t->lat_at)
            t->lat_at[t->nlat] = at - t->t0;
        t->lat[t->nlat++] = at > ns ? at - ns : 0;
    }
}

static void feed_sse(struct totals *t, struct conn *c, const char *p, size_t n, int tokens,
                     uint64_t at)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch != '\n') {
            if (c->line_len < LINE_MAX_BYTES)
                c->line[c->line_len++] = ch;
            continue;
        }
        size_t len = c->line_len;
        if (len && c->line[len - 1] == '\r')
            len--;
        if (len >= 5 && memcmp(c->line, "data:", 5) == 0) {
            size_t off = 5;
            if (off < len && c->line[off] == ' ')
                off++;
            on_data_line(t, c, c->line + off, len - off, tokens, at);
        }
        c->line_len = 0;
    }
}

/* Decodes the chunked framing; returns 1 once the last chunk is read. */
static int feed_chunked(struct totals *t, struct conn *c, const char *p, size_t n, int tokens,
                        uint64_t at)
{
    size_t i = 0;
    while (i < n) {
        switch (c->ck) {
        case CK_SIZE: {
            char ch = p[i++];
            if (ch != '\n') {
                if (c->ck_line_len < sizeof c->ck_line - 1)
                    c->ck_line[c->ck_line_len++] = ch;
                break;
            }
            c->ck_line[c->ck_line_len] = '\0';
            c->ck_line_len = 0;
            c->ck_left = strtoull(c->ck_line, NULL, 16);
            c->ck = c->ck_left ? CK_DATA : CK_END;
            if (c->ck == CK_END)
                return 1;
            break;
        }
        case CK_DATA: {
            size_t take = n - i;
            if (take > c->ck_left)
                take = (size_t)c->ck_left;
            feed_sse(t, c, p + i, take, tokens, at);
            i += take;
            c->ck_left -= take;
            if (!c->ck_left)
                c->ck = CK_DATA_CRLF;
            break;
        }
        case CK_DATA_CRLF:
            if (p[i++] == '\n')
                c->ck = CK_SIZE;
            break;
        case CK_END:
            return 1;
        }
    }
    return 0;
}

static void parse_head(struct conn *c)
{
    c->status = 0;
    if (c->head_len > 12 && memcmp(c->head, "HTTP/1.", 7) == 0)
        c->status = (int)strtol(c->head + 9, NULL, 10);
    c->content_left = -1;
    c->chunked = 0;
    char *line = c->head;
    char *end = c->head + c->head_len;
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl)
            break;
        size_t len = (size_t)(nl - line);
        if (len > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0 &&
            memmem(line, len, "chunked", 7))
            c->chunked = 1;
        if (len > 15 && strncasecmp(line, "content-length:", 15) == 0)
            c->content_left = strtoll(line + 15, NULL, 10);
        line = nl + 1;
    }
}

static void conn_finish(struct totals *t, struct conn *c, int epfd, int tokens)
{
    if (c->state == C_DONE)
        return;
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->state = C_DONE;
    t->finished++;
    t->lost += tokens - c->distinct;
    t->reordered += c->reordered;
    t->dup += c->dup;
    t->bogus += c->bogus;
    if (c->failed || c->status != 200 || !c->done_marker || c->distinct != tokens) {
        if (!c->failed && c->status != 200) {
            char why[64];
            snprintf(why, sizeof why, "status %d", c->status);
            conn_fail(t, c, why);
        } else if (!c->failed) {
            conn_fail(t, c, c->done_marker ? "tokens missing" : "stream ended without [DONE]");
        }
        t->errors++;
    } else {
        t->completed++;
    }
    free(c->line);
    free(c->seen);
    c->line = NULL;
    c->seen = NULL;
}

static int conn_open(struct conn *c, const struct sockaddr_in *sa, int epfd, int tokens)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->line = malloc(LINE_MAX_BYTES);
    c->seen = calloc((size_t)tokens / 8 + 1, 1);
    if (!c->line || !c->seen)
        die("malloc");
    c->max_idx = -1;
    c->state = C_CONNECTING;
    if (connect(c->fd, (const struct sockaddr *)sa, sizeof *sa) < 0 && errno != EINPROGRESS)
        return -errno;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
    return 0;
}

static void on_writable(struct totals *t, struct conn *c, const char *req, size_t req_len, int epfd,
                        int tokens)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            conn_fail(t, c, strerror(err));
            conn_finish(t, c, epfd, tokens);
            return;
        }
        c->state = C_SENDING;
    }
    if (c->state != C_SENDING)
        return;
    while (c->sent < req_len) {
        ssize_t w = write(c->fd, req + c->sent, req_len - c->sent);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return;
        if (w <= 0) {
            conn_fail(t, c, strerror(errno));
            conn_finish(t, c, epfd, tokens);
            return;
        }
        c->sent += (size_t)w;
    }
    c->state = C_HEAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void on_readable(struct totals *t, struct conn *c, int epfd, int tokens)
{
    static char buf[64 * 1024];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            if (n < 0)
                conn_fail(t, c, strerror(errno));
            conn_finish(t, c, epfd, tokens);
            return;
        }
        uint64_t at = now_ns();
        const char *p = buf;
        size_t len = (size_t)n;
        if (c->state == C_HEAD) {
            size_t take = len;
            if (take > HEAD_MAX - c->head_len)
                take = HEAD_MAX - c->head_len;
            memcpy(c->head + c->head_len, p, take);
            size_t before = c->head_len;
            c->head_len += take;
            char *eoh = memmem(c->head, c->head_len, "\r\n\r\n", 4);
            if (!eoh) {
                if (c->head_len == HEAD_MAX) {
                    conn_fail(t, c, "response head too long");
                    conn_finish(t, c, epfd, tokens);
                    return;
                }
                continue;
            }
            size_t head_end = (size_t)(eoh - c->head) + 4;
            c->head_len = head_end;
            parse_head(c);
            c->state = C_BODY;
            p += head_end - before;
            len -= head_end - before;
        }
        if (c->state != C_BODY || !len)
            continue;
        int end = 0;
        if (c->chunked) {
            end = feed_chunked(t, c, p, len, tokens, at);
        } else {
            if (c->content_left >= 0 && (long long)len > c->content_left)
                len = (size_t)c->content_left;
            feed_sse(t, c, p, len, tokens, at);
            if (c->content_left >= 0) {
                c->content_left -= (long long)len;
                end = c->content_left == 0;
            }
        }
        if (end) {
            conn_finish(t, c, epfd, tokens);
            return;
        }
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const uint64_t *v, size_t n, double p)
{
    if (!n)
        return -1;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)v[i] / 1000.0;
}

int main(int argc, char **argv)
{
    struct opts o;
    parse_opts(&o, argc, argv);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
    if (inet_pton(AF_INET, o.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "stream_client: bad --host '%s' (numeric IPv4)\n", o.host);
        return 2;
    }

    char body[512];
    int blen = snprintf(body, sizeof body,
                        "{\"model\":\"%s\",\"stream\":true,\"max_tokens\":%d,"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"bench\"}]}",
                        o.model, o.tokens);
    char req[1024];
    int rlen = snprintf(req, sizeof req,
                        "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%d\r\n"
                        "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                        "Content-Length: %d\r\n\r\n%s",
                        o.host, o.port, blen, body);
    if (blen >= (int)sizeof body || rlen >= (int)sizeof req) {
        fprintf(stderr, "stream_client: --model too long\n");
        return 2;
    }

    struct conn *conns = calloc((size_t)o.streams, sizeof *conns);
    struct totals t = {0};
    t.caplat = (size_t)o.streams * (size_t)o.tokens;
    t.lat = malloc(t.caplat * sizeof *t.lat);
    if (o.dump)
        t.lat_at = malloc(t.caplat * sizeof *t.lat_at);
    if (!conns || !t.lat || (o.dump && !t.lat_at))
        die("malloc");
    for (int i = 0; i < o.streams; i++)
        conns[i].fd = -1;

    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");

    uint64_t t0 = now_ns();
    t.t0 = t0;
    uint64_t deadline = t0 + (uint64_t)o.timeout_s * 1000000000ull;
    int opened = 0;
    struct epoll_event evs[256];
    while (t.finished < o.streams) {
        uint64_t now = now_ns();
        if (now > deadline)
            break;
        /* open the connections due by now: evenly over --ramp-ms */
        uint64_t elapsed_ms = (now - t0) / 1000000;
        int due = o.ramp_ms ? (int)((elapsed_ms + 1) * (uint64_t)o.streams / (uint64_t)o.ramp_ms)
                            : o.streams;
        if (due > o.streams)
            due = o.streams;
        while (opened < due) {
            struct conn *c = &conns[opened++];
            int rc = conn_open(c, &sa, epfd, o.tokens);
            if (rc < 0) {
                conn_fail(&t, c, strerror(-rc));
                conn_finish(&t, c, epfd, o.tokens);
            }
        }
        int wait_ms = opened < o.streams ? 1 : 100;
        int n = epoll_wait(epfd, evs, 256, wait_ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == C_DONE)
                continue;
            if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                if (c->state == C_CONNECTING || c->state == C_SENDING)
                    on_writable(&t, c, req, (size_t)rlen, epfd, o.tokens);
            }
            if (c->state != C_DONE && c->state >= C_HEAD &&
                (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                on_readable(&t, c, epfd, o.tokens);
        }
    }
    int timed_out = 0;
    for (int i = 0; i < o.streams; i++) {
        if (conns[i].state != C_DONE) {
            timed_out++;
            if (conns[i].state == C_IDLE) {
                conns[i].seen = calloc((size_t)o.tokens / 8 + 1, 1);
                conns[i].line = malloc(1);
            }
            conn_fail(&t, &conns[i], "timed out");
            conn_finish(&t, &conns[i], epfd, o.tokens);
        }
    }
    uint64_t wall = now_ns() - t0;

    if (o.dump) {
        FILE *f = fopen(o.dump, "w");
        if (!f)
            die(o.dump);
        for (size_t i = 0; i < t.nlat; i++)
            fprintf(f, "%.3f %.1f\n", (double)t.lat_at[i] / 1e6, (double)t.lat[i] / 1e3);
        fclose(f);
        free(t.lat_at);
    }
    qsort(t.lat, t.nlat, sizeof *t.lat, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < t.nlat; i++)
        sum += (double)t.lat[i];
    printf("{\"streams\":%d,\"completed\":%ld,\"errors\":%ld,\"timed_out\":%d,\"chunks\":%ld,"
           "\"lost\":%ld,\"reordered\":%ld,\"dup\":%ld,\"bogus\":%ld,\"unstamped\":%ld,"
           "\"samples\":%zu,\"min_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
           "\"max_us\":%.1f,\"mean_us\":%.1f,\"wall_ms\":%.1f}\n",
           o.streams, t.completed, t.errors, timed_out, t.chunks, t.lost, t.reordered, t.dup,
           t.bogus, t.unstamped, t.nlat, pct_us(t.lat, t.nlat, 0), pct_us(t.lat, t.nlat, 50),
           pct_us(t.lat, t.nlat, 90), pct_us(t.lat, t.nlat, 99), pct_us(t.lat, t.nlat, 100),
           t.nlat ? sum / (double)t.nlat / 1000.0 : -1, (double)wall / 1e6);
    free(t.lat);
    free(conns);
    close(epfd);
    return 0;
}
