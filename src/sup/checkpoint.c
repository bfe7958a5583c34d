/*
 * checkpoint: the eviction that takes an instance off the machine and brings
 * it back with its pids. The CUDA state is suspended first, exactly as
 * cuda_suspend does (suspend.c), because CRIU cannot dump device memory; then
 * `criu dump` writes the process tree to STATE_DIR/checkpoints/NAME and ends
 * it (state checkpointed). A wake runs `criu restore --restore-detached`,
 * reads the restored root's pid, watches it again (it is no longer our
 * child), toggles the CUDA state back, warms the engine up and marks it
 * ready. Images are removed after a restore or a stop unless
 * tools.keep_checkpoints is set. Anything that fails stops the instance: its
 * GPU memory must come back. See docs/sched.md, "checkpoint".
 *
 * On another host (a pod) every step runs there, through the runner's exec:
 * the images go to ~/.yard/checkpoints/NAME on the pod, and what this machine
 * would read from the images directory (its absolute path, the restored pid,
 * its group and start time, the suspended pids) comes back as the output of
 * pod_script, parsed strictly. See docs/pods.md, "Eviction tools on a pod".
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "cloud/ckstore.h"
#include "engine/key.h"
#include "runner/tools.h"
#include "sup/sup_int.h"

#define CRIU_TIMEOUT_MS (10 * 60 * 1000) /* an image of a large engine is tens of GB */
#define PIDS_FILE "yard-cuda-pids"       /* the suspended pids, for a restore after a restart */
#define PID_FILE "yard-restore.pid"
#define POD_SCRIPT_TIMEOUT_MS (60 * 1000)
/* A restored tree on a pod is reached through a forward its runner's next poll makes. */
#define RESTORE_REACH_TIMEOUT_MS (60 * 1000)

struct ckpt {
    struct instance *in;
    char *dir; /* on the instance's host: this machine's, or the pod's absolute path */
    char *pidfile;
    sup_op_cb done; /* a pod's sleep: whom the CUDA half reports to once the dir is ready */
    void *arg;
    int restored;    /* criu restore ran: the tree may run again */
    int await_found; /* a pod: the restored tree is watched, its port not forwarded yet */
    int fresh;       /* a start without a record, from the store: a failure starts it cold */
};

/* NAME, or NAME#R for replica R > 0: the images of two replicas never meet. */
static const char *ckpt_key(struct instance *in)
{
    return in->label ? in->label : in->name;
}

char *sup__ckpt_dir(struct instance *in)
{
    if (!in->runner->pids_here)
        return xstrfmt("~/.yard/checkpoints/%s on pod '%s'", ckpt_key(in), in->runner->host);
    return xstrfmt("%s/checkpoints/%s", in->sup->app->state_dir, ckpt_key(in));
}

/*
 * The criu to run on in's host: tools.criu names this machine's; on another
 * host the bare name is looked up in its PATH.
 */
static const char *criu_bin(struct instance *in)
{
    const struct config *cfg = in->sup->app->cfg;
    return in->runner->pids_here && cfg ? cfg->tool_criu : NULL;
}

/*
 * What a pod does with the images directory, $HOME/.yard/checkpoints/$2 there
 * ($1 the verb; every word arrives quoted, nothing of it is expanded twice):
 *   prepare ROOT   makes the directory and empties it; "U PID" when a process
 *                  of ROOT's group or session holds an io_uring (CRIU cannot
 *                  dump it), else "D DIR", the absolute path
 *   locate         "D DIR" when the images are there (fails otherwise) and
 *                  removes a pid file of an earlier restore
 *   pids PID...    records the suspended pids beside the images
 *   restored       "R PID PGID START" of the root criu restore wrote to its
 *                  pid file, then "S PID" per recorded suspended pid
 *   discard        removes the directory
 * Failures say why in one line on stderr and exit 1.
 */
static const char pod_script[] =
    "v=$1; d=\"$HOME/.yard/checkpoints/$2\"; shift 2\n"
    "case $v in\n"
    "prepare)\n"
    "  root=$1\n"
    "  mkdir -p -m 700 -- \"$d\" && find \"$d\" -mindepth 1 -delete || exit 1\n"
    "  for p in /proc/[0-9]*; do\n"
    "    s=$(cat \"$p/stat\" 2>/dev/null) || continue; set -- ${s##*) }\n"
    "    [ \"${p#/proc/}\" = \"$root\" ] || [ \"$3\" = \"$root\" ] || [ \"$4\" = \"$root\" ] || "
    "continue\n"
    "    for f in \"$p\"/fd/*; do\n"
    "      if [ \"$(readlink \"$f\" 2>/dev/null)\" = 'anon_inode:[io_uring]' ]; then\n"
    "        echo \"U ${p#/proc/}\"; exit 0; fi\n"
    "    done\n"
    "  done\n"
    "  printf 'D %s\\n' \"$d\" ;;\n"
    "locate)\n"
    "  [ -r \"$d/inventory.img\" ] || { echo \"no checkpoint images in $d\" >&2; exit 1; }\n"
    "  rm -f -- \"$d/" PID_FILE "\" && printf 'D %s\\n' \"$d\" ;;\n"
    "pids)\n"
    "  printf '%s\\n' \"$@\" > \"$d/" PIDS_FILE "\" ;;\n"
    "restored)\n"
    "  p=$(cat -- \"$d/" PID_FILE "\" 2>/dev/null) || { echo \"criu restore wrote no pid file in "
    "$d\" >&2; exit 1; }\n"
    "  case $p in ''|*[!0-9]*) echo \"the pid file in $d holds no pid\" >&2; exit 1;; esac\n"
    "  s=$(cat \"/proc/$p/stat\" 2>/dev/null) || { echo \"the restored process $p is not "
    "running\" >&2; exit 1; }\n"
    "  set -- ${s##*) }; printf 'R %s %s %s\\n' \"$p\" \"$3\" \"${20}\"\n"
    "  if [ -r \"$d/" PIDS_FILE
    "\" ]; then while read -r q; do echo \"S $q\"; done < \"$d/" PIDS_FILE "\"; fi ;;\n"
    "discard)\n"
    "  rm -rf -- \"$d\" ;;\n"
    "*) echo \"unknown verb $v\" >&2; exit 1 ;;\n"
    "esac\n";

