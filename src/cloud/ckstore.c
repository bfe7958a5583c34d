/*
 * ckstore: a CRIU images directory to and from S3, one generation per dump
 * (see ckstore.h and docs/checkpoint.md). Every failure is one line naming
 * the model and, where the store answered, its own <Code> and <Message>.
 */
#include "cloud/ckstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/sha256.h"

#define READ_BLOCK (1u << 20)

void ckstore_manifest_release(struct ckstore_manifest *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->files[i].name);
    free(m->files);
    free(m->model);
    free(m->generation);
    free(m->launch);
    memset(m, 0, sizeof *m);
}

int ckstore_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 255 || !strcmp(name, ".") || !strcmp(name, ".."))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '#'))
            return 0;
    }
    return 1;
}

int ckstore_valid_generation(const char *s)
{
    /* YYYYMMDDTHHMMSS.mmmZ */
    static const char shape[] = "ddddddddTdddddd.dddZ";
    if (strlen(s) != sizeof shape - 1)
        return 0;
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return 0;
    }
    return 1;
}

void ckstore_generation_name(int64_t wall_ms, char out[32])
{
    time_t t = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y%m%dT%H%M%S", &tm);
    snprintf(out, 32, "%s.%03dZ", base, (int)(wall_ms % 1000));
}

char *ckstore_key(const char *prefix, const char *model, const char *gen, const char *file)
{
    if (!gen)
        return xstrfmt("%s%s/", prefix, model);
    return xstrfmt("%s%s/%s/%s", prefix, model, gen, file ? file : "");
}

int ckstore_split_key(const char *prefix, const char *model, const char *key, char *gen,
                      size_t gen_size, char *file, size_t file_size)
{
    char *base = ckstore_key(prefix, model, NULL, NULL);
    size_t bl = strlen(base);
    int ok = !strncmp(key, base, bl);
    free(base);
    if (!ok)
        return -EINVAL;
    const char *g = key + bl, *slash = strchr(g, '/');
    if (!slash || (size_t)(slash - g) >= gen_size || strlen(slash + 1) >= file_size ||
        strchr(slash + 1, '/'))
        return -EINVAL;
    memcpy(gen, g, (size_t)(slash - g));
    gen[slash - g] = 0;
    memcpy(file, slash + 1, strlen(slash + 1) + 1);
    return 0;
}

char *ckstore_manifest_json(const struct ckstore_manifest *m)
{
    json_t *files = json_array();
    for (size_t i = 0; i < m->n; i++)
        json_array_append_new(files,
                              json_pack("{s:s, s:I, s:s}", "name", m->files[i].name, "size",
                                        (json_int_t)m->files[i].size, "sha256", m->files[i].sha));
    json_t *o = json_pack("{s:i, s:s, s:s, s:o}", "version", 1, "model", m->model, "generation",
                          m->generation, "files", files);
    if (o && m->launch)
        json_object_set_new(o, "launch", json_string(m->launch));
    char *s = o ? json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s ? s : xstrdup("{}");
}

