/*
 * The marketplaces' HTTP client: one libcurl multi handle on the daemon's
 * loop. curl says which sockets to watch (CURLMOPT_SOCKETFUNCTION: a uv_poll
 * each) and when to call it back (CURLMOPT_TIMERFUNCTION: one uv_timer);
 * the loop hands events back through curl_multi_socket_action, and finished
 * transfers are read with curl_multi_info_read. A request lives from its
 * send to its callback, across attempts; between attempts it waits on a
 * timer of its own, which is also how an outcome reaches its callback on a
 * later loop turn when no transfer could even start.
 */
#include "cloud/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "cloud/curl_dl.h"

struct cloud_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer; /* curl's timeout */
    struct cloud_http_req *reqs;
    struct http_sock *socks;
    int handles; /* open libuv handles: the timer, the polls, each request's wait */
    int closing;
    int global;   /* curl_global_init was called (with the multi handle) */
    uint64_t rnd; /* xorshift64 state for the jitter */
};

/* A socket curl asked us to watch. */
struct http_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct cloud_http *h;
    struct http_sock *prev, *next;
};

struct cloud_http_req {
    struct cloud_http *h;
    struct cloud_http_req *prev, *next;
    CURL *easy; /* the attempt in flight, or NULL */
    struct curl_slist *headers;
    char *method, *url, *body;
    size_t body_len;
    size_t max_response;
    uint64_t timeout_ms;
    unsigned retry_on;
    struct cloud_backoff backoff;
    struct buf resp;
    int too_big;
    int attempts;
    uint64_t started_ms;
    uv_timer_t wait;  /* between attempts, and for an outcome without a transfer */
    int setup_failed; /* the wait delivers this outcome instead of starting an attempt */
    int finished;     /* cb ran or the request was cancelled */
    cloud_http_cb cb;
    void *arg;
    char errbuf[CURL_ERROR_SIZE];
};

/* ---- the retry schedule --------------------------------------------- */

static uint64_t backoff_step(const struct cloud_backoff *b, int retry)
{
    uint64_t d = b->base_ms;
    for (int i = 1; i < retry && d < b->cap_ms; i++)
        d *= 2;
    return d < b->cap_ms ? d : b->cap_ms;
}

uint64_t cloud_backoff_ms(const struct cloud_backoff *b, int retry, uint32_t rnd)
{
    if (retry < 1)
        return 0;
    uint64_t d = backoff_step(b, retry);
    uint64_t half = d / 2;
    return half + (d - half ? rnd % (d - half + 1) : 0);
}

uint64_t cloud_backoff_max_total_ms(const struct cloud_backoff *b)
{
    uint64_t total = 0;
    for (int k = 1; k < b->max_attempts; k++)
        total += backoff_step(b, k);
    return total;
}

static uint32_t next_rnd(struct cloud_http *h)
{
    h->rnd ^= h->rnd << 13;
    h->rnd ^= h->rnd >> 7;
    h->rnd ^= h->rnd << 17;
    return (uint32_t)(h->rnd >> 16);
}

/* ---- handles -------------------------------------------------------- */

static void handle_closed(struct cloud_http *h)
{
    if (--h->handles == 0 && h->closing) {
        int global = h->global;
        free(h);
        if (global)
            curl_global_cleanup();
    }
}

static void on_timer_closed(uv_handle_t *t)
{
    handle_closed(t->data);
}

static void on_sock_closed(uv_handle_t *p)
{
    struct http_sock *s = p->data;
    struct cloud_http *h = s->h;
    free(s);
    handle_closed(h);
}

static void sock_close(struct http_sock *s)
{
    struct cloud_http *h = s->h;
    if (s->prev)
        s->prev->next = s->next;
    else
        h->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void on_req_closed(uv_handle_t *t)
{
    struct cloud_http_req *r = t->data;
    struct cloud_http *h = r->h;
    free(r);
    handle_closed(h);
}

/* ---- requests ------------------------------------------------------- */

static void check_done(struct cloud_http *h);

/* Ends the transfer in flight, if any; the request stays. */
static void attempt_end(struct cloud_http_req *r)
{
    if (!r->easy)
        return;
    curl_multi_remove_handle(r->h->multi, r->easy);
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    buf_reset(&r->resp);
    r->too_big = 0;
    r->errbuf[0] = '\0';
}

/* Frees what the request holds and closes its timer, which frees the request. */
static void req_free(struct cloud_http_req *r)
{
    struct cloud_http *h = r->h;
    attempt_end(r);
    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    curl_slist_free_all(r->headers);
    free(r->method);
    free(r->url);
    free(r->body);
    buf_release(&r->resp);
    uv_timer_stop(&r->wait);
    uv_close((uv_handle_t *)&r->wait, on_req_closed);
}

static void deliver(struct cloud_http_req *r, struct cloud_http_result *res)
{
    res->attempts = r->attempts;
    res->elapsed_ms = uv_now(r->h->loop) - r->started_ms;
    if (!res->body)
        res->body = "";
    r->finished = 1;
    r->cb(r->arg, res);
    req_free(r);
}

static void deliver_error(struct cloud_http_req *r, int rc, const char *why)
{
    struct cloud_http_result res = {.rc = rc, .transport = why};
    deliver(r, &res);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct cloud_http_req *r = arg;
    if (buf_append(&r->resp, p, size * n) < 0) {
        r->too_big = 1;
        return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
    }
    return size * n;
}

static int setopts(struct cloud_http_req *r)
{
    CURL *e = r->easy;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, r->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)CLOUD_HTTP_CONNECT_TIMEOUT_MS) !=
           CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "yard/" YARD_VERSION) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") != CURLE_OK;
    if (strcmp(r->method, "GET") != 0)
        bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method) != CURLE_OK;
    if (r->body) {
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body) != CURLE_OK;
        bad |=
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len) != CURLE_OK;
    }
    return bad ? -EINVAL : 0;
}