/* Runs pod_script's verb for in on its host; argv holds the verb's own arguments. */
static struct runner_exec *pod_run(struct instance *in, const char *verb, const char *const *argv,
                                   size_t argc, runner_exec_cb cb, void *arg)
{
    struct tools_cmd cmd = {0};
    tools_cmd_add(&cmd, "bash");
    tools_cmd_add(&cmd, "-c");
    tools_cmd_add(&cmd, pod_script);
    tools_cmd_add(&cmd, "yard-checkpoint");
    tools_cmd_add(&cmd, verb);
    tools_cmd_add(&cmd, ckpt_key(in));
    for (size_t i = 0; i < argc; i++)
        tools_cmd_add(&cmd, argv[i]);
    return in->runner->ops->exec(in->runner, &cmd, POD_SCRIPT_TIMEOUT_MS, cb, arg);
}

/* Why a pod_script run failed, in one line; a new string. */
static char *pod_why(struct instance *in, const char *verb, const struct tools_result *res)
{
    if (res->err < 0)
        return xstrdup(res->why ? res->why : strerror(-res->err));
    char line[400];
    tools_last_line(res->errout, res->err_len, line, sizeof line);
    if (!line[0])
        snprintf(line, sizeof line, "exited %d", res->exit_code);
    return xstrfmt("the checkpoint helper's '%s' on pod '%s' failed: %s", verb, in->runner->host,
                   line);
}

/* The pod's answer, read strictly (untrusted bytes): its lines, each starting with a letter. */
struct pod_answer {
    char *dir;     /* D: an absolute path without control bytes */
    int io_uring;  /* U: the pid holding an io_uring */
    int have_root; /* R */
    struct runner_proc root;
    int *pids; /* S */
    size_t n_pids;
};

static void pod_answer_release(struct pod_answer *a)
{
    free(a->dir);
    free(a->pids);
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 19)
        return -EPROTO;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EPROTO;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* "PID PGID START": three decimal fields separated by one space. */
static int parse_root(const char *s, size_t len, struct runner_proc *p)
{
    const char *sp1 = memchr(s, ' ', len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - s)) : NULL;
    int pid = 0, pgid = 0;
    uint64_t start = 0;
    if (!sp2 || tools_parse_pid(s, (size_t)(sp1 - s), &pid) < 0 ||
        tools_parse_pid(sp1 + 1, (size_t)(sp2 - sp1 - 1), &pgid) < 0 ||
        parse_u64(sp2 + 1, len - (size_t)(sp2 + 1 - s), &start) < 0)
        return -EPROTO;
    *p = (struct runner_proc){.pid = pid, .pgid = pgid, .start_time = start};
    return 0;
}

static int pod_answer_parse(const char *out, size_t len, struct pod_answer *a)
{
    memset(a, 0, sizeof *a);
    const char *c = out, *end = out + len;
    while (c < end) {
        const char *nl = memchr(c, '\n', (size_t)(end - c));
        size_t n = nl ? (size_t)(nl - c) : (size_t)(end - c);
        int pid = 0;
        if (n >= 3 && c[0] == 'D' && c[1] == ' ' && c[2] == '/' && !a->dir &&
            n - 2 < PATH_MAX - 64) {
            for (size_t i = 2; i < n; i++)
                if ((unsigned char)c[i] < ' ' || c[i] == 0x7f)
                    return -EPROTO;
            a->dir = xstrndup(c + 2, n - 2);
        } else if (n >= 3 && c[0] == 'U' && c[1] == ' ' &&
                   tools_parse_pid(c + 2, n - 2, &pid) == 0) {
            a->io_uring = pid;
        } else if (n >= 3 && c[0] == 'R' && c[1] == ' ' && !a->have_root &&
                   parse_root(c + 2, n - 2, &a->root) == 0) {
            a->have_root = 1;
        } else if (n >= 3 && c[0] == 'S' && c[1] == ' ' && a->n_pids < 4096 &&
                   tools_parse_pid(c + 2, n - 2, &pid) == 0) {
            a->pids = xrealloc(a->pids, (a->n_pids + 1) * sizeof *a->pids);
            a->pids[a->n_pids++] = pid;
        } else {
            return -EPROTO;
        }
        c += n + 1;
    }
    return 0;
}