static int valid_sha(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int ckstore_manifest_parse(const char *text, size_t len, struct ckstore_manifest *m, char **err)
{
    memset(m, 0, sizeof *m);
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    json_t *files = NULL;
    const char *model = NULL, *gen = NULL;
    json_int_t version = 0;
    if (!o ||
        json_unpack(o, "{s:I, s:s, s:s, s:o}", "version", &version, "model", &model, "generation",
                    &gen, "files", &files) < 0 ||
        !json_is_array(files)) {
        *err = xstrdup("the manifest is not a JSON object with version, model, generation and "
                       "files");
        goto fail;
    }
    if (version != 1) {
        *err =
            xstrfmt("the manifest has version %lld; this yard reads version 1", (long long)version);
        goto fail;
    }
    if (!ckstore_valid_generation(gen)) {
        *err = xstrdup("the manifest names no valid generation");
        goto fail;
    }
    if (json_array_size(files) == 0 || json_array_size(files) > CKSTORE_FILES_MAX) {
        *err = xstrfmt("the manifest lists %zu files", json_array_size(files));
        goto fail;
    }
    json_t *launch = json_object_get(o, "launch");
    if (launch && (!json_is_string(launch) || !valid_sha(json_string_value(launch)))) {
        *err = xstrdup("the manifest's launch is not 64 hex digits");
        goto fail;
    }
    m->model = xstrdup(model);
    m->generation = xstrdup(gen);
    m->launch = launch ? xstrdup(json_string_value(launch)) : NULL;
    m->files = xcalloc(json_array_size(files), sizeof *m->files);
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        const char *name = NULL, *sha = NULL;
        json_int_t size = -1;
        if (json_unpack(f, "{s:s, s:I, s:s}", "name", &name, "size", &size, "sha256", &sha) < 0 ||
            !ckstore_valid_name(name) || size < 0 || !valid_sha(sha)) {
            *err = xstrfmt("the manifest's file %zu has no valid name, size and sha256", i + 1);
            goto fail;
        }
        for (size_t k = 0; k < m->n; k++) {
            if (!strcmp(m->files[k].name, name)) {
                *err = xstrfmt("the manifest lists '%s' twice", name);
                goto fail;
            }
        }
        m->files[m->n].name = xstrdup(name);
        m->files[m->n].size = size;
        memcpy(m->files[m->n].sha, sha, 65);
        m->n++;
    }
    json_decref(o);
    return 0;
fail:
    json_decref(o);
    ckstore_manifest_release(m);
    return -EPROTO;
}

