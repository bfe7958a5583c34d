/*
 * The Vast.ai API's calls and what their failures say: one line per failed
 * call, with the API's status, its own error code and msg (or the plain
 * text of a 429, or the title of a proxy's HTML page), how many attempts the
 * retries made, and what the user can do. The offer search is the one call
 * so far (docs/cloud.md says what comes next).
 */
#include "cloud/vast.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/utf8.h"

#define API_TEXT_MAX 300 /* bytes of the API's own words kept in a line */

static const char *status_text(long status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 410:
        return "Gone";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return NULL;
    }
}

/*
 * Text from the API made one printable line: valid UTF-8, control characters
 * and runs of blanks as one space, trimmed, cut at a character boundary.
 * Returns a new string, "" when nothing is left.
 */
static char *one_line(const char *p, size_t n)
{
    char *s = utf8_sanitize(p, n, &n);
    if (!s)
        return xstrdup("");
    size_t o = 0;
    int blank = 1; /* drops leading blanks */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == ' ') {
            if (!blank)
                s[o++] = ' ';
            blank = 1;
            continue;
        }
        s[o++] = (char)c;
        blank = 0;
    }
    while (o && s[o - 1] == ' ')
        o--;
    size_t cut = utf8_cut(s, o, API_TEXT_MAX);
    s[cut] = '\0';
    if (cut < o) {
        char *t = xstrfmt("%s...", s);
        free(s);
        return t;
    }
    return s;
}

/* The <title> of an HTML page, or NULL. */
static char *html_title(const char *body, size_t len)
{
    const char *end = body + len;
    for (const char *p = body; p + 7 <= end; p++) {
        if (strncasecmp(p, "<title>", 7) != 0)
            continue;
        const char *t = p + 7;
        for (const char *q = t; q + 8 <= end; q++)
            if (!strncasecmp(q, "</title>", 8))
                return one_line(t, (size_t)(q - t));
        return NULL;
    }
    return NULL;
}

/*
 * The API's words for an answer: "401 auth_error: Invalid user key" from a
 * JSON error body (msg, else message; error is the code), the text of a
 * plain body, the title of an HTML page, or the status' name. New string.
 */
static char *api_words(const struct cloud_http_result *r)
{
    char *words = NULL;
    json_t *j = r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    if (json_is_object(j)) {
        const char *msg = json_string_value(json_object_get(j, "msg"));
        const char *code = json_string_value(json_object_get(j, "error"));
        if (!msg)
            msg = json_string_value(json_object_get(j, "message"));
        if (!msg && code)
            msg = code, code = NULL;
        if (msg) {
            char *m = one_line(msg, strlen(msg));
            char *c = code ? one_line(code, strlen(code)) : NULL;
            words = xstrfmt("%ld%s%s: %s", r->status, c && *c ? " " : "", c ? c : "", m);
            free(m);
            free(c);
        }
    } else if (!j && r->len) {
        const char *ct = r->content_type ? r->content_type : "";
        int html = strstr(ct, "html") || (r->len && r->body[0] == '<');
        char *text = html ? html_title(r->body, r->len) : one_line(r->body, r->len);
        if (text && *text)
            words = xstrfmt("%ld: %s", r->status, text);
        free(text);
    }
    json_decref(j);
    if (!words) {
        const char *name = status_text(r->status);
        words = name ? xstrfmt("%ld %s", r->status, name) : xstrfmt("status %ld", r->status);
    }
    return words;
}

static char *tries_text(const struct cloud_http_result *r)
{
    if (r->attempts <= 1)
        return xstrdup("");
    return xstrfmt(" (%d attempts in %.1f s)", r->attempts, (double)r->elapsed_ms / 1000);
}

char *cloud_vast_error(const struct cloud_http_result *r, const char *what, const char *cloud,
                       const char *url)
{
    char *tries = tries_text(r);
    char *msg;
    if (r->rc == -ECANCELED) {
        msg = xstrfmt("%s was cancelled: the daemon is shutting down", what);
    } else if (r->rc == -EMSGSIZE) {
        msg = xstrfmt("the Vast API's answer to %s is too large (%s); is clouds.%s.url the API?",
                      what, r->transport, cloud);
    } else if (r->rc < 0) {
        char *t =
            one_line(r->transport ? r->transport : "", r->transport ? strlen(r->transport) : 0);
        msg = xstrfmt("cannot reach the Vast API at '%s': %s%s; check clouds.%s.url and the "
                      "network",
                      url, t, tries, cloud);
        free(t);
    } else {
        char *words = api_words(r);
        if (r->status == 401 || r->status == 403)
            msg =
                xstrfmt("the Vast API refused the key (%s); check clouds.%s.api_key", words, cloud);
        else if (r->status == 429)
            msg = xstrfmt("the Vast API kept limiting the rate of %s (%s)%s; wait a minute and "
                          "try again",
                          what, words, tries);
        else if (r->status >= 500)
            msg = xstrfmt("the Vast API failed %s (%s)%s; try again later", what, words, tries);
        else
            msg = xstrfmt("the Vast API refused %s (%s)", what, words);
        free(words);
    }
    free(tries);
    return msg;
}