static int mkdir_one(const char *path)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static void discard_done(const struct tools_result *res, void *arg)
{
    char *what = arg;
    if (!tools_result_ok(res)) {
        char line[400];
        tools_last_line(res->errout, res->err_len, line, sizeof line);
        log_warn("sup", "cannot remove the checkpoint images %s: %s", what,
                 res->err < 0 && res->why ? res->why
                 : line[0]                ? line
                                          : "the removal failed");
    }
    free(what);
}

void sup__ckpt_discard(struct instance *in)
{
    const struct config *cfg = in->sup->app->cfg;
    in->images_left = 0;
    if (cfg && cfg->keep_checkpoints)
        return;
    char *dir = sup__ckpt_dir(in);
    if (!in->runner->pids_here) {
        /* Removed there; the answer only says what could not be. */
        char *what = xstrfmt("of '%s' (%s)", in->label, dir);
        pod_run(in, "discard", NULL, 0, discard_done, what);
        free(dir);
        return;
    }
    if (sup__ckstore_hold_discard(in)) {
        /* The upload reads them: removed when it ends. */
        free(dir);
        return;
    }
    int rc = fs_empty_dir(dir);
    if (rc == 0 && rmdir(dir) < 0 && errno != ENOENT)
        rc = -errno;
    if (rc < 0)
        log_warn("sup", "cannot remove the checkpoint images of '%s' in '%s': %s", in->name, dir,
                 strerror(-rc));
    free(dir);
}

static void ckpt_free(struct ckpt *c)
{
    if (!c)
        return;
    free(c->dir);
    free(c->pidfile);
    free(c);
}

void sup__ckpt_drop(struct instance *in)
{
    ckpt_free(in->ckpt);
    in->ckpt = NULL;
}

/* Ends the op: the callback hears err and msg. */
static void op_end(struct instance *in, int err, const char *msg)
{
    struct ckpt *c = in->ckpt;
    sup_op_cb cb = in->op_done;
    void *arg = in->op_arg;
    if (c && c->done) { /* a pod's sleep before its CUDA half began */
        cb = c->done;
        arg = c->arg;
    }
    ckpt_free(c);
    in->ckpt = NULL;
    in->dumping = 0;
    in->op = SUP__OP_NONE;
    in->op_done = NULL;
    in->op_arg = NULL;
    if (cb)
        cb(arg, err, msg);
}

/* A failed dump or restore leaves the engine in no known state: stop it. */
static void start_cold(struct instance *in, const char *why);

static void ckpt_fail(struct instance *in, const char *what, const char *msg)
{
    struct ckpt *c = in->ckpt;
    if (c && c->fresh && !c->restored) {
        /* A start from the store's checkpoint that restored nothing: it goes on cold at once. */
        char *why = xstrfmt("%s failed: %s", what, msg);
        sup__ckpt_discard(in);
        start_cold(in, why);
        free(why);
        return;
    }
    /* One whose restored tree failed later starts cold once stopped. */
    if (c && c->fresh)
        in->restart_after_stop = 1;
    char *why = xstrfmt("%s failed: %s; stopping it to free its GPU memory", what, msg);
    log_warn("sup", "'%s': %s", in->name, why);
    free(in->stop_reason);
    in->stop_reason = xstrdup(why);
    op_end(in, -EREMOTEIO, msg);
    free(why);
    sup__inst_stop(in, NULL, NULL, NULL);
}

static int ckpt_chosen(struct instance *in, int level)
{
    return level == SUP_SLEEP_CHECKPOINT || (level == 0 && in->spec.checkpoints);
}

static int ckpt_can(struct instance *in, int level, char **err)
{
    if (in->state != INST_READY || in->op) {
        *err = xstrfmt("'%s' is %s%s; only a ready model can be checkpointed", in->name,
                       sup_state_name(in->state), in->op ? " and busy" : "");
        return -EINVAL;
    }
    return 0;
}

static char *io_uring_msg(struct instance *in, int pid)
{
    return xstrfmt("cannot checkpoint '%s': process %d uses io_uring, which CRIU cannot dump; use "
                   "eviction process cuda_suspend for this engine",
                   in->name, pid);
}

/* The pod made the images directory and found no io_uring: the CUDA half begins. */
static void prepare_done(const struct tools_result *res, void *arg)
{
    struct instance *in = arg;
    struct ckpt *c = in->ckpt;
    in->tool = NULL;
    struct pod_answer a = {0};
    char *msg = NULL;
    int rc = -EREMOTEIO;
    if (!tools_result_ok(res)) {
        char *why = pod_why(in, "prepare", res);
        msg = xstrfmt("cannot checkpoint '%s': %s", in->name, why);
        free(why);
    } else if (pod_answer_parse(res->out, res->out_len, &a) < 0 || (!a.dir && !a.io_uring)) {
        msg = xstrfmt("cannot checkpoint '%s': pod '%s' did not name an images directory", in->name,
                      in->runner->host);
    } else if (a.io_uring) {
        msg = io_uring_msg(in, a.io_uring);
        rc = -ENOTSUP;
    } else {
        c->dir = a.dir;
        a.dir = NULL;
    }
    pod_answer_release(&a);
    if (msg) {
        /* Nothing was suspended yet: the model stays as it was. */
        log_warn("sup", "%s", msg);
        op_end(in, rc, msg);
        free(msg);
        return;
    }
    sup_op_cb done = c->done;
    void *done_arg = c->arg;
    c->done = NULL;
    c->arg = NULL;
    in->op = SUP__OP_NONE;
    char *err = NULL;
    log_info("sup", "'%s' checkpointing with cuda-checkpoint and CRIU on pod '%s' to %s", in->name,
             in->runner->host, c->dir);
    if (sup__inst_suspend_for_checkpoint(in, done, done_arg, &err) < 0) {
        ckpt_free(c);
        in->ckpt = NULL;
        if (done)
            done(done_arg, -EINVAL, err);
        free(err);
    }
}

