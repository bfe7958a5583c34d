#ifndef YARD_CLOUD_S3_H
#define YARD_CLOUD_S3_H

#include <stddef.h>
#include <stdint.h>

/*
 * A small client of the S3 API for the checkpoint store (docs/checkpoint.md):
 * path-style URLs (URL/BUCKET/KEY) so any S3-compatible server answers, and
 * requests signed by libcurl's own AWS Signature Version 4
 * (CURLOPT_AWS_SIGV4). Blocking, with libcurl's easy interface: it runs in
 * the `yard checkpoint-store` child, never on the daemon's loop.
 *
 * What yard adds to what libcurl signs: x-amz-content-sha256 (the payload's
 * SHA-256, which S3 requires and libcurl before 8.x does not send) and
 * x-amz-security-token (AWS_SESSION_TOKEN), both among the signed headers.
 * Query strings are written already canonical (sorted, escaped, "k="), which
 * is what the signature covers with any libcurl version.
 */

struct s3_conf {
    char *url;    /* "https://host[:port][/path]", no trailing slash */
    char *bucket; /* the bucket's name */
    char *region; /* AWS_REGION, AWS_DEFAULT_REGION, else "us-east-1" */
    char *access_key;
    char *secret_key;
    char *token;          /* AWS_SESSION_TOKEN, or NULL */
    long timeout_s;       /* per request, no answer within it: a transport failure */
    long low_speed_limit; /* bytes per second below which, for timeout_s, a request is cut */
};

/*
 * Fills c from url, bucket and the environment (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_DEFAULT_REGION).
 * 0, or -EINVAL with *err a new one-line message (a credential missing).
 * Release with s3_conf_release.
 */
int s3_conf_from_env(struct s3_conf *c, const char *url, const char *bucket, char **err);
void s3_conf_release(struct s3_conf *c);

/*
 * The URL of key (NULL: the bucket itself) with query (already canonical,
 * NULL for none): URL/BUCKET/KEY, each byte of key outside A-Z a-z 0-9
 * - _ . ~ / escaped as %XX. Returns a new string the caller frees.
 */
char *s3_url(const struct s3_conf *c, const char *key, const char *query);
/* s as a query value: every byte outside A-Z a-z 0-9 - _ . ~ as %XX. A new string. */
char *s3_query_escape(const char *s);

/* What came back. */
struct s3_reply {
    long status;    /* the HTTP status; 0 when no answer came */
    char *body;     /* an answer kept in memory (NUL-terminated), or NULL */
    size_t len;     /* its length */
    char sha[65];   /* x-amz-meta-sha256 of the object, or "" */
    int64_t size;   /* Content-Length of a HEAD, or -1 */
    char etag[200]; /* the ETag header as it came (quotes included), or "" */
    char why[300];  /* no answer: what failed, in curl's words */
};

void s3_reply_release(struct s3_reply *r);

/* A request's payload: none, bytes in memory, or a range of an open file. */
struct s3_payload {
    const char *data; /* bytes in memory, or NULL */
    int fd;           /* a file when data is NULL and fd >= 0 */
    int64_t off;
    int64_t len;
    const char *sha; /* its SHA-256 in hex; NULL: of no payload */
};

/*
 * Sends method for key (NULL: the bucket) with query (canonical) and the
 * payload p (NULL: none), with headers (NULL-terminated "Name: value", may be
 * NULL). The answer's body goes to out_fd when it is >= 0 and the status is
 * 2xx (a download), else into r->body (at most 4 MiB; more is a failure).
 * Returns 0 when an HTTP answer came (r->status says which), -EIO with
 * r->why set when none did (the server could not be reached, the connection
 * broke, the timeout passed), -ENOSPC or the write's own error when out_fd
 * could not take the bytes.
 */
int s3_request(const struct s3_conf *c, const char *method, const char *key, const char *query,
               const struct s3_payload *p, const char *const *headers, int out_fd,
               struct s3_reply *r);

/*
 * Reads S3's error document: the text of <Code> and <Message> into code and
 * msg (each NUL-terminated, cut to its size, entities &amp; &lt; &gt; &quot;
 * &apos; decoded, control bytes as spaces). 0, or -ENOENT when body holds no
 * <Code>. Pure.
 */
int s3_error_parse(const char *body, size_t len, char *code, size_t code_size, char *msg,
                   size_t msg_size);

/*
 * The text of the first <tag>...</tag> at or after *pos in body, decoded as
 * s3_error_parse does, as a new string (NULL when there is none); *pos moves
 * past it. Pure.
 */
char *s3_xml_next(const char *body, size_t len, size_t *pos, const char *tag);

#endif