/* ---- the search ----------------------------------------------------- */

struct offers_op {
    struct cloud_query q;
    char *cloud, *url, *strictness;
    struct cloud_need need;
    struct cloud_history *hist; /* copies, the reasons too */
    size_t n_hist;
    cloud_offers_cb cb;
    void *arg;
};

static void offers_op_free(struct offers_op *op)
{
    cloud_query_release(&op->q);
    for (size_t i = 0; i < op->n_hist; i++)
        free((char *)op->hist[i].last_failure);
    free(op->hist);
    free(op->cloud);
    free(op->url);
    free(op->strictness);
    free(op);
}

static void offers_done(void *arg, const struct cloud_http_result *r)
{
    struct offers_op *op = arg;
    json_t *res = NULL;
    char *err = NULL;
    json_t *body = NULL;
    if (r->rc == 0 && r->status >= 200 && r->status <= 299)
        body = json_loadb(r->body, r->len, 0, NULL);
    json_t *offers = json_object_get(body, "offers");
    if (r->rc < 0 || r->status < 200 || r->status > 299 ||
        json_is_false(json_object_get(body, "success"))) {
        err = cloud_vast_error(r, "the search", op->cloud, op->url);
    } else if (!json_is_array(offers)) {
        char *t = one_line(r->body, r->len);
        err = xstrfmt("the Vast API answered the search with no list of offers ('%s'); is "
                      "clouds.%s.url the API?",
                      t, op->cloud);
        free(t);
    } else if (json_array_size(offers) > CLOUD_VAST_OFFERS_MAX) {
        err = xstrfmt("the Vast API answered the search with %zu offers, more than the %d yard "
                      "reads (it asked for %d); is clouds.%s.url the API?",
                      json_array_size(offers), CLOUD_VAST_OFFERS_MAX, CLOUD_VAST_SEARCH_LIMIT,
                      op->cloud);
    } else {
        res = cloud_vast_rank(&op->q, offers, op->hist, op->n_hist);
        json_t *need =
            json_pack("{s:i, s:o}", "gpus", op->need.gpus, "vram",
                      op->need.vram ? json_integer((json_int_t)op->need.vram) : json_null());
        if (res && need && json_object_set_new(res, "cloud", json_string(op->cloud)) == 0 &&
            json_object_set_new(res, "strictness", json_string(op->strictness)) == 0 &&
            json_object_set_new(res, "need", need) == 0 &&
            json_object_set(res, "query", op->q.body) == 0) {
            need = NULL;
        } else {
            json_decref(need);
            json_decref(res);
            res = NULL;
            err = xstrdup("out of memory ranking the offers");
        }
        log_info("cloud", "'%s': %zu offers ranked, %zu excluded (%d attempt%s)", op->cloud,
                 json_array_size(json_object_get(res, "offers")),
                 json_array_size(json_object_get(res, "excluded")), r->attempts,
                 r->attempts == 1 ? "" : "s");
    }
    json_decref(body);
    op->cb(op->arg, res, err);
    free(err);
    offers_op_free(op);
}

int cloud_vast_offers(struct cloud_http *h, const struct config_cloud *cc,
                      const struct cloud_need *need, const int64_t *bad, size_t n_bad,
                      const struct cloud_history *hist, size_t n_hist, cloud_offers_cb cb,
                      void *arg, char **err)
{
    char why[512];
    char *key = config_cloud_api_key(cc, why, sizeof why);
    if (!key) {
        *err = xstrdup(why);
        return -EINVAL;
    }
    struct offers_op *op = xcalloc(1, sizeof *op);
    char *body = NULL;
    int rc = cloud_vast_query(cc, need, bad, n_bad, &op->q, err);
    if (rc == 0 && !(body = json_dumps(op->q.body, JSON_COMPACT | JSON_REAL_PRECISION(15)))) {
        *err = xstrdup("out of memory building the search");
        rc = -ENOMEM;
    }
    if (rc < 0) {
        offers_op_free(op);
        memset(key, 0, strlen(key));
        free(key);
        return rc;
    }
    op->cloud = xstrdup(cc->name);
    op->url = xstrdup(cc->url);
    op->strictness = xstrdup(config_strictness_name(cc->strictness));
    op->need = *need;
    if (n_hist) {
        op->hist = xcalloc(n_hist, sizeof *op->hist);
        for (size_t i = 0; i < n_hist; i++) {
            op->hist[i] = hist[i];
            op->hist[i].last_failure = hist[i].last_failure ? xstrdup(hist[i].last_failure) : NULL;
        }
        op->n_hist = n_hist;
    }
    op->cb = cb;
    op->arg = arg;
    char *url = xstrfmt("%s/api/v0/bundles/", cc->url);
    struct cloud_http_opts o = {
        .method = "POST",
        .url = url,
        .bearer = key,
        .body = body,
        .body_len = strlen(body),
        .max_response = CLOUD_VAST_SEARCH_MAX_BYTES,
        .retry_on = CLOUD_RETRY_ALL,
    };
    cloud_http_send(h, &o, offers_done, op);
    free(url);
    free(body);
    memset(key, 0, strlen(key));
    free(key);
    return 0;
}