static int ckpt_sleep(struct instance *in, int level, sup_op_cb done, void *arg, char **err)
{
    int rc = ckpt_can(in, level, err);
    if (rc < 0)
        return rc;
    if (!in->runner->pids_here) {
        /* The directory and the io_uring check are the pod's: ask it first. */
        struct ckpt *c = xcalloc(1, sizeof *c);
        c->in = in;
        c->done = done;
        c->arg = arg;
        in->ckpt = c;
        in->op = SUP__OP_SLEEP;
        sup__tail_follow(&in->tail);
        char root[24];
        snprintf(root, sizeof root, "%d", in->proc.pgid > 0 ? in->proc.pgid : in->proc.pid);
        const char *argv[] = {root};
        in->tool = pod_run(in, "prepare", argv, 1, prepare_done, in);
        return 0;
    }
    /* Refuse what CRIU would refuse before anything is suspended. */
    int offender = 0;
    rc = tools_tree_uses_io_uring(in->proc.pid, &offender);
    if (rc == 1) {
        *err = io_uring_msg(in, offender);
        return -ENOTSUP;
    }
    /* An upload of the images about to be replaced is of no more use. */
    sup__ckstore_cancel(in);
    char *base = xstrfmt("%s/checkpoints", in->sup->app->state_dir);
    char *dir = sup__ckpt_dir(in);
    rc = mkdir_one(base);
    if (rc == 0)
        rc = mkdir_one(dir);
    if (rc == 0)
        rc = fs_empty_dir(dir); /* images of an earlier run would be restored by mistake */
    if (rc < 0)
        *err = xstrfmt("cannot checkpoint '%s': cannot prepare '%s': %s", in->name, dir,
                       strerror(-rc));
    free(base);
    free(dir);
    if (rc < 0)
        return rc;
    log_info("sup", "'%s' checkpointing with cuda-checkpoint and CRIU", in->name);
    return sup__inst_suspend_for_checkpoint(in, done, arg, err);
}

static void write_pids(struct instance *in, const char *dir)
{
    struct buf b;
    buf_init(&b, SIZE_MAX);
    for (size_t i = 0; i < in->n_susp; i++)
        buf_printf(&b, "%d\n", in->susp_pids[i]);
    int rc = fs_write_private(dir, PIDS_FILE, b.data ? b.data : "");
    buf_release(&b);
    if (rc < 0)
        log_warn("sup", "cannot write '%s/%s': %s", dir, PIDS_FILE, strerror(-rc));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int sup__ckpt_identity(struct instance *in, const char *gpus, char out[65])
{
    struct sup__launch l;
    char err[256];
    if (sup__launch_of(&in->spec, in->eng, 0, gpus, NULL, &l, err, sizeof err) < 0)
        return -EINVAL;
    size_t ne = 0;
    while (l.env[ne])
        ne++;
    qsort(l.env, ne, sizeof *l.env, cmp_str);
    struct sha256 h;
    sha256_init(&h);
    /* Every word with its NUL; a section ends with an empty word. */
    for (size_t i = 0; l.argv[i]; i++)
        sha256_update(&h, l.argv[i], strlen(l.argv[i]) + 1);
    sha256_update(&h, "", 1);
    for (size_t i = 0; i < ne; i++)
        sha256_update(&h, l.env[i], strlen(l.env[i]) + 1);
    sha256_update(&h, "", 1);
    sha256_update(&h, l.cwd ? l.cwd : "", strlen(l.cwd ? l.cwd : "") + 1);
    unsigned char d[32];
    sha256_final(&h, d);
    sha256_hex(d, out);
    sup__launch_release(&l);
    return 0;
}

/* What a daemon without a record of the checkpoint needs to restore it (CKSTORE_LAUNCH_FILE). */
static void write_launch(struct instance *in, const char *dir)
{
    char id[65], key[ENGINE_KEY_HEX + 1];
    if (sup__ckpt_identity(in, in->gpus, id) < 0) {
        log_warn("sup",
                 "'%s': its launch cannot be built again; its checkpoint in the store will "
                 "restore only where a record of it is",
                 in->name);
        return;
    }
    int have_key = sup__engine_key(in, key) == 0;
    char *text = xstrfmt("launch %s\nport %d\nkey %s\n", id, in->port, have_key ? key : "-");
    int rc = fs_write_private(dir, CKSTORE_LAUNCH_FILE, text);
    free(text);
    if (rc < 0)
        log_warn("sup", "cannot write '%s/%s': %s", dir, CKSTORE_LAUNCH_FILE, strerror(-rc));
}

/*
 * Reads dir's CKSTORE_LAUNCH_FILE (checked by the download against the
 * manifest): the port the restored engine listens on, its key. 0 or -EPROTO.
 */
static int read_launch(const char *dir, int *port, char key[ENGINE_KEY_HEX + 1])
{
    char *path = xstrfmt("%s/%s", dir, CKSTORE_LAUNCH_FILE);
    FILE *f = fopen(path, "re");
    free(path);
    if (!f)
        return -EPROTO;
    char line[256];
    int have_port = 0, have_key = 0;
    key[0] = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *end = NULL;
        if (!strncmp(line, "port ", 5)) {
            long p = strtol(line + 5, &end, 10);
            have_port = end && !*end && p > 0 && p < 65536;
            *port = (int)p;
        } else if (!strcmp(line, "key -")) {
            have_key = 1;
        } else if (!strncmp(line, "key ", 4) && strlen(line + 4) == ENGINE_KEY_HEX &&
                   strspn(line + 4, "0123456789abcdef") == ENGINE_KEY_HEX) {
            memcpy(key, line + 4, ENGINE_KEY_HEX + 1);
            have_key = 1;
        }
    }
    fclose(f);
    return have_port && have_key ? 0 : -EPROTO;
}

