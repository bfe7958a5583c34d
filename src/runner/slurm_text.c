/*
 * The Slurm runner's texts (runner/slurm.h, docs/slurm.md): what yard reads
 * from Slurm (scontrol's one-line answers, a job's end in words) and what it
 * writes for it (the batch script of one engine). No loop, no processes:
 * slurm.c runs the commands.
 */
#include "runner/slurm.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "runner/ssh.h"

/* ---- reading Slurm's answers ---- */

static const char *const terminal_states[] = {
    "COMPLETED", "FAILED",    "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE",  "REVOKED", "SPECIAL_EXIT",  NULL,
};

int runner_slurm__terminal(const char *state)
{
    for (size_t i = 0; terminal_states[i]; i++)
        if (!strncmp(state, terminal_states[i], strlen(terminal_states[i])))
            return 1;
    return 0;
}

/* Copies the value of KEY= in an scontrol one-line answer up to the next " Word=". */
int runner_slurm__scontrol_value(const char *line, const char *key, char *out, size_t len)
{
    size_t kl = strlen(key);
    for (const char *p = line; (p = strstr(p, key)) != NULL; p++) {
        if ((p != line && p[-1] != ' ') || p[kl] != '=')
            continue;
        const char *v = p + kl + 1, *end = v;
        /* A value runs to the next " Key=" (values such as Reason may hold spaces). */
        for (;;) {
            const char *sp = strchr(end, ' ');
            if (!sp) {
                end += strlen(end);
                break;
            }
            const char *w = sp + 1, *q = w;
            while (*q && (isalnum((unsigned char)*q) || *q == '_' || *q == ':' || *q == '/'))
                q++;
            if (*q == '=' && q > w) {
                end = sp;
                break;
            }
            end = sp + 1;
        }
        while (end > v && (end[-1] == '\n' || end[-1] == ' '))
            end--;
        snprintf(out, len, "%.*s", (int)(end - v), v);
        return 0;
    }
    if (len)
        out[0] = '\0';
    return -ENOENT;
}

int runner_slurm__parse_scontrol(const char *line, struct runner_slurm_job *j)
{
    char v[64];
    *j = (struct runner_slurm_job){.exit_code = -1, .exit_signal = -1};
    if (runner_slurm__scontrol_value(line, "JobId", v, sizeof v) < 0 ||
        !isdigit((unsigned char)v[0]))
        return -EPROTO;
    j->id = strtol(v, NULL, 10);
    runner_slurm__scontrol_value(line, "JobState", j->state, sizeof j->state);
    runner_slurm__scontrol_value(line, "Reason", j->reason, sizeof j->reason);
    runner_slurm__scontrol_value(line, "NodeList", j->node, sizeof j->node);
    runner_slurm__scontrol_value(line, "JobName", j->name, sizeof j->name);
    if (!strcmp(j->node, "(null)"))
        j->node[0] = '\0';
    if (runner_slurm__scontrol_value(line, "ExitCode", v, sizeof v) == 0) {
        int a, b;
        if (sscanf(v, "%d:%d", &a, &b) == 2)
            j->exit_code = a, j->exit_signal = b;
    }
    return 0;
}

void runner_slurm__ended_text(const struct runner_slurm_job *j, char *out, size_t len)
{
    const char *st = j->state;
    char code[64] = "";
    if (j->exit_signal > 0)
        snprintf(code, sizeof code, ", killed by signal %d", j->exit_signal);
    else if (j->exit_code > 0)
        snprintf(code, sizeof code, ", exit code %d", j->exit_code);
    if (!strncmp(st, "TIMEOUT", 7))
        snprintf(out, len, "job %ld reached its time limit (TIMEOUT)", j->id);
    else if (!strncmp(st, "OUT_OF_MEMORY", 13))
        snprintf(out, len, "job %ld ran out of memory (OUT_OF_MEMORY)", j->id);
    else if (!strncmp(st, "NODE_FAIL", 9))
        snprintf(out, len, "job %ld lost its node %s (NODE_FAIL)", j->id, *j->node ? j->node : "");
    else if (!strncmp(st, "PREEMPTED", 9))
        snprintf(out, len, "job %ld was preempted (PREEMPTED)", j->id);
    else if (!strncmp(st, "CANCELLED", 9))
        snprintf(out, len, "job %ld was cancelled outside yard (CANCELLED%s)", j->id, code);
    else if (!strncmp(st, "FAILED", 6))
        snprintf(out, len, "job %ld failed (FAILED%s)", j->id, code);
    else if (!strncmp(st, "COMPLETED", 9))
        snprintf(out, len, "job %ld ended: the engine exited 0 (COMPLETED)", j->id);
    else
        snprintf(out, len, "job %ld ended %s%s", j->id, st, code);
}

