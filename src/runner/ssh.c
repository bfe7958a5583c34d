/*
 * The transport to a pod: the user's ssh command line with yard's options,
 * quoting for the remote shell, and running a script over the pod's
 * ControlMaster connection through tools_run. See ssh.h and docs/pods.md.
 */
#include "runner/ssh.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/hash.h"
#include "config/config.h"

#define SSH_NAME_MAX 64
/* ssh binds "PATH." + 16 random characters, then renames it to PATH */
#define SSH_CONTROL_TMP_SUFFIX 17

/* ---- the pod ---- */

static int name_is_valid(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > SSH_NAME_MAX || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

int ssh_pod_init(struct ssh_pod *pod, const char *name, const char *ssh_cmd, const char *state_dir,
                 char *err, size_t errlen)
{
    struct sockaddr_un sa;
    char *dir = NULL;
    char *path = NULL;
    int rc = 0;

    memset(pod, 0, sizeof(*pod));
    if (!name || !name_is_valid(name)) {
        snprintf(err, errlen,
                 "bad pod name '%s': use 1 to %d letters, digits, '.', '_' or '-', not "
                 "starting with '.'",
                 name ? name : "", SSH_NAME_MAX);
        rc = -EINVAL;
        goto out;
    }
    pod->argv = config_split_argv(ssh_cmd ? ssh_cmd : "", err, errlen);
    if (!pod->argv) {
        rc = -EINVAL;
        goto out;
    }
    if (!pod->argv[1]) {
        snprintf(err, errlen, "ssh command of pod '%s' names no destination: '%s'", name, ssh_cmd);
        rc = -EINVAL;
        goto out;
    }
    dir = xstrfmt("%s/ssh", state_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        rc = -errno;
        snprintf(err, errlen, "cannot create '%s': %s", dir, strerror(-rc));
        goto out;
    }
    path = xstrfmt("%s/%s.sock", dir, name);
    if (strlen(path) + SSH_CONTROL_TMP_SUFFIX >= sizeof(sa.sun_path)) {
        free(path);
        path = xstrfmt("/tmp/yard-ssh-%016llx.sock",
                       (unsigned long long)hash_fnv1a(dir) ^ hash_fnv1a(name));
    }
    pod->name = xstrdup(name);
    pod->control_path = path;
    path = NULL;
    pod->control_persist_s = SSH_CONTROL_PERSIST_S;
out:
    if (rc < 0) {
        config_argv_free(pod->argv);
        pod->argv = NULL;
    }
    free(path);
    free(dir);
    return rc;
}

void ssh_pod_release(struct ssh_pod *pod)
{
    config_argv_free(pod->argv);
    free(pod->name);
    free(pod->control_path);
    memset(pod, 0, sizeof(*pod));
}

/* ---- quoting ---- */

char *ssh_quote(const char *s)
{
    size_t n = 3; /* two quotes and the NUL */
    char *q;
    char *w;

    /* sized exactly with xmalloc, so the quoting can never come out cut short */
    for (const char *p = s; *p; p++)
        n += *p == '\'' ? 4 : 1;
    q = w = xmalloc(n);
    *w++ = '\'';
    for (; *s; s++) {
        if (*s == '\'') {
            memcpy(w, "'\\''", 4);
            w += 4;
        } else {
            *w++ = *s;
        }
    }
    *w++ = '\'';
    *w = '\0';
    return q;
}

char *ssh_remote_command(const char *script)
{
    char *body = xstrfmt("set -euo pipefail\n%s", script);
    char *quoted = ssh_quote(body);
    char *cmd = xstrfmt("bash -c %s", quoted);

    free(quoted);
    free(body);
    return cmd;
}

/* ---- command lines ---- */

/* ssh expands %-tokens in a control path: a literal '%' is written "%%". */
static char *control_path_arg(const char *path)
{
    struct buf b;
    char *s;

    buf_init(&b, 2 * strlen(path) + 1);
    for (; *path; path++) {
        if (*path == '%')
            buf_append(&b, "%%", 2);
        else
            buf_append(&b, path, 1);
    }
    s = buf_detach(&b, NULL);
    return s ? s : xstrdup("");
}

/* argv[0], yard's options, then the user's other words. */
static int cmd_add_ssh(const struct ssh_pod *pod, struct tools_cmd *c, int master)
{
    char persist[64];
    char connect[64];
    char *ctl = control_path_arg(pod->control_path);
    int rc;

    memset(c, 0, sizeof(*c));
    snprintf(persist, sizeof(persist), "ControlPersist=%u", pod->control_persist_s);
    snprintf(connect, sizeof(connect), "ConnectTimeout=%d", SSH_CONNECT_TIMEOUT_S);
    rc = tools_cmd_add(c, pod->argv[0]);
    if (rc == 0 && master) {
        /* A master on a dead link is noticed within 15 s (ServerAlive), not at TCP's pace. */
        const char *opts[] = {"-o", "BatchMode=yes",         "-o", connect,
                              "-o", "ControlMaster=auto",    "-o", persist,
                              "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                              NULL};
        for (int i = 0; opts[i] && rc == 0; i++)
            rc = tools_cmd_add(c, opts[i]);
    }
    if (rc == 0)
        rc = tools_cmd_add(c, "-S");
    if (rc == 0)
        rc = tools_cmd_add(c, ctl);
    free(ctl);
    return rc;
}

static int cmd_add_user_args(const struct ssh_pod *pod, struct tools_cmd *c)
{
    int rc = 0;
    for (int i = 1; pod->argv[i] && rc == 0; i++)
        rc = tools_cmd_add(c, pod->argv[i]);
    return rc;
}

int ssh_build_cmd(const struct ssh_pod *pod, const char *script, struct tools_cmd *c)
{
    char *remote = ssh_remote_command(script);
    int rc = cmd_add_ssh(pod, c, 1);

    if (rc == 0)
        rc = cmd_add_user_args(pod, c);
    if (rc == 0)
        rc = tools_cmd_add(c, remote);
    free(remote);
    return rc;
}

int ssh_control_cmd(const struct ssh_pod *pod, const char *op, struct tools_cmd *c)
{
    int rc;

    memset(c, 0, sizeof(*c));
    if (!op || (strcmp(op, "check") != 0 && strcmp(op, "exit") != 0))
        return -EINVAL;
    rc = cmd_add_ssh(pod, c, 0);
    if (rc == 0)
        rc = tools_cmd_add(c, "-O");
    if (rc == 0)
        rc = tools_cmd_add(c, op);
    if (rc == 0)
        rc = cmd_add_user_args(pod, c);
    return rc;
}

int ssh_forward_cmd(const struct ssh_pod *pod, int cancel, int local_port, int remote_port,
                    struct tools_cmd *c)
{
    return ssh_forward_to_cmd(pod, cancel, local_port, "127.0.0.1", remote_port, c);
}

int ssh_forward_to_cmd(const struct ssh_pod *pod, int cancel, int local_port, const char *host,
                       int remote_port, struct tools_cmd *c)
{
    char spec[320];
    int rc;

    memset(c, 0, sizeof(*c));
    if (local_port <= 0 || local_port > 65535 || remote_port <= 0 || remote_port > 65535 || !host ||
        !*host || strlen(host) > 255 || strpbrk(host, " \t\n"))
        return -EINVAL;
    /* An IPv6 address goes in brackets. */
    if (strchr(host, ':'))
        snprintf(spec, sizeof(spec), "127.0.0.1:%d:[%s]:%d", local_port, host, remote_port);
    else
        snprintf(spec, sizeof(spec), "127.0.0.1:%d:%s:%d", local_port, host, remote_port);
    rc = cmd_add_ssh(pod, c, 0);
    if (rc == 0)
        rc = tools_cmd_add(c, "-O");
    if (rc == 0)
        rc = tools_cmd_add(c, cancel ? "cancel" : "forward");
    if (rc == 0)
        rc = tools_cmd_add(c, "-L");
    if (rc == 0)
        rc = tools_cmd_add(c, spec);
    if (rc == 0)
        rc = cmd_add_user_args(pod, c);
    return rc;
}

/* A word that a shell reads as itself, needing no quotes. */
static int word_is_plain(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:@,+%", *s))
            return 0;
    return 1;
}

static int has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* The option name of an -o value that names a key file, or NULL. */
static const char *key_option(const char *value)
{
    static const char *const keys[] = {"IdentityFile", "CertificateFile", NULL};
    for (int i = 0; keys[i]; i++) {
        size_t n = strlen(keys[i]);
        if (has_prefix_ci(value, keys[i]) && (value[n] == '=' || value[n] == ' '))
            return keys[i];
    }
    return NULL;
}

static void append_word(struct buf *b, const char *w, int raw)
{
    if (b->len > 0)
        buf_append(b, " ", 1);
    if (raw || word_is_plain(w)) {
        buf_appends(b, w);
    } else {
        char *q = ssh_quote(w);
        buf_appends(b, q);
        free(q);
    }
}

char *ssh_cmd_text_redacted(const struct tools_cmd *c)
{
    struct buf b;
    char *s;

    /* every byte quoted at worst 4 times over, plus quotes and spaces */
    buf_init(&b, 4 * sizeof(c->store) + 4 * TOOLS_ARGV_MAX + 64);
    for (int i = 0; i < c->argc; i++) {
        const char *w = c->argv[i];
        const char *prev = i > 0 ? c->argv[i - 1] : "";
        const char *key;
        char *tmp = NULL;

        if (i > 0 && strcmp(prev, "-i") == 0) {
            w = "<redacted>";
        } else if (i > 0 && strncmp(w, "-i", 2) == 0 && w[2]) {
            w = "-i<redacted>";
        } else if (i > 0 && strcmp(prev, "-o") == 0 && (key = key_option(w)) != NULL) {
            w = tmp = xstrfmt("%s=<redacted>", key);
        } else if (i > 0 && strncmp(w, "-o", 2) == 0 && (key = key_option(w + 2)) != NULL) {
            w = tmp = xstrfmt("-o%s=<redacted>", key);
        }
        /* a redacted word is shown as is: "<redacted>" is no path to quote */
        append_word(&b, w, w != c->argv[i]);
        free(tmp);
    }
    s = buf_detach(&b, NULL);
    return s ? s : xstrdup("");
}

/* ---- results ---- */

static int contains(const char *text, size_t len, const char *needle)
{
    return memmem(text, len, needle, strlen(needle)) != NULL;
}

void ssh_result_from_tools(const struct tools_result *tr, struct ssh_result *res)
{
    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
    res->out = tr->out;
    res->out_len = tr->out_len;
    res->errout = tr->errout;
    res->err_len = tr->err_len;
    res->truncated = tr->truncated;
    res->elapsed_ms = tr->elapsed_ms;
    if (tr->err < 0) {
        res->status = SSH_TRANSPORT_FAILED;
        res->err = tr->err;
    } else if (tr->term_signal) {
        res->status = SSH_TRANSPORT_FAILED;
        res->err = -ECONNABORTED;
    } else if (tr->exit_code == 255) {
        res->status = SSH_TRANSPORT_FAILED;
        if (contains(tr->errout, tr->err_len, "Connection refused"))
            res->err = -ECONNREFUSED;
        else if (contains(tr->errout, tr->err_len, "Permission denied") ||
                 contains(tr->errout, tr->err_len, "Host key verification failed"))
            res->err = -EPERM;
        else
            res->err = -ECONNABORTED;
    } else {
        res->status = tr->exit_code == 0 ? SSH_OK : SSH_COMMAND_FAILED;
        res->exit_code = tr->exit_code;
    }
}

char *ssh_describe(const char *pod_name, const struct ssh_result *res)
{
    char line[400];

    tools_last_line(res->errout, res->err_len, line, sizeof(line));
    if (res->status == SSH_OK)
        return xstrfmt("command on pod '%s' succeeded", pod_name);
    if (res->status == SSH_COMMAND_FAILED)
        return xstrfmt("command on pod '%s' exited %d%s%s", pod_name, res->exit_code,
                       line[0] ? ": " : "", line);
    if (res->err == -ETIMEDOUT)
        return xstrfmt("pod '%s' did not answer within %llu ms", pod_name,
                       (unsigned long long)res->elapsed_ms);
    if (res->err == -ENOENT || res->err == -EACCES)
        return xstrfmt("cannot run ssh for pod '%s': %s", pod_name, uv_strerror(res->err));
    return xstrfmt("cannot reach pod '%s': %s", pod_name,
                   line[0] ? line : "ssh failed with no message");
}

/* ---- running ---- */

struct ssh_exec {
    struct tools_run *run;
    ssh_cb cb;
    void *arg;
};

static void exec_done(const struct tools_result *tr, void *arg)
{
    struct ssh_exec *e = arg;
    struct ssh_result res;

    ssh_result_from_tools(tr, &res);
    e->cb(&res, e->arg);
    free(e);
}

int ssh_exec(uv_loop_t *loop, const struct ssh_pod *pod, const char *script, uint64_t timeout_ms,
             ssh_cb cb, void *arg, struct ssh_exec **exec)
{
    struct tools_cmd *c = xmalloc(sizeof(*c));
    struct ssh_exec *e = NULL;
    int rc = ssh_build_cmd(pod, script, c);

    if (rc < 0)
        goto out;
    e = xcalloc(1, sizeof(*e));
    e->cb = cb;
    e->arg = arg;
    /* tools_run copies the command; the run calls exec_done, which frees e */
    e->run = tools_run(loop, c, timeout_ms, exec_done, e);
    if (exec)
        *exec = e;
out:
    free(c);
    return rc;
}

void ssh_exec_cancel(struct ssh_exec *e)
{
    if (!e)
        return;
    tools_run_cancel(e->run);
    free(e);
}

int ssh_probe(uv_loop_t *loop, const struct ssh_pod *pod, uint64_t timeout_ms, ssh_cb cb, void *arg,
              struct ssh_exec **exec)
{
    return ssh_exec(loop, pod, "printf " SSH_PROBE_MARKER, timeout_ms, cb, arg, exec);
}

int ssh_probe_verdict(const struct ssh_result *res)
{
    if (res->status == SSH_TRANSPORT_FAILED)
        return -EHOSTUNREACH;
    if (res->status == SSH_OK && contains(res->out, res->out_len, SSH_PROBE_MARKER))
        return 0;
    return -EPROTO;
}