static void add_susp_pid(struct instance *in, int pid)
{
    in->susp_pids = xrealloc(in->susp_pids, (in->n_susp + 1) * sizeof *in->susp_pids);
    in->susp_pids[in->n_susp++] = pid;
}

/* The suspended pids recorded at the dump, when this daemon does not know them. */
static void read_pids(struct instance *in, const char *dir)
{
    if (in->n_susp)
        return;
    char *path = xstrfmt("%s/%s", dir, PIDS_FILE);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f)
        return;
    int pid;
    while (fscanf(f, "%d", &pid) == 1 && pid > 0)
        add_susp_pid(in, pid);
    fclose(f);
}

static void dumped(struct instance *in)
{
    struct ckpt *c = in->ckpt;
    in->sleep_level = SUP_SLEEP_CHECKPOINT;
    char *what = in->runner->pids_here ? xstrfmt("checkpointed with CRIU to %s", c->dir)
                                       : xstrfmt("checkpointed with CRIU on pod '%s' to %s",
                                                 in->runner->host, c->dir);
    char *reason = sup__sleep_reason(in, what);
    sup__set_state(in, INST_CHECKPOINTED, reason, NULL);
    free(reason);
    free(what);
    op_end(in, 0, NULL);
}

static void pod_pids_done(const struct tools_result *res, void *arg)
{
    struct instance *in = arg;
    in->tool = NULL;
    if (!tools_result_ok(res)) {
        /* Only a later daemon's restore needs them; it then resumes the leader alone. */
        char *why = pod_why(in, "pids", res);
        log_warn("sup", "'%s': cannot record its suspended pids: %s", in->name, why);
        free(why);
    }
    dumped(in);
}

static void dump_done(const struct tools_result *res, void *arg)
{
    struct instance *in = arg;
    struct ckpt *c = in->ckpt;
    in->tool = NULL;
    in->dumping = 0;
    if (!tools_result_ok(res)) {
        struct tools_cmd cmd;
        tools_criu_dump_cmd(&cmd, criu_bin(in), in->proc.pid, c->dir);
        char *msg = tools_describe(&cmd, res);
        /* What it wrote restores nothing: removed once stopped, when a pod answers again. */
        ckpt_fail(in, "checkpoint", msg);
        free(msg);
        return;
    }
    if (in->runner->pids_here) {
        write_pids(in, c->dir);
        if (sup__ckstore_on(in))
            write_launch(in, c->dir);
        /* The local images stay the ones a wake restores; the store's copy outlives them. */
        sup__ckstore_upload(in, c->dir);
        dumped(in);
        return;
    }
    char(*nums)[24] = xcalloc(in->n_susp ? in->n_susp : 1, sizeof *nums);
    const char **argv = xcalloc(in->n_susp ? in->n_susp : 1, sizeof *argv);
    for (size_t i = 0; i < in->n_susp; i++) {
        snprintf(nums[i], sizeof nums[i], "%d", in->susp_pids[i]);
        argv[i] = nums[i];
    }
    in->tool = pod_run(in, "pids", argv, in->n_susp, pod_pids_done, in);
    free(argv);
    free(nums);
}

void sup__ckpt_dump(struct instance *in)
{
    /* A pod's sleep made its ckpt (and learned the directory) before the CUDA half. */
    struct ckpt *c = in->ckpt;
    if (!c) {
        c = xcalloc(1, sizeof *c);
        c->in = in;
        c->dir = sup__ckpt_dir(in);
        in->ckpt = c;
    }
    struct tools_cmd cmd;
    if (!c->dir || tools_criu_dump_cmd(&cmd, criu_bin(in), in->proc.pid, c->dir) < 0) {
        ckpt_fail(in, "checkpoint", "cannot build the criu dump command");
        return;
    }
    /* CRIU ends the tree after the dump: that exit is not a crash. */
    in->dumping = 1;
    in->images_left = 1;
    in->tool = in->runner->ops->exec(in->runner, &cmd, CRIU_TIMEOUT_MS, dump_done, in);
}

/* The restored tree is watched and reached: the CUDA half resumes it. */
static void restore_finish(struct instance *in)
{
    ckpt_free(in->ckpt);
    in->ckpt = NULL;
    sup__ckpt_discard(in);
    sup__resume_after_restore(in);
}