/* ---- the job script ---- */

/* Appends s single-quoted for the shell. */
static void shell_quote(struct buf *b, const char *s)
{
    char *q = ssh_quote(s);
    buf_appends(b, q);
    free(q);
}

/*
 * An argument with the engine's port in it: the port itself, or "=PORT" or
 * ":PORT" at its end. The job picks its own port on its node, so these get
 * the port it picked ("$port").
 */
static int port_word(const char *a, const char *port, size_t *at)
{
    size_t al = strlen(a), pl = strlen(port);
    if (!strcmp(a, port)) {
        *at = 0;
        return 1;
    }
    if (al > pl && !strcmp(a + al - pl, port) && (a[al - pl - 1] == '=' || a[al - pl - 1] == ':')) {
        *at = al - pl;
        return 1;
    }
    return 0;
}

static void quote_with_port(struct buf *b, const char *a, const char *port)
{
    size_t at;
    if (!port_word(a, port, &at)) {
        shell_quote(b, a);
        return;
    }
    char *head = xstrndup(a, at);
    if (*head)
        shell_quote(b, head);
    buf_printf(b, "\"$port\"");
    free(head);
}

char *runner_slurm__job_script(const struct runner_spec *spec, const char *dir,
                               const struct tools_cmd *cmd)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    char port[16];
    snprintf(port, sizeof port, "%d", spec->port);
    buf_printf(&b, "#!/bin/bash\n");
    /* The options again, for a replacement submitted from this file (walltime renewal). */
    for (int i = 2; i < cmd->argc; i++)
        buf_printf(&b, "#SBATCH %s\n", cmd->argv[i]);
    buf_printf(&b,
               "# Written by yard (docs/slurm.md): one engine, reached on its node.\n"
               "port=%d\n"
               "taken() { (exec 3<>\"/dev/tcp/127.0.0.1/$1\") 2>/dev/null; }\n"
               "if taken \"$port\"; then\n"
               "  for p in $(shuf -i 20000-60999 -n 200); do\n"
               "    if ! taken \"$p\"; then port=$p; break; fi\n"
               "  done\n"
               "fi\n"
               "node=\"${SLURMD_NODENAME:-$(hostname)}\"\n",
               spec->port);
    buf_printf(&b, "addr=");
    shell_quote(&b, dir);
    buf_printf(
        &b, "/\"$SLURM_JOB_ID.addr\"\nprintf '%%s %%s\\n' \"$node\" \"$port\" > \"$addr.tmp\" && "
            "mv \"$addr.tmp\" \"$addr\"\n"
            "echo \"yard: job $SLURM_JOB_ID runs on $node, port $port\"\n");
    if (spec->cwd) {
        buf_printf(&b, "cd ");
        shell_quote(&b, spec->cwd);
        buf_printf(&b, " || exit 127\n");
    }
    for (size_t i = 0; spec->env && spec->env[i]; i++) {
        const char *eq = strchr(spec->env[i], '=');
        /* Slurm gives the job its GPUs: CUDA_VISIBLE_DEVICES is its. */
        if (!eq || !strncmp(spec->env[i], "CUDA_VISIBLE_DEVICES=", 21))
            continue;
        buf_printf(&b, "export %.*s=", (int)(eq - spec->env[i]), spec->env[i]);
        quote_with_port(&b, eq + 1, port);
        buf_printf(&b, "\n");
    }
    buf_printf(&b, "exec");
    for (size_t i = 0; spec->argv[i]; i++) {
        buf_printf(&b, " ");
        quote_with_port(&b, spec->argv[i], port);
    }
    buf_printf(&b, " </dev/null\n");
    return buf_detach(&b, NULL);
}

/* How many GPUs the supervisor gave the engine (CUDA_VISIBLE_DEVICES=0,1: 2). */
int runner_slurm__gpu_count(const struct runner_spec *spec)
{
    for (size_t i = 0; spec->env && spec->env[i]; i++)
        if (!strncmp(spec->env[i], "CUDA_VISIBLE_DEVICES=", 21)) {
            const char *v = spec->env[i] + 21;
            if (!*v)
                return 0;
            int n = 1;
            for (; *v; v++)
                n += *v == ',';
            return n;
        }
    return 0;
}
