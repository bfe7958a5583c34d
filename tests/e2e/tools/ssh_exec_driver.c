/*
 * A test-only front to runner/ssh for tests/e2e/ssh.test.mjs: builds a pod
 * from the arguments, runs one thing on it on a libuv loop and prints one
 * JSON line. Not part of yard.
 *
 *   ssh-exec-driver STATE_DIR POD "SSH CMD" exec SCRIPT [TIMEOUT_MS]
 *   ssh-exec-driver STATE_DIR POD "SSH CMD" echo VALUE...
 *       (runs `printf '%s\0' QUOTED-VALUE` remotely for each value)
 *   ssh-exec-driver STATE_DIR POD "SSH CMD" probe [TIMEOUT_MS]
 *   ssh-exec-driver STATE_DIR POD "SSH CMD" text SCRIPT   (the redacted invocation)
 *
 * Prints {"status":"ok|command|transport","err":N,"exit_code":N,"out_hex":..,
 * "errout_hex":..,"describe":..,"verdict":N,"control_path":..}; exits 0 when
 * it could print that, 2 on a usage or setup error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "base/alloc.h"
#include "runner/ssh.h"

struct driver {
    const struct ssh_pod *pod;
    json_t *out;
};

static char *hex(const char *p, size_t n)
{
    char *s = xmalloc(2 * n + 1);
    for (size_t i = 0; i < n; i++)
        snprintf(s + 2 * i, 3, "%02x", (unsigned char)p[i]);
    s[2 * n] = '\0';
    return s;
}

static void done(const struct ssh_result *res, void *arg)
{
    static const char *const names[] = {"ok", "command", "transport"};
    struct driver *d = arg;
    char *oh = hex(res->out, res->out_len);
    char *eh = hex(res->errout, res->err_len);
    char *msg = ssh_describe(d->pod->name, res);

    d->out =
        json_pack("{s:s, s:i, s:i, s:s, s:s, s:s, s:i, s:s, s:I}", "status", names[res->status],
                  "err", res->err, "exit_code", res->exit_code, "out_hex", oh, "errout_hex", eh,
                  "describe", msg, "verdict", ssh_probe_verdict(res), "control_path",
                  d->pod->control_path, "elapsed_ms", (json_int_t)res->elapsed_ms);
    free(msg);
    free(eh);
    free(oh);
}

int main(int argc, char **argv)
{
    struct ssh_pod pod;
    struct driver d = {0};
    struct tools_cmd c;
    uv_loop_t loop;
    char err[512];
    const char *mode;
    char *script = NULL;
    uint64_t timeout_ms = 20000;
    int rc;

    if (argc < 5) {
        fprintf(stderr, "usage: ssh-exec-driver STATE_DIR POD SSH_CMD exec|echo|probe|text [ARG] "
                        "[TIMEOUT_MS]\n");
        return 2;
    }
    mode = argv[4];
    if (ssh_pod_init(&pod, argv[2], argv[3], argv[1], err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    d.pod = &pod;
    if (strcmp(mode, "probe") == 0) {
        if (argc > 5)
            timeout_ms = strtoull(argv[5], NULL, 10);
    } else if (argc > 5) {
        if (strcmp(mode, "echo") == 0) {
            /* one round trip for all the values: each printed, then a NUL */
            script = xstrdup("");
            for (int i = 5; i < argc; i++) {
                char *q = ssh_quote(argv[i]);
                char *next = xstrfmt("%sprintf '%%s\\0' %s\n", script, q);
                free(q);
                free(script);
                script = next;
            }
        } else {
            script = xstrdup(argv[5]);
            if (argc > 6)
                timeout_ms = strtoull(argv[6], NULL, 10);
        }
    } else {
        fprintf(stderr, "mode '%s' needs an argument\n", mode);
        ssh_pod_release(&pod);
        return 2;
    }

    if (strcmp(mode, "text") == 0) {
        rc = ssh_build_cmd(&pod, script, &c);
        if (rc == 0) {
            char *text = ssh_cmd_text_redacted(&c);
            printf("%s\n", text);
            free(text);
        }
        free(script);
        ssh_pod_release(&pod);
        return rc == 0 ? 0 : 2;
    }

    uv_loop_init(&loop);
    if (strcmp(mode, "probe") == 0)
        rc = ssh_probe(&loop, &pod, timeout_ms, done, &d, NULL);
    else
        rc = ssh_exec(&loop, &pod, script, timeout_ms, done, &d, NULL);
    if (rc == 0)
        uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (d.out) {
        char *text = json_dumps(d.out, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(d.out);
    } else {
        fprintf(stderr, "cannot run on pod '%s': %s\n", pod.name, strerror(-rc));
    }
    free(script);
    ssh_pod_release(&pod);
    return d.out ? 0 : 2;
}