int ckstore_read_launch(const char *dir, char out[65])
{
    char *path = xstrfmt("%s/%s", dir, CKSTORE_LAUNCH_FILE);
    FILE *f = fopen(path, "re");
    free(path);
    if (!f)
        return errno == ENOENT ? -ENOENT : -errno;
    char line[256];
    int rc = -EPROTO;
    while (rc < 0 && fgets(line, sizeof line, f)) {
        size_t n = strcspn(line, "\n");
        line[n] = 0;
        if (!strncmp(line, "launch ", 7) && valid_sha(line + 7)) {
            memcpy(out, line + 7, 65);
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

int ckstore_file_sha(const char *path, char sha[65], int64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct sha256 s;
    sha256_init(&s);
    char *block = xmalloc(READ_BLOCK);
    int64_t total = 0;
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, block, READ_BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        sha256_update(&s, block, (size_t)n);
        total += n;
    }
    free(block);
    close(fd);
    if (rc < 0)
        return rc;
    unsigned char d[32];
    sha256_final(&s, d);
    sha256_hex(d, sha);
    *size = total;
    return 0;
}

static void sha_of(const void *data, size_t len, char out[65])
{
    struct sha256 s;
    unsigned char d[32];
    sha256_init(&s);
    sha256_update(&s, data, len);
    sha256_final(&s, d);
    sha256_hex(d, out);
}

/* What to do about a store's code, for the message's end. */
static const char *hint(const char *code, int transport)
{
    if (transport)
        return "check tools.checkpoint_store.url and that the store is up";
    if (!strcmp(code, "SignatureDoesNotMatch"))
        return "check AWS_SECRET_ACCESS_KEY";
    if (!strcmp(code, "InvalidAccessKeyId"))
        return "check AWS_ACCESS_KEY_ID";
    if (!strcmp(code, "ExpiredToken") || !strcmp(code, "InvalidToken"))
        return "renew AWS_SESSION_TOKEN";
    if (!strcmp(code, "NoSuchBucket"))
        return "create the bucket or fix tools.checkpoint_store.bucket";
    if (!strcmp(code, "AccessDenied"))
        return "give the key access to the bucket and prefix";
    if (!strcmp(code, "RequestTimeTooSkewed"))
        return "set this machine's clock right";
    if (!strcmp(code, "AuthorizationHeaderMalformed"))
        return "check AWS_REGION";
    return NULL;
}

/*
 * Sets *err for a request that did not go as it should and says what kind
 * of failure it was: no answer, or a status that a retry may change, is
 * transient; any other refusal is not.
 */
static int failed(const struct ckstore *s, const char *verb, int rc, const struct s3_reply *r,
                  char **err)
{
    if (rc < 0 && rc != -EIO) {
        *err = xstrfmt("checkpoint store: %s of '%s' failed: %s", verb, s->model, r->why);
        return CKSTORE_LOCAL;
    }
    if (rc < 0) {
        const char *h = hint("", 1);
        *err = xstrfmt("checkpoint store: %s of '%s' failed: no answer from %s (%s); %s", verb,
                       s->model, s->s3.url, r->why, h);
        return CKSTORE_TRANSIENT;
    }
    char code[80] = "", msg[240] = "";
    if (s3_error_parse(r->body, r->len, code, sizeof code, msg, sizeof msg) < 0)
        snprintf(code, sizeof code, "HTTP");
    int again = r->status >= 500 || r->status == 429 || r->status == 408 || r->status < 200;
    const char *h = hint(code, 0);
    *err = xstrfmt("checkpoint store: %s of '%s' %s (%ld %s%s%s)%s%s", verb, s->model,
                   again ? "failed" : "refused", r->status, code, msg[0] ? ": " : "", msg,
                   h ? "; " : "", h ? h : "");
    return again ? CKSTORE_TRANSIENT : CKSTORE_REFUSED;
}

static int ok_status(const struct s3_reply *r)
{
    return r->status >= 200 && r->status < 300;
}

/* A 200 that carries an error (CompleteMultipartUpload may): treated as a 500. */
static int body_is_error(const struct s3_reply *r)
{
    return r->body && r->len && strstr(r->body, "<Error>");
}

struct local_file {
    char *name;
    int64_t size;
    char sha[65];
};

static int cmp_local(const void *a, const void *b)
{
    return strcmp(((const struct local_file *)a)->name, ((const struct local_file *)b)->name);
}

static void local_release(struct local_file *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(f[i].name);
    free(f);
}

/* The regular files of dir (but skip and the daemon's note of the upload), sorted, with their sizes
 * and checksums. */
static int scan_dir(const struct ckstore *s, const char *dir, const char *skip,
                    struct local_file **out, size_t *n_out, char **err)
{
    DIR *d = opendir(dir);
    if (!d) {
        *err = xstrfmt("checkpoint store: cannot read the images of '%s' in '%s': %s", s->model,
                       dir, strerror(errno));
        return CKSTORE_LOCAL;
    }
    struct local_file *f = NULL;
    size_t n = 0;
    int rc = CKSTORE_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            !strcmp(e->d_name, CKSTORE_UPLOAD_FILE) || (skip && !strcmp(e->d_name, skip)))
            continue;
        char *path = xstrfmt("%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || !ckstore_valid_name(e->d_name) ||
            n >= CKSTORE_FILES_MAX) {
            *err = xstrfmt("checkpoint store: '%s' is not a regular file with a plain name; the "
                           "images of '%s' are not uploaded",
                           path, s->model);
            free(path);
            rc = CKSTORE_LOCAL;
            break;
        }
        f = xrealloc(f, (n + 1) * sizeof *f);
        f[n].name = xstrdup(e->d_name);
        int hr = ckstore_file_sha(path, f[n].sha, &f[n].size);
        n++;
        if (hr < 0) {
            *err = xstrfmt("checkpoint store: cannot read '%s': %s", path, strerror(-hr));
            free(path);
            rc = CKSTORE_LOCAL;
            break;
        }
        free(path);
    }
    closedir(d);
    if (rc == CKSTORE_OK && n == 0) {
        *err = xstrfmt("checkpoint store: '%s' holds no images of '%s'", dir, s->model);
        rc = CKSTORE_LOCAL;
    }
    if (rc != CKSTORE_OK) {
        local_release(f, n);
        return rc;
    }
    qsort(f, n, sizeof *f, cmp_local);
    *out = f;
    *n_out = n;
    return CKSTORE_OK;
}