/* The restored tree on a pod was not reached in time: a restore that failed. */
static void reach_deadline_fire(uv_timer_t *t)
{
    struct instance *in = t->data;
    if (!in->ckpt || !in->ckpt->await_found)
        return;
    char *why = xstrfmt("the restored process on pod '%s' was not reached within %d s",
                        in->runner->host, RESTORE_REACH_TIMEOUT_MS / 1000);
    ckpt_fail(in, "restore", why);
    free(why);
}

/*
 * The tree criu restored runs as p: record and watch it. A tree that is not
 * the one watched (the dump ended it, the restore made it anew) is adopted;
 * on a pod its port is forwarded again before the resume goes on.
 */
static void restored_as(struct instance *in, const struct runner_proc *p)
{
    struct ckpt *c = in->ckpt;
    if (in->proc.pid > 0 && p->pid != in->proc.pid)
        log_warn("sup", "'%s' was restored as pid %d, not %d", in->name, p->pid, in->proc.pid);
    int same = p->pid == in->proc.pid && p->start_time == in->proc.start_time;
    if (in->watch && !same) {
        in->runner->ops->unwatch(in->watch);
        in->watch = NULL;
    }
    in->proc = *p;
    in->main_exited = 0;
    int adopted = 0;
    if (!in->watch) {
        /* The restored tree is not our child: watch it as an adopted one. */
        if (in->runner->ops->adopt(in->runner, &in->proc, sup__inst_on_exit, in, &in->watch) < 0) {
            ckpt_fail(in, "restore", "the restored process exited at once");
            return;
        }
        adopted = 1;
        if (in->runner->ops->follow_log)
            in->runner->ops->follow_log(in->watch, in->name, in->tail.path, in->port);
    }
    log_info("sup", "'%s' restored as pid %d on %s", in->name, p->pid, in->runner->host);
    if (adopted && !in->runner->pids_here) {
        /* The pod forwards a port to it on its next poll: found goes on (sup__ckpt_found). */
        in->reach_port = 0;
        c->await_found = 1;
        uv_timer_start(&in->deadline_timer, reach_deadline_fire, RESTORE_REACH_TIMEOUT_MS, 0);
        return;
    }
    restore_finish(in);
}

int sup__ckpt_found(struct instance *in, int local_port)
{
    if (!in->ckpt || !in->ckpt->await_found)
        return 0;
    uv_timer_stop(&in->deadline_timer);
    in->reach_port = local_port;
    restore_finish(in);
    return 1;
}

int sup__ckpt_exited(struct instance *in)
{
    if (!in->ckpt || !in->ckpt->await_found)
        return 0;
    ckpt_fail(in, "restore", "the restored process exited before it was reached");
    return 1;
}

static void pod_restored_done(const struct tools_result *res, void *arg)
{
    struct instance *in = arg;
    in->tool = NULL;
    struct pod_answer a = {0};
    int parsed = tools_result_ok(res) ? pod_answer_parse(res->out, res->out_len, &a) : -EIO;
    if (parsed < 0 || !a.have_root) {
        char *why = parsed == -EIO
                        ? pod_why(in, "restored", res)
                        : xstrfmt("pod '%s' did not name the restored process", in->runner->host);
        ckpt_fail(in, "restore", why);
        free(why);
        pod_answer_release(&a);
        return;
    }
    if (!in->n_susp)
        for (size_t i = 0; i < a.n_pids; i++)
            add_susp_pid(in, a.pids[i]);
    struct runner_proc p = a.root;
    pod_answer_release(&a);
    restored_as(in, &p);
}

static void restore_done(const struct tools_result *res, void *arg)
{
    struct instance *in = arg;
    struct ckpt *c = in->ckpt;
    in->tool = NULL;
    if (!tools_result_ok(res)) {
        struct tools_cmd cmd;
        tools_criu_restore_cmd(&cmd, criu_bin(in), c->dir, c->pidfile);
        char *msg = tools_describe(&cmd, res);
        ckpt_fail(in, "restore", msg);
        free(msg);
        return;
    }
    c->restored = 1;
    if (!in->runner->pids_here) {
        /* The pid file, the tree's group and start time and the pids file are the pod's. */
        in->tool = pod_run(in, "restored", NULL, 0, pod_restored_done, in);
        return;
    }
    int pid = 0;
    int rc = tools_read_pidfile(c->pidfile, &pid);
    struct runner_proc p = in->proc;
    if (rc == 0) {
        p.pid = pid;
        pid_t pgid = getpgid(pid);
        if (pgid > 0)
            p.pgid = pgid;
        rc = runner_proc_start_time(pid, &p.start_time);
    }
    if (rc < 0) {
        char *msg =
            xstrfmt("criu restore left no running process in '%s': %s", c->pidfile, strerror(-rc));
        ckpt_fail(in, "restore", msg);
        free(msg);
        return;
    }
    read_pids(in, c->dir);
    restored_as(in, &p);
}

/* Runs criu restore on in's host with c->dir; 0 or -ENAMETOOLONG with *err set. */
static int restore_run(struct instance *in, char **err)
{
    struct ckpt *c = in->ckpt;
    c->pidfile = xstrfmt("%s/%s", c->dir, PID_FILE);
    struct tools_cmd cmd;
    if (tools_criu_restore_cmd(&cmd, criu_bin(in), c->dir, c->pidfile) < 0) {
        *err = xstrfmt("cannot restore '%s': the path '%s' is too long", in->name, c->dir);
        return -ENAMETOOLONG;
    }
    log_info("sup", "'%s' restoring from %s on %s", in->name, c->dir, in->runner->host);
    in->tool = in->runner->ops->exec(in->runner, &cmd, CRIU_TIMEOUT_MS, restore_done, in);
    return 0;
}