static int multi_start(struct cloud_http *h, char **err);

static void attempt_start(struct cloud_http_req *r)
{
    r->attempts++;
    r->errbuf[0] = '\0';
    char *err = NULL;
    int rc = multi_start(r->h, &err);
    if (rc < 0) {
        deliver_error(r, rc, err);
        free(err);
        return;
    }
    r->easy = curl_easy_init();
    if (!r->easy) {
        deliver_error(r, -ENOMEM, "libcurl cannot make a transfer (out of memory?)");
        return;
    }
    if (setopts(r) < 0) {
        deliver_error(r, -EINVAL, "libcurl refused the request's options");
        return;
    }
    CURLMcode mc = curl_multi_add_handle(r->h->multi, r->easy);
    if (mc != CURLM_OK) {
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
        deliver_error(r, -EIO, curl_multi_strerror(mc));
    }
}

static void on_wait(uv_timer_t *t)
{
    struct cloud_http_req *r = t->data;
    if (r->setup_failed) {
        deliver_error(r, -ENOMEM, "cannot make the request (out of memory)");
        return;
    }
    attempt_start(r);
}

static int transport_retryable(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

static int transport_rc(CURLcode c, int too_big)
{
    if (too_big)
        return -EMSGSIZE;
    switch (c) {
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
        return -EHOSTUNREACH;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

/* One transfer of r ended with c: deliver its outcome, or wait and try again. */
static void attempt_done(struct cloud_http_req *r, CURLcode c)
{
    struct cloud_http_result res = {0};
    char why[CURL_ERROR_SIZE + 64];
    long status = 0;
    int retry = 0;
    if (c == CURLE_OK) {
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        res.status = status;
        res.body = r->resp.data ? r->resp.data : "";
        res.len = r->resp.len;
        char *ct = NULL;
        if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK)
            res.content_type = ct;
        retry = (status == 429 && (r->retry_on & CLOUD_RETRY_RATE)) ||
                (status >= 500 && status <= 599 && (r->retry_on & CLOUD_RETRY_SERVER));
    } else {
        res.rc = transport_rc(c, r->too_big);
        if (r->too_big)
            snprintf(why, sizeof why, "the answer is larger than %zu bytes", r->max_response);
        else
            snprintf(why, sizeof why, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(c));
        res.transport = why;
        retry = !r->too_big && transport_retryable(c) && (r->retry_on & CLOUD_RETRY_TRANSPORT);
    }
    if (retry && r->attempts < r->backoff.max_attempts) {
        uint64_t ms = cloud_backoff_ms(&r->backoff, r->attempts, next_rnd(r->h));
        log_debug("cloud", "%s %s: %s; attempt %d of %d in %llu ms", r->method, r->url,
                  res.transport ? res.transport : "retryable status", r->attempts + 1,
                  r->backoff.max_attempts, (unsigned long long)ms);
        attempt_end(r);
        uv_timer_start(&r->wait, on_wait, ms, 0);
        return;
    }
    res.retryable = retry;
    /* The answer's bytes stay until req_free, after the callback. */
    deliver(r, &res);
}

static void check_done(struct cloud_http *h)
{
    CURLMsg *m;
    int left;
    while (!h->closing && (m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        CURLcode c = m->data.result;
        if (priv)
            attempt_done((struct cloud_http_req *)(void *)priv, c);
    }
}

struct cloud_http_req *cloud_http_send(struct cloud_http *h, const struct cloud_http_opts *o,
                                       cloud_http_cb cb, void *arg)
{
    struct cloud_http_req *r = xcalloc(1, sizeof *r);
    r->h = h;
    r->cb = cb;
    r->arg = arg;
    r->method = xstrdup(o->method ? o->method : "GET");
    r->url = xstrdup(o->url);
    if (o->body) {
        r->body = xmalloc(o->body_len + 1);
        memcpy(r->body, o->body, o->body_len);
        r->body[o->body_len] = '\0';
        r->body_len = o->body_len;
    }
    r->max_response = o->max_response ? o->max_response : CLOUD_HTTP_MAX_RESPONSE;
    r->timeout_ms = o->timeout_ms ? o->timeout_ms : CLOUD_HTTP_TIMEOUT_MS;
    r->retry_on = o->retry_on;
    r->backoff = o->backoff.max_attempts > 0 ? o->backoff : CLOUD_BACKOFF_DEFAULT;
    buf_init(&r->resp, r->max_response);
    r->started_ms = uv_now(h->loop);
    uv_timer_init(h->loop, &r->wait);
    r->wait.data = r;
    h->handles++;
    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;

    /* "Expect:" turns off curl's 100-continue wait before a larger body. */
    struct curl_slist *l = curl_slist_append(NULL, "Accept: application/json");
    if (l)
        l = curl_slist_append(l, "Expect:") ? l : NULL;
    if (l && o->body)
        l = curl_slist_append(l, "Content-Type: application/json") ? l : NULL;
    if (l && o->bearer) {
        char *auth = xstrfmt("Authorization: Bearer %s", o->bearer);
        if (!curl_slist_append(l, auth)) {
            curl_slist_free_all(l);
            l = NULL;
        }
        memset(auth, 0, strlen(auth));
        free(auth);
    }
    r->headers = l;
    /*
     * The first attempt starts on the next loop turn, so that every outcome,
     * a request that cannot even be made included, comes after this returns.
     * A request sent while the client closes is answered -ECANCELED by the close.
     */
    r->setup_failed = !l;
    if (!h->closing)
        uv_timer_start(&r->wait, on_wait, 0, 0);
    return r;
}

void cloud_http_cancel(struct cloud_http_req *r)
{
    if (!r || r->finished)
        return;
    r->finished = 1;
    req_free(r);
}

/* ---- curl's callbacks ----------------------------------------------- */

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct http_sock *s = p->data;
    struct cloud_http *h = s->h;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(h->multi, s->fd, flags, &running);
    check_done(h);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct cloud_http *h = userp;
    struct http_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(h->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->fd = fd;
        s->h = h;
        if (uv_poll_init_socket(h->loop, &s->poll, fd) < 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        h->handles++;
        s->next = h->socks;
        if (h->socks)
            h->socks->prev = s;
        h->socks = s;
        curl_multi_assign(h->multi, fd, s);
    }
    int ev = ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static void on_curl_timer(uv_timer_t *t)
{
    struct cloud_http *h = t->data;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static int on_timeout(CURLM *multi, long timeout_ms, void *userp)
{
    struct cloud_http *h = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- the client ----------------------------------------------------- */

/*
 * libcurl and its multi handle, made for the first request (cloud/curl_dl.h:
 * a daemon that never asks a cloud never loads libcurl). 0, or -ENOENT /
 * -ENOMEM with *err set.
 */
static int multi_start(struct cloud_http *h, char **err)
{
    if (h->multi)
        return 0;
    if (cloud_curl_load(err) < 0)
        return -ENOENT;
    CURLcode gc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (gc != CURLE_OK) {
        *err = xstrfmt("libcurl cannot start: %s", curl_easy_strerror(gc));
        return -ENOMEM;
    }
    h->multi = curl_multi_init();
    if (!h->multi) {
        curl_global_cleanup();
        *err = xstrdup("libcurl cannot start a multi handle (out of memory?)");
        return -ENOMEM;
    }
    h->global = 1;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return 0;
}

struct cloud_http *cloud_http_new(uv_loop_t *loop)
{
    struct cloud_http *h = xcalloc(1, sizeof *h);
    h->loop = loop;
    h->rnd = uv_hrtime() ^ (uint64_t)(uintptr_t)h;
    if (!h->rnd)
        h->rnd = 0x9e3779b97f4a7c15ull;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->handles = 1;
    return h;
}

void cloud_http_close(struct cloud_http *h)
{
    if (!h || h->closing)
        return;
    h->closing = 1;
    /* Callbacks may send (answered -ECANCELED later) or cancel others: walk from the head. */
    while (h->reqs) {
        struct cloud_http_req *r = h->reqs;
        if (r->finished) { /* cannot be: finished requests leave the list */
            req_free(r);
            continue;
        }
        deliver_error(r, -ECANCELED, "the daemon is shutting down");
    }
    /* Sockets of cached connections are closed by the cleanup: none is watched past here. */
    if (h->multi) {
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, NULL);
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, NULL);
        curl_multi_cleanup(h->multi);
        h->multi = NULL;
    }
    while (h->socks)
        sock_close(h->socks);
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}