/* ---- instances ------------------------------------------------------ */

struct call_op {
    char *cloud, *url, *what;
    int destroy; /* a 404 no_such_instance is what was wanted */
    cloud_vast_cb cb;
    void *arg;
};

static void call_done(void *arg, const struct cloud_http_result *r)
{
    struct call_op *op = arg;
    json_t *body = r->rc == 0 && r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    char *err = NULL;
    long status = r->rc == 0 ? r->status : 0;
    int ok = r->rc == 0 && r->status >= 200 && r->status <= 299 &&
             !json_is_false(json_object_get(body, "success"));
    if (!ok && op->destroy && r->rc == 0 && r->status == 404) {
        const char *code = json_string_value(json_object_get(body, "error"));
        if (code && strcmp(code, "no_such_instance") == 0)
            ok = 1;
    }
    if (!ok)
        err = cloud_vast_error(r, op->what, op->cloud, op->url);
    else if (!json_is_object(body) && !op->destroy)
        err = xstrfmt("the Vast API answered %s with no JSON object; is clouds.%s.url the API?",
                      op->what, op->cloud);
    op->cb(op->arg, json_is_object(body) ? body : NULL, status, err);
    json_decref(body);
    free(err);
    free(op->cloud);
    free(op->url);
    free(op->what);
    free(op);
}