/* The pod found the images: the restore runs there. */
static void locate_done(const struct tools_result *res, void *arg)
{
    struct instance *in = arg;
    struct ckpt *c = in->ckpt;
    in->tool = NULL;
    struct pod_answer a = {0};
    int parsed = tools_result_ok(res) ? pod_answer_parse(res->out, res->out_len, &a) : -EIO;
    if (parsed < 0 || !a.dir) {
        char *why = parsed == -EIO
                        ? pod_why(in, "locate", res)
                        : xstrfmt("pod '%s' did not name the images directory", in->runner->host);
        ckpt_fail(in, "restore", why);
        free(why);
        pod_answer_release(&a);
        return;
    }
    c->dir = a.dir;
    a.dir = NULL;
    pod_answer_release(&a);
    char *err = NULL;
    if (restore_run(in, &err) < 0) {
        ckpt_fail(in, "restore", err);
        free(err);
    }
}

/* The wake is under way: done(arg) hears how it ends. */
static void wake_begun(struct instance *in, sup_op_cb done, void *arg)
{
    in->op = SUP__OP_WAKE;
    in->op_done = done;
    in->op_arg = arg;
    sup__tail_follow(&in->tail);
}

/* A wake that could not begin: its record goes, err said why. */
static int wake_refused(struct instance *in, int rc)
{
    ckpt_free(in->ckpt);
    in->ckpt = NULL;
    return rc;
}

static int ckpt_wake(struct instance *in, sup_op_cb done, void *arg, char **err)
{
    if (in->state != INST_CHECKPOINTED || in->op) {
        *err = xstrfmt("'%s' is %s%s; only a checkpointed model can be restored", in->name,
                       sup_state_name(in->state), in->op ? " and busy" : "");
        return -EINVAL;
    }
    struct ckpt *c = xcalloc(1, sizeof *c);
    c->in = in;
    in->ckpt = c;
    if (!in->runner->pids_here) {
        /* The images are the pod's: it says where they are (and that they are) first. */
        wake_begun(in, done, arg);
        in->tool = pod_run(in, "locate", NULL, 0, locate_done, in);
        return 0;
    }
    c->dir = sup__ckpt_dir(in);
    char *pidfile = xstrfmt("%s/%s", c->dir, PID_FILE);
    unlink(pidfile);
    free(pidfile);
    char *inv = xstrfmt("%s/inventory.img", c->dir);
    int missing = access(inv, F_OK) < 0 && errno == ENOENT;
    free(inv);
    if (missing && sup__ckstore_on(in)) {
        /* A wiped disk, a new machine: the store's newest generation first. */
        char *base = xstrfmt("%s/checkpoints", in->sup->app->state_dir);
        int rc = mkdir_one(base);
        free(base);
        if (rc < 0) {
            *err = xstrfmt("cannot restore '%s': cannot make '%s/checkpoints': %s", in->name,
                           in->sup->app->state_dir, strerror(-rc));
            return wake_refused(in, rc);
        }
        wake_begun(in, done, arg);
        sup__ckstore_download(in, c->dir, NULL);
        return 0;
    }
    int rc = restore_run(in, err);
    if (rc < 0)
        return wake_refused(in, rc);
    wake_begun(in, done, arg);
    return 0;
}

/*
 * STATE_DIR/checkpoints/.keys/NAME: the key of an engine restored from the
 * store, kept for the daemons that adopt it later (no model name starts with
 * a dot, so no images directory is named so).
 */
static char *key_file(struct instance *in)
{
    return xstrfmt("%s/checkpoints/.keys/%s", in->sup->app->state_dir, ckpt_key(in));
}

static void key_save(struct instance *in)
{
    char *dir = xstrfmt("%s/checkpoints/.keys", in->sup->app->state_dir);
    char *path = key_file(in);
    int rc = mkdir_one(dir);
    int fd = rc < 0 ? -1 : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (rc == 0 && fd < 0)
        rc = -errno;
    if (fd >= 0) {
        size_t n = strlen(in->ckpt_engine_key);
        if (write(fd, in->ckpt_engine_key, n) != (ssize_t)n)
            rc = errno ? -errno : -EIO;
        if (close(fd) < 0 && rc == 0)
            rc = -errno;
    }
    if (rc < 0)
        log_warn("sup",
                 "cannot write '%s': %s; a daemon restarted over '%s' will not know its key "
                 "(its requests are refused until it is restarted)",
                 path, strerror(-rc), in->label);
    free(path);
    free(dir);
}

void sup__ckpt_key_load(struct instance *in)
{
    char *path = key_file(in);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return;
    char key[ENGINE_KEY_HEX + 2];
    ssize_t n = read(fd, key, sizeof key);
    close(fd);
    if (n != ENGINE_KEY_HEX || strspn(key, "0123456789abcdef") < ENGINE_KEY_HEX)
        return;
    key[ENGINE_KEY_HEX] = 0;
    free(in->ckpt_engine_key);
    in->ckpt_engine_key = xstrdup(key);
}