/* Whether key already holds exactly this file (a resumed upload skips it). */
static int already_there(const struct ckstore *s, const char *key, const struct local_file *f,
                         int *outcome, char **err)
{
    struct s3_reply r;
    int rc = s3_request(&s->s3, "HEAD", key, NULL, NULL, NULL, -1, &r);
    int there = rc == 0 && r.status == 200 && !strcmp(r.sha, f->sha) && r.size == f->size;
    if (rc < 0 || (r.status != 200 && r.status != 404))
        *outcome = failed(s, "upload", rc, &r, err);
    s3_reply_release(&r);
    return there;
}

static int put_whole(const struct ckstore *s, const char *key, int fd, const struct local_file *f,
                     char **err)
{
    char meta[100];
    snprintf(meta, sizeof meta, "x-amz-meta-sha256: %s", f->sha);
    const char *hdrs[] = {meta, "Content-Type: application/octet-stream", NULL};
    struct s3_payload p = {.fd = fd, .off = 0, .len = f->size, .sha = f->sha};
    struct s3_reply r;
    int rc = s3_request(&s->s3, "PUT", key, NULL, &p, hdrs, -1, &r);
    int out = rc == 0 && ok_status(&r) ? CKSTORE_OK : failed(s, "upload", rc, &r, err);
    s3_reply_release(&r);
    return out;
}

static void abort_multipart(const struct ckstore *s, const char *key, const char *qid)
{
    char *q = xstrfmt("uploadId=%s", qid);
    struct s3_reply r;
    s3_request(&s->s3, "DELETE", key, q, NULL, NULL, -1, &r);
    s3_reply_release(&r);
    free(q);
}