/* Sends method path (under the cloud's url) with body (may be NULL). */
static int vast_call(struct cloud_http *h, const struct config_cloud *cc, const char *method,
                     const char *path, const json_t *body, unsigned retry_on, const char *what,
                     int destroy, cloud_vast_cb cb, void *arg, char **err)
{
    char why[512];
    char *key = config_cloud_api_key(cc, why, sizeof why);
    if (!key) {
        *err = xstrdup(why);
        return -EINVAL;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    if (body && !text) {
        memset(key, 0, strlen(key));
        free(key);
        *err = xstrfmt("out of memory building %s", what);
        return -ENOMEM;
    }
    struct call_op *op = xcalloc(1, sizeof *op);
    op->cloud = xstrdup(cc->name);
    op->url = xstrdup(cc->url);
    op->what = xstrdup(what);
    op->destroy = destroy;
    op->cb = cb;
    op->arg = arg;
    char *url = xstrfmt("%s%s", cc->url, path);
    struct cloud_http_opts o = {
        .method = method,
        .url = url,
        .bearer = key,
        .body = text,
        .body_len = text ? strlen(text) : 0,
        .max_response = CLOUD_VAST_SEARCH_MAX_BYTES,
        .retry_on = retry_on,
    };
    cloud_http_send(h, &o, call_done, op);
    free(url);
    free(text);
    memset(key, 0, strlen(key));
    free(key);
    return 0;
}

int cloud_vast_create(struct cloud_http *h, const struct config_cloud *cc,
                      const struct cloud_vast_create *c, cloud_vast_cb cb, void *arg, char **err)
{
    uint64_t gb = (c->disk + 999999999u) / 1000000000u;
    json_t *body = json_pack("{s:s, s:s, s:I, s:s, s:o, s:s, s:s, s:b}", "client_id", "me", "image",
                             c->image, "disk", (json_int_t)(gb ? gb : 1), "label", c->label, "env",
                             c->env ? json_incref(c->env) : json_object(), "onstart",
                             c->onstart ? c->onstart : "", "runtype", "ssh_direc ssh_proxy",
                             "cancel_unavail", 1);
    char *path = xstrfmt("/api/v0/asks/%lld/", (long long)c->offer);
    int rc =
        body ? vast_call(h, cc, "PUT", path, body, CLOUD_RETRY_RATE, "the create", 0, cb, arg, err)
             : (*err = xstrdup("out of memory building the create"), -ENOMEM);
    free(path);
    json_decref(body);
    return rc;
}

int64_t cloud_vast_new_contract(const json_t *body)
{
    json_t *v = json_object_get(body, "new_contract");
    if (json_is_integer(v))
        return json_integer_value(v) > 0 ? json_integer_value(v) : 0;
    const char *s = json_string_value(v);
    if (!s || !*s)
        return 0;
    char *end = NULL;
    long long n = strtoll(s, &end, 10);
    return end && *end == '\0' && n > 0 ? n : 0;
}

int cloud_vast_offer_gone(const json_t *body, long status)
{
    if (status == 410)
        return 1;
    const char *code = json_string_value(json_object_get(body, "error"));
    const char *msg = json_string_value(json_object_get(body, "msg"));
    return status == 404 &&
           ((code && strstr(code, "no_such_ask")) || (msg && strstr(msg, "no_such_ask")));
}

int cloud_vast_instance(struct cloud_http *h, const struct config_cloud *cc, int64_t id,
                        cloud_vast_cb cb, void *arg, char **err)
{
    char *path = xstrfmt("/api/v0/instances/%lld/?owner=me", (long long)id);
    int rc = vast_call(h, cc, "GET", path, NULL, CLOUD_RETRY_ALL, "the read of an instance", 0, cb,
                       arg, err);
    free(path);
    return rc;
}

int cloud_vast_destroy(struct cloud_http *h, const struct config_cloud *cc, int64_t id,
                       cloud_vast_cb cb, void *arg, char **err)
{
    char *path = xstrfmt("/api/v0/instances/%lld/", (long long)id);
    json_t *body = json_object();
    /* a destroy may be repeated: it is retried on everything */
    int rc =
        vast_call(h, cc, "DELETE", path, body, CLOUD_RETRY_ALL, "the destroy", 1, cb, arg, err);
    json_decref(body);
    free(path);
    return rc;
}

int cloud_vast_attach_key(struct cloud_http *h, const struct config_cloud *cc, int64_t id,
                          const char *pubkey, cloud_vast_cb cb, void *arg, char **err)
{
    char *path = xstrfmt("/api/v0/instances/%lld/ssh/", (long long)id);
    json_t *body = json_pack("{s:s}", "ssh_key", pubkey);
    int rc =
        vast_call(h, cc, "POST", path, body, CLOUD_RETRY_ALL, "the key's attach", 0, cb, arg, err);
    json_decref(body);
    free(path);
    return rc;
}

/* s percent-encoded for a query string (RFC 3986 unreserved bytes kept). New string. */
static char *url_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = xmalloc(strlen(s) * 3 + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

int cloud_vast_by_label(struct cloud_http *h, const struct config_cloud *cc, const char *label,
                        cloud_vast_cb cb, void *arg, char **err)
{
    json_t *f = json_pack("{s:{s:s}}", "label", "eq", label);
    char *text = json_dumps(f, JSON_COMPACT);
    json_decref(f);
    if (!text) {
        *err = xstrdup("out of memory building the list of instances");
        return -ENOMEM;
    }
    char *q = url_escape(text);
    free(text);
    char *path = xstrfmt("/api/v1/instances/?select_filters=%s&limit=25", q);
    free(q);
    int rc = vast_call(h, cc, "GET", path, NULL, CLOUD_RETRY_ALL, "the list of instances", 0, cb,
                       arg, err);
    free(path);
    return rc;
}

static char *trimmed(const char *s)
{
    if (!s)
        return NULL;
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return n ? xstrndup(s, n) : NULL;
}

/* A port from a number or a numeric string (HostPort is text); 0 when none. */
static int port_of(const json_t *v)
{
    long long n = 0;
    if (json_is_integer(v)) {
        n = json_integer_value(v);
    } else if (json_is_string(v)) {
        char *end = NULL;
        const char *s = json_string_value(v);
        n = strtoll(s, &end, 10);
        if (end == s || *end)
            n = 0;
    }
    return n > 0 && n < 65536 ? (int)n : 0;
}

int cloud_vast_ssh_addr(const json_t *inst, char **host, int *port)
{
    json_t *map = json_object_get(json_object_get(inst, "ports"), "22/tcp");
    char *ip = trimmed(json_string_value(json_object_get(inst, "public_ipaddr")));
    int p = port_of(json_object_get(json_array_get(map, 0), "HostPort"));
    if (ip && p) {
        *host = ip;
        *port = p;
        return 0;
    }
    free(ip);
    char *proxy = trimmed(json_string_value(json_object_get(inst, "ssh_host")));
    p = port_of(json_object_get(inst, "ssh_port"));
    if (proxy && p) {
        *host = proxy;
        *port = p;
        return 0;
    }
    free(proxy);
    return -ENOENT;
}