void sup__ckpt_key_forget(struct instance *in)
{
    free(in->ckpt_engine_key);
    in->ckpt_engine_key = NULL;
    char *path = key_file(in);
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("sup", "cannot remove '%s': %s", path, strerror(errno));
    free(path);
}

/* The store held no checkpoint of in's launch now, or it could not be restored: a cold start. */
static void start_cold(struct instance *in, const char *why)
{
    log_info("sup", "'%s' starts cold: %s", in->name, why);
    in->images_left = 0;
    in->port = in->reach_port = 0;
    sup__ckpt_key_forget(in);
    op_end(in, 0, NULL);
    free(in->launch_note);
    in->launch_note = xstrfmt("starting cold: %s", why);
    if (sup__inst_launch(in) < 0)
        sup__inst_fail(in, "cannot start: its start could not be recorded");
}

int sup__ckpt_start_from_store(struct instance *in)
{
    if (!in->spec.checkpoints || !sup__ckstore_on(in))
        return 0;
    char *dir = sup__ckpt_dir(in);
    char *inv = xstrfmt("%s/inventory.img", dir);
    int local = access(inv, F_OK) == 0;
    free(inv);
    char id[65];
    char *base = xstrfmt("%s/checkpoints", in->sup->app->state_dir);
    int rc = local ? -EEXIST : sup__ckpt_identity(in, in->gpus, id);
    if (rc == 0)
        rc = mkdir_one(base);
    free(base);
    if (rc < 0) {
        /* Images here without a record are not restored blind; a cold start replaces them. */
        if (rc == -EEXIST)
            log_info("sup",
                     "'%s' starts cold: images in %s but no record of them; its next "
                     "checkpoint replaces them",
                     in->name, dir);
        else if (rc != -EINVAL) /* a launch that cannot be built: the start says why */
            log_warn("sup", "'%s' starts cold: cannot make '%s/checkpoints': %s", in->name,
                     in->sup->app->state_dir, strerror(-rc));
        free(dir);
        return 0;
    }
    in->started_wall_ms = clock_wall_ms();
    rc = sup__try_state(in, INST_STARTING, "restoring its checkpoint from the checkpoint store",
                        NULL);
    if (rc < 0) {
        free(dir);
        return rc;
    }
    struct ckpt *c = xcalloc(1, sizeof *c);
    c->in = in;
    c->dir = dir;
    c->fresh = 1;
    in->ckpt = c;
    in->images_left = 1; /* a stop removes what came down */
    in->evict = &sup__evict_checkpoint;
    wake_begun(in, NULL, NULL);
    sup__ckstore_download(in, c->dir, id);
    return 1;
}

void sup__ckpt_downloaded(struct instance *in, const char *why)
{
    struct ckpt *c = in->ckpt;
    if (c && c->fresh) {
        int port = 0;
        char key[ENGINE_KEY_HEX + 1];
        if (why) {
            start_cold(in, why);
            return;
        }
        if (read_launch(c->dir, &port, key) < 0) {
            char *msg = xstrfmt("checkpoint store: the images of '%s' hold no valid %s; not "
                                "restoring from them",
                                ckpt_key(in), CKSTORE_LAUNCH_FILE);
            sup__ckpt_discard(in);
            start_cold(in, msg);
            free(msg);
            return;
        }
        /* The engine comes back listening where it listened, with the key it was given. */
        in->port = in->reach_port = port;
        free(in->ckpt_engine_key);
        in->ckpt_engine_key = key[0] ? xstrdup(key) : NULL;
        if (in->ckpt_engine_key)
            key_save(in);
        struct sup__launch l;
        char lerr[256];
        if (sup__launch_of(&in->spec, in->eng, port, in->gpus, NULL, &l, lerr, sizeof lerr) == 0) {
            /* What `yard ps` shows: the command it was started with (its identity matched). */
            struct buf b;
            buf_init(&b, 1 << 16);
            for (size_t i = 0; l.argv[i]; i++)
                buf_printf(&b, "%s%s", i ? " " : "", l.argv[i]);
            free(in->cmdline);
            in->cmdline = buf_detach(&b, NULL);
            sup__launch_release(&l);
        }
    }
    if (why) {
        /* Nothing local changed, the store keeps its copy; a failed wake ends in a stop. */
        ckpt_fail(in, "restore", why);
        return;
    }
    char *err = NULL;
    if (restore_run(in, &err) < 0) {
        ckpt_fail(in, "restore", err);
        free(err);
    }
}

static void ckpt_cancel(struct instance *in)
{
    if (in->suspend || !in->ckpt) {
        /* the CUDA half runs (before the dump, after the restore), or nothing of CRIU */
        (in->suspend ? &sup__evict_suspend : &sup__evict_engine)->cancel(in);
        return;
    }
    if (in->tool)
        in->runner->ops->exec_cancel(in->runner, in->tool);
    in->tool = NULL;
    op_end(in, -ECANCELED, "cancelled: the model is stopping");
}

const struct sup__evict_ops sup__evict_checkpoint = {
    .name = "checkpoint",
    .chosen = ckpt_chosen,
    .can = ckpt_can,
    .sleep = ckpt_sleep,
    .wake = ckpt_wake,
    .cancel = ckpt_cancel,
};
