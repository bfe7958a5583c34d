/*
 * s3: path-style S3 requests signed by libcurl's SigV4 (see s3.h). Blocking,
 * one easy handle per request; the checkpoint store's child is its only user.
 */
#include "cloud/s3.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "base/alloc.h"
#include "base/buf.h"

#define S3_MAX_BODY (4u << 20)
#define S3_CONNECT_TIMEOUT_S 10L

static char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? xstrdup(v) : NULL;
}

int s3_conf_from_env(struct s3_conf *c, const char *url, const char *bucket, char **err)
{
    memset(c, 0, sizeof *c);
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    c->url = xstrndup(url, n);
    c->bucket = xstrdup(bucket);
    c->region = env_or_null("AWS_REGION");
    if (!c->region)
        c->region = env_or_null("AWS_DEFAULT_REGION");
    if (!c->region)
        c->region = xstrdup("us-east-1");
    c->access_key = env_or_null("AWS_ACCESS_KEY_ID");
    c->secret_key = env_or_null("AWS_SECRET_ACCESS_KEY");
    c->token = env_or_null("AWS_SESSION_TOKEN");
    c->timeout_s = 60;
    c->low_speed_limit = 1;
    if (!c->access_key || !c->secret_key) {
        *err = xstrfmt("%s is not set; export the store's credentials (AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY) in yard serve's environment",
                       !c->access_key ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY");
        s3_conf_release(c);
        return -EINVAL;
    }
    return 0;
}

void s3_conf_release(struct s3_conf *c)
{
    free(c->url);
    free(c->bucket);
    free(c->region);
    free(c->access_key);
    free(c->secret_key);
    free(c->token);
    memset(c, 0, sizeof *c);
}

static int unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_' || ch == '.' || ch == '~';
}

static void escape_into(struct buf *b, const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (unreserved(*p) || (keep_slash && *p == '/')) {
            buf_append(b, p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            buf_append(b, e, 3);
        }
    }
}

char *s3_url(const struct s3_conf *c, const char *key, const char *query)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    buf_appends(&b, c->url);
    buf_appends(&b, "/");
    escape_into(&b, c->bucket, 0);
    if (key) {
        buf_appends(&b, "/");
        escape_into(&b, key, 1);
    }
    if (query && *query) {
        buf_appends(&b, "?");
        buf_appends(&b, query);
    }
    char *s = buf_detach(&b, NULL);
    return s ? s : xstrdup("");
}

char *s3_query_escape(const char *s)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    escape_into(&b, s, 0);
    char *r = buf_detach(&b, NULL);
    return r ? r : xstrdup("");
}

void s3_reply_release(struct s3_reply *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

struct xfer {
    CURL *h;
    const struct s3_payload *p;
    int64_t sent;
    int out_fd;
    int write_err;
    struct buf body;
    struct s3_reply *r;
};

static size_t on_read(char *dst, size_t size, size_t nmemb, void *arg)
{
    struct xfer *x = arg;
    const struct s3_payload *p = x->p;
    size_t want = size * nmemb;
    int64_t left = p->len - x->sent;
    if (left <= 0)
        return 0;
    if ((int64_t)want > left)
        want = (size_t)left;
    if (p->data) {
        memcpy(dst, p->data + x->sent, want);
    } else {
        ssize_t n = pread(p->fd, dst, want, p->off + x->sent);
        if (n <= 0)
            return CURL_READFUNC_ABORT; /* the file shrank or cannot be read */
        want = (size_t)n;
    }
    x->sent += (int64_t)want;
    return want;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct xfer *x = arg;
    size_t n = size * nmemb;
    long status = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
    if (x->out_fd >= 0 && status >= 200 && status < 300) {
        size_t done = 0;
        while (done < n) {
            ssize_t w = write(x->out_fd, data + done, n - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                x->write_err = w < 0 ? -errno : -ENOSPC;
                return 0;
            }
            done += (size_t)w;
        }
        return n;
    }
    if (buf_append(&x->body, data, n) < 0)
        return 0;
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct xfer *x = arg;
    size_t n = size * nmemb;
    static const char meta[] = "x-amz-meta-sha256:";
    static const char clen[] = "content-length:";
    static const char etag[] = "etag:";
    if (n > sizeof meta && !strncasecmp(data, meta, sizeof meta - 1)) {
        const char *v = data + sizeof meta - 1;
        const char *end = data + n;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        size_t k = 0;
        while (v + k < end && k < 64 &&
               ((v[k] >= '0' && v[k] <= '9') || (v[k] >= 'a' && v[k] <= 'f')))
            k++;
        if (k == 64) {
            memcpy(x->r->sha, v, 64);
            x->r->sha[64] = 0;
        }
    } else if (n > sizeof clen && !strncasecmp(data, clen, sizeof clen - 1)) {
        char tmp[32];
        size_t k = n - (sizeof clen - 1) < sizeof tmp - 1 ? n - (sizeof clen - 1) : sizeof tmp - 1;
        memcpy(tmp, data + sizeof clen - 1, k);
        tmp[k] = 0;
        char *e = NULL;
        long long v = strtoll(tmp, &e, 10);
        if (e != tmp && v >= 0)
            x->r->size = v;
    } else if (n > sizeof etag && !strncasecmp(data, etag, sizeof etag - 1)) {
        const char *v = data + sizeof etag - 1, *end = data + n;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
            end--;
        size_t k = (size_t)(end - v) < sizeof x->r->etag ? (size_t)(end - v) : 0;
        memcpy(x->r->etag, v, k);
        x->r->etag[k] = 0;
    } else if (n >= 5 && !strncmp(data, "HTTP/", 5)) {
        /* A new answer (after a 100 Continue): what the last one said does not count. */
        x->r->sha[0] = 0;
        x->r->etag[0] = 0;
        x->r->size = -1;
    }
    return n;
}

int s3_request(const struct s3_conf *c, const char *method, const char *key, const char *query,
               const struct s3_payload *p, const char *const *headers, int out_fd,
               struct s3_reply *r)
{
    static const char empty_sha[] =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    memset(r, 0, sizeof *r);
    r->size = -1;
    struct xfer x = {.p = p, .out_fd = out_fd, .r = r};
    buf_init(&x.body, S3_MAX_BODY);
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(r->why, sizeof r->why, "cannot make a curl handle");
        return -EIO;
    }
    x.h = h;
    char *url = s3_url(c, key, query);
    char *sigv4 = xstrfmt("aws:amz:%s:s3", c->region);
    char *hsha = xstrfmt("x-amz-content-sha256: %s", p && p->sha ? p->sha : empty_sha);
    struct curl_slist *hl = curl_slist_append(NULL, hsha);
    char *htok = c->token ? xstrfmt("x-amz-security-token: %s", c->token) : NULL;
    if (htok)
        hl = curl_slist_append(hl, htok);
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    char errbuf[CURL_ERROR_SIZE] = "";

    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, c->access_key);
    curl_easy_setopt(h, CURLOPT_PASSWORD, c->secret_key);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, S3_CONNECT_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, c->low_speed_limit);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->timeout_s);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    if (!strcmp(method, "HEAD")) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(method, "PUT")) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &x);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)(p ? p->len : 0));
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, p && p->data ? p->data : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(p && p->data ? p->len : 0));
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }

    CURLcode cc = curl_easy_perform(h);
    int rc = 0;
    if (x.write_err < 0) {
        rc = x.write_err;
        snprintf(r->why, sizeof r->why, "cannot write what came: %s", strerror(-rc));
    } else if (cc != CURLE_OK) {
        rc = -EIO;
        snprintf(r->why, sizeof r->why, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
        r->body = buf_detach(&x.body, &r->len);
    }
    buf_release(&x.body);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    free(url);
    free(sigv4);
    free(hsha);
    free(htok);
    return rc;
}