static int put_parts(const struct ckstore *s, const char *key, int fd, const struct local_file *f,
                     char **err)
{
    char meta[100];
    snprintf(meta, sizeof meta, "x-amz-meta-sha256: %s", f->sha);
    const char *hdrs[] = {meta, "Content-Type: application/octet-stream", NULL};
    struct s3_reply r;
    int rc = s3_request(&s->s3, "POST", key, "uploads=", NULL, hdrs, -1, &r);
    if (rc < 0 || !ok_status(&r)) {
        int out = failed(s, "upload", rc, &r, err);
        s3_reply_release(&r);
        return out;
    }
    size_t pos = 0;
    char *id = s3_xml_next(r.body, r.len, &pos, "UploadId");
    s3_reply_release(&r);
    if (!id || !*id) {
        free(id);
        *err = xstrfmt("checkpoint store: upload of '%s' failed: the store named no upload id",
                       s->model);
        return CKSTORE_TRANSIENT;
    }
    char *qid = s3_query_escape(id);
    int64_t part = s->part_size;
    int64_t n_parts = (f->size + part - 1) / part;
    char *block = xmalloc((size_t)part);
    struct buf done;
    buf_init(&done, (size_t)CKSTORE_PARTS_MAX * 300 + 1024);
    buf_appends(&done, "<CompleteMultipartUpload>");
    int out = CKSTORE_OK;
    for (int64_t i = 0; i < n_parts && out == CKSTORE_OK; i++) {
        int64_t off = i * part, len = f->size - off < part ? f->size - off : part;
        int64_t got = 0;
        while (got < len) {
            ssize_t k = pread(fd, block + got, (size_t)(len - got), off + got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                break;
            got += k;
        }
        if (got != len) {
            *err = xstrfmt("checkpoint store: '%s' of '%s' changed while it was uploaded", f->name,
                           s->model);
            out = CKSTORE_LOCAL;
            break;
        }
        char sha[65];
        sha_of(block, (size_t)len, sha);
        struct s3_payload p = {.data = block, .fd = -1, .len = len, .sha = sha};
        char *q = xstrfmt("partNumber=%lld&uploadId=%s", (long long)(i + 1), qid);
        rc = s3_request(&s->s3, "PUT", key, q, &p, NULL, -1, &r);
        free(q);
        if (rc < 0 || !ok_status(&r) || !r.etag[0]) {
            out = failed(s, "upload", rc, &r, err);
        } else {
            buf_printf(&done, "<Part><PartNumber>%lld</PartNumber><ETag>%s</ETag></Part>",
                       (long long)(i + 1), r.etag);
        }
        s3_reply_release(&r);
    }
    free(block);
    if (out == CKSTORE_OK) {
        buf_appends(&done, "</CompleteMultipartUpload>");
        char sha[65];
        sha_of(done.data, done.len, sha);
        struct s3_payload p = {.data = done.data, .fd = -1, .len = (int64_t)done.len, .sha = sha};
        char *q = xstrfmt("uploadId=%s", qid);
        const char *xml[] = {"Content-Type: application/xml", NULL};
        rc = s3_request(&s->s3, "POST", key, q, &p, xml, -1, &r);
        free(q);
        if (rc == 0 && ok_status(&r) && body_is_error(&r))
            r.status = 500;
        if (rc < 0 || !ok_status(&r))
            out = failed(s, "upload", rc, &r, err);
        s3_reply_release(&r);
    }
    if (out != CKSTORE_OK)
        abort_multipart(s, key, qid);
    buf_release(&done);
    free(qid);
    free(id);
    return out;
}

static int list_keys(const struct ckstore *s, const char *verb, const char *gen, char ***keys,
                     size_t *n, char **err);
static void keys_free(char **keys, size_t n);

static int upload_file(const struct ckstore *s, const char *gen, const char *dir,
                       const struct local_file *f, int listed, int *skipped, char **err)
{
    char *key = ckstore_key(s->prefix, s->model, gen, f->name);
    int out = CKSTORE_OK;
    if (listed && already_there(s, key, f, &out, err)) {
        (*skipped)++;
        free(key);
        return CKSTORE_OK;
    }
    if (out != CKSTORE_OK) {
        free(key);
        return out;
    }
    char *path = xstrfmt("%s/%s", dir, f->name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        *err = xstrfmt("checkpoint store: cannot read '%s': %s", path, strerror(errno));
        out = CKSTORE_LOCAL;
    } else if (f->size > s->part_size * CKSTORE_MULTIPART_PARTS) {
        out = put_parts(s, key, fd, f, err);
    } else {
        out = put_whole(s, key, fd, f, err);
    }
    if (fd >= 0)
        close(fd);
    free(path);
    free(key);
    return out;
}

/* The keys under PREFIX MODEL/ (PREFIX MODEL/GEN/ when gen is given), every page of the listing. */
static int list_keys(const struct ckstore *s, const char *verb, const char *gen, char ***keys,
                     size_t *n, char **err)
{
    char *base = ckstore_key(s->prefix, s->model, gen, NULL);
    char *qbase = s3_query_escape(base);
    char *token = NULL;
    int out = CKSTORE_OK;
    *keys = NULL;
    *n = 0;
    for (int page = 0; page < 1000; page++) {
        char *qtok = token ? s3_query_escape(token) : NULL;
        /* The parameters in order, as the signature wants them. */
        char *q = qtok ? xstrfmt("continuation-token=%s&list-type=2&prefix=%s", qtok, qbase)
                       : xstrfmt("list-type=2&prefix=%s", qbase);
        struct s3_reply r;
        int rc = s3_request(&s->s3, "GET", NULL, q, NULL, NULL, -1, &r);
        free(q);
        free(qtok);
        free(token);
        token = NULL;
        if (rc < 0 || !ok_status(&r)) {
            out = failed(s, verb, rc, &r, err);
            s3_reply_release(&r);
            break;
        }
        size_t pos = 0;
        char *k;
        while ((k = s3_xml_next(r.body, r.len, &pos, "Key"))) {
            *keys = xrealloc(*keys, (*n + 1) * sizeof **keys);
            (*keys)[(*n)++] = k;
        }
        pos = 0;
        char *trunc = s3_xml_next(r.body, r.len, &pos, "IsTruncated");
        if (trunc && !strcmp(trunc, "true")) {
            pos = 0;
            token = s3_xml_next(r.body, r.len, &pos, "NextContinuationToken");
        }
        free(trunc);
        s3_reply_release(&r);
        if (!token)
            break;
    }
    free(token);
    free(qbase);
    free(base);
    return out;
}

static void keys_free(char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

struct gen_info {
    char name[32];
    int complete;
};

static int cmp_gen(const void *a, const void *b)
{
    return strcmp(((const struct gen_info *)a)->name, ((const struct gen_info *)b)->name);
}

/* The generations among keys, oldest first. A new array the caller frees. */
static struct gen_info *generations(const struct ckstore *s, char **keys, size_t n, size_t *n_gens)
{
    struct gen_info *g = NULL;
    size_t ng = 0;
    for (size_t i = 0; i < n; i++) {
        char gen[64], file[300];
        if (ckstore_split_key(s->prefix, s->model, keys[i], gen, sizeof gen, file, sizeof file) <
                0 ||
            !ckstore_valid_generation(gen))
            continue;
        size_t k = 0;
        while (k < ng && strcmp(g[k].name, gen) != 0)
            k++;
        if (k == ng) {
            g = xrealloc(g, (ng + 1) * sizeof *g);
            memset(&g[ng], 0, sizeof *g);
            /* A valid generation's name is 20 bytes: it fits. */
            memcpy(g[ng].name, gen, strlen(gen) + 1);
            ng++;
        }
        if (!strcmp(file, CKSTORE_MANIFEST))
            g[k].complete = 1;
    }
    if (ng)
        qsort(g, ng, sizeof *g, cmp_gen);
    *n_gens = ng;
    return g;
}

/*
 * Deletes every generation older than the newest `keep` complete ones (an
 * incomplete one older than those too). Its failures are only reported: the
 * upload itself went well. Returns how many objects went.
 */
static int prune(const struct ckstore *s, char **warn)
{
    char **keys = NULL;
    size_t n = 0;
    if (list_keys(s, "pruning", NULL, &keys, &n, warn) != CKSTORE_OK)
        return 0;
    size_t ng = 0;
    struct gen_info *g = generations(s, keys, n, &ng);
    /* The oldest generation kept: the keep-th complete one from the newest. */
    const char *oldest_kept = NULL;
    int seen = 0;
    for (size_t i = ng; i-- > 0 && seen < s->keep;) {
        if (g[i].complete) {
            oldest_kept = g[i].name;
            seen++;
        }
    }
    int deleted = 0;
    for (size_t i = 0; oldest_kept && i < n; i++) {
        char gen[64], file[300];
        if (ckstore_split_key(s->prefix, s->model, keys[i], gen, sizeof gen, file, sizeof file) <
                0 ||
            !ckstore_valid_generation(gen) || strcmp(gen, oldest_kept) >= 0)
            continue;
        struct s3_reply r;
        int rc = s3_request(&s->s3, "DELETE", keys[i], NULL, NULL, NULL, -1, &r);
        if (rc == 0 && ok_status(&r)) {
            deleted++;
        } else if (!*warn) {
            failed(s, "pruning", rc, &r, warn);
        }
        s3_reply_release(&r);
    }
    free(g);
    keys_free(keys, n);
    return deleted;
}

static char *size_text(int64_t b)
{
    if (b >= (1ll << 30))
        return xstrfmt("%.1f GiB", (double)b / (double)(1ll << 30));
    if (b >= (1ll << 20))
        return xstrfmt("%.1f MiB", (double)b / (double)(1ll << 20));
    return xstrfmt("%lld bytes", (long long)b);
}

int ckstore_upload(const struct ckstore *s, const char *gen, const char *dir, const char *skip,
                   char **note, char **err)
{
    uint64_t t0 = clock_mono_ms();
    struct local_file *f = NULL;
    size_t n = 0;
    int out = scan_dir(s, dir, skip, &f, &n, err);
    if (out != CKSTORE_OK)
        return out;
    /* What a retry finds of this generation: those are checked, the rest go up at once. */
    char **have = NULL;
    size_t n_have = 0;
    out = list_keys(s, "upload", gen, &have, &n_have, err);
    int skipped = 0;
    int64_t bytes = 0;
    for (size_t i = 0; i < n && out == CKSTORE_OK; i++) {
        char *key = ckstore_key(s->prefix, s->model, gen, f[i].name);
        int listed = 0;
        for (size_t k = 0; k < n_have && !listed; k++)
            listed = !strcmp(have[k], key);
        free(key);
        out = upload_file(s, gen, dir, &f[i], listed, &skipped, err);
        bytes += f[i].size;
    }
    keys_free(have, n_have);
    if (out == CKSTORE_OK) {
        /* Last: its presence says the generation is whole. */
        char launch[65];
        struct ckstore_manifest m = {.model = (char *)s->model, .generation = (char *)gen, .n = n};
        if (ckstore_read_launch(dir, launch) == 0)
            m.launch = launch;
        m.files = xcalloc(n, sizeof *m.files);
        for (size_t i = 0; i < n; i++) {
            m.files[i].name = f[i].name;
            m.files[i].size = f[i].size;
            memcpy(m.files[i].sha, f[i].sha, 65);
        }
        char *text = ckstore_manifest_json(&m);
        free(m.files);
        char sha[65];
        sha_of(text, strlen(text), sha);
        char *key = ckstore_key(s->prefix, s->model, gen, CKSTORE_MANIFEST);
        const char *hdrs[] = {"Content-Type: application/json", NULL};
        struct s3_payload p = {.data = text, .fd = -1, .len = (int64_t)strlen(text), .sha = sha};
        struct s3_reply r;
        int rc = s3_request(&s->s3, "PUT", key, NULL, &p, hdrs, -1, &r);
        if (rc < 0 || !ok_status(&r))
            out = failed(s, "upload", rc, &r, err);
        s3_reply_release(&r);
        free(key);
        free(text);
    }
    if (out == CKSTORE_OK) {
        char *warn = NULL;
        int deleted = prune(s, &warn);
        char *sz = size_text(bytes);
        *note = xstrfmt("generation %s: %zu files, %s (%d already there) in %llu ms; %d old "
                        "objects deleted%s%s",
                        gen, n, sz, skipped, (unsigned long long)(clock_mono_ms() - t0), deleted,
                        warn ? "; " : "", warn ? warn : "");
        free(sz);
        free(warn);
    }
    local_release(f, n);
    return out;
}

/* Removes dir's files and dir; 0 or -errno (ENOENT is fine). */
static int remove_dir(const char *dir)
{
    int rc = fs_empty_dir(dir);
    if (rc == 0 && rmdir(dir) < 0 && errno != ENOENT)
        rc = -errno;
    return rc;
}

static int get_file(const struct ckstore *s, const char *gen, const char *tmp,
                    const struct ckstore_file *f, char **err)
{
    char *key = ckstore_key(s->prefix, s->model, gen, f->name);
    char *path = xstrfmt("%s/%s", tmp, f->name);
    int out = CKSTORE_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        *err = xstrfmt("checkpoint store: cannot write '%s': %s", path, strerror(errno));
        out = CKSTORE_LOCAL;
        goto done;
    }
    struct s3_reply r;
    int rc = s3_request(&s->s3, "GET", key, NULL, NULL, NULL, fd, &r);
    if (rc < 0 || !ok_status(&r))
        out = failed(s, "download", rc, &r, err);
    s3_reply_release(&r);
    if (close(fd) < 0 && out == CKSTORE_OK) {
        *err = xstrfmt("checkpoint store: cannot write '%s': %s", path, strerror(errno));
        out = CKSTORE_LOCAL;
    }
    if (out != CKSTORE_OK)
        goto done;
    char sha[65];
    int64_t size = 0;
    rc = ckstore_file_sha(path, sha, &size);
    if (rc < 0) {
        *err = xstrfmt("checkpoint store: cannot read '%s': %s", path, strerror(-rc));
        out = CKSTORE_LOCAL;
    } else if (size != f->size || strcmp(sha, f->sha) != 0) {
        *err = xstrfmt("checkpoint store: the images of '%s' (generation %s) fail their check: "
                       "'%s' came as %lld bytes with sha256 %.12s..., the manifest says %lld "
                       "bytes with %.12s...; not restoring from them",
                       s->model, gen, f->name, (long long)size, sha, (long long)f->size, f->sha);
        out = CKSTORE_CORRUPT;
    }
done:
    free(path);
    free(key);
    return out;
}

int ckstore_download(const struct ckstore *s, const char *dir, const char *launch, char **note,
                     char **err)
{
    uint64_t t0 = clock_mono_ms();
    char **keys = NULL;
    size_t n = 0;
    int out = list_keys(s, "download", NULL, &keys, &n, err);
    if (out != CKSTORE_OK)
        return out;
    size_t ng = 0;
    struct gen_info *g = generations(s, keys, n, &ng);
    keys_free(keys, n);
    const char *gen = NULL;
    for (size_t i = ng; i-- > 0 && !gen;)
        if (g[i].complete)
            gen = g[i].name;
    char *tmp = NULL;
    struct ckstore_manifest m = {0};
    if (!gen) {
        char *where = ckstore_key(s->prefix, s->model, NULL, NULL);
        *err = xstrfmt("checkpoint store: no complete checkpoint of '%s' under '%s' in bucket "
                       "'%s'",
                       s->model, where, s->s3.bucket);
        free(where);
        out = CKSTORE_NONE;
        goto out;
    }
    char *mkey = ckstore_key(s->prefix, s->model, gen, CKSTORE_MANIFEST);
    struct s3_reply r;
    int rc = s3_request(&s->s3, "GET", mkey, NULL, NULL, NULL, -1, &r);
    free(mkey);
    if (rc < 0 || !ok_status(&r)) {
        out = failed(s, "download", rc, &r, err);
        s3_reply_release(&r);
        goto out;
    }
    char *why = NULL;
    if (ckstore_manifest_parse(r.body, r.len, &m, &why) < 0 || strcmp(m.model, s->model) != 0 ||
        strcmp(m.generation, gen) != 0) {
        *err = xstrfmt("checkpoint store: the manifest of '%s' (generation %s) is not usable: %s",
                       s->model, gen, why ? why : "it names another model or generation");
        free(why);
        s3_reply_release(&r);
        out = CKSTORE_CORRUPT;
        goto out;
    }
    s3_reply_release(&r);
    if (launch && (!m.launch || strcmp(m.launch, launch) != 0)) {
        *err = xstrfmt("checkpoint store: the newest checkpoint of '%s' (generation %s) %s; not "
                       "restoring from it",
                       s->model, gen,
                       m.launch ? "was taken of another launch of it (its command, environment, "
                                  "directory or GPUs differ from the config's now)"
                                : "records no launch to compare with the config's");
        out = CKSTORE_OTHER;
        goto out;
    }
    tmp = xstrfmt("%s.download", dir);
    rc = remove_dir(tmp);
    if (rc == 0 && mkdir(tmp, 0700) < 0)
        rc = -errno;
    if (rc < 0) {
        *err = xstrfmt("checkpoint store: cannot make '%s': %s", tmp, strerror(-rc));
        out = CKSTORE_LOCAL;
        goto out;
    }
    int64_t bytes = 0;
    for (size_t i = 0; i < m.n && out == CKSTORE_OK; i++) {
        out = get_file(s, gen, tmp, &m.files[i], err);
        bytes += m.files[i].size;
    }
    if (out == CKSTORE_OK) {
        /* dir holds no images (the caller looked): what is there is not a checkpoint. */
        rc = remove_dir(dir);
        if (rc == 0 && rename(tmp, dir) < 0)
            rc = -errno;
        if (rc < 0) {
            *err =
                xstrfmt("checkpoint store: cannot put the images in '%s': %s", dir, strerror(-rc));
            out = CKSTORE_LOCAL;
        }
    }
    if (out == CKSTORE_OK) {
        char *sz = size_text(bytes);
        *note = xstrfmt("generation %s: %zu files, %s in %llu ms", gen, m.n, sz,
                        (unsigned long long)(clock_mono_ms() - t0));
        free(sz);
    } else {
        remove_dir(tmp);
    }
out:
    ckstore_manifest_release(&m);
    free(tmp);
    free(g);
    return out;
}