/* Copies text[0..n) into dst decoded (entities, control bytes as spaces), cut to size. */
static void xml_text(const char *text, size_t n, char *dst, size_t size)
{
    static const struct {
        const char *ent;
        char ch;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < size;) {
        char ch = text[i];
        size_t step = 1;
        if (ch == '&') {
            for (size_t e = 0; e < sizeof ents / sizeof ents[0]; e++) {
                size_t el = strlen(ents[e].ent);
                if (n - i >= el && !memcmp(text + i, ents[e].ent, el)) {
                    ch = ents[e].ch;
                    step = el;
                    break;
                }
            }
        }
        if ((unsigned char)ch < ' ' || ch == 0x7f)
            ch = ' ';
        dst[o++] = ch;
        i += step;
    }
    dst[o] = 0;
}

/* Where "<tag>" starts at or after from, and its text's start and end. 0 or -ENOENT. */
static int xml_find(const char *body, size_t len, size_t from, const char *tag, size_t *start,
                    size_t *end)
{
    char open[80], close[80];
    int ol = snprintf(open, sizeof open, "<%s>", tag);
    int cl = snprintf(close, sizeof close, "</%s>", tag);
    if (ol <= 0 || cl <= 0 || (size_t)ol >= sizeof open || (size_t)cl >= sizeof close)
        return -ENOENT;
    for (size_t i = from; i + (size_t)ol <= len; i++) {
        if (memcmp(body + i, open, (size_t)ol) != 0)
            continue;
        size_t s = i + (size_t)ol;
        for (size_t j = s; j + (size_t)cl <= len; j++) {
            if (!memcmp(body + j, close, (size_t)cl)) {
                *start = s;
                *end = j;
                return 0;
            }
        }
        return -ENOENT;
    }
    return -ENOENT;
}

int s3_error_parse(const char *body, size_t len, char *code, size_t code_size, char *msg,
                   size_t msg_size)
{
    size_t s, e;
    if (!body || xml_find(body, len, 0, "Code", &s, &e) < 0)
        return -ENOENT;
    xml_text(body + s, e - s, code, code_size);
    if (xml_find(body, len, 0, "Message", &s, &e) == 0)
        xml_text(body + s, e - s, msg, msg_size);
    else if (msg_size)
        msg[0] = 0;
    return 0;
}

char *s3_xml_next(const char *body, size_t len, size_t *pos, const char *tag)
{
    size_t s, e;
    if (!body || *pos > len || xml_find(body, len, *pos, tag, &s, &e) < 0)
        return NULL;
    char *out = xmalloc(e - s + 1);
    xml_text(body + s, e - s, out, e - s + 1);
    *pos = e;
    return out;
}
