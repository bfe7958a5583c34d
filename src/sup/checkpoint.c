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
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "runner/tools.h"
#include "sup/sup_int.h"

#define CRIU_TIMEOUT_MS (10 * 60 * 1000) /* an image of a large engine is tens of GB */
#define PIDS_FILE "yard-cuda-pids"       /* the suspended pids, for a restore after a restart */
#define PID_FILE "yard-restore.pid"

struct ckpt {
    struct instance *in;
    char *dir;
    char *pidfile;
};

int sup__policy_checkpoints(const struct config_model *m)
{
    /* CRIU runs here, not on a pod: a pod model is stopped instead. */
    return m && !m->pod && m->evict_process == CONFIG_PROCESS_CHECKPOINT;
}

char *sup__ckpt_dir(struct instance *in)
{
    return xstrfmt("%s/checkpoints/%s", in->sup->app->state_dir, in->name);
}

static int mkdir_one(const char *path)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Removes the files of dir (CRIU writes no subdirectories); 0 or -errno. */
static int empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *p = xstrfmt("%s/%s", dir, e->d_name);
        if (unlink(p) < 0 && errno != ENOENT)
            rc = -errno;
        free(p);
    }
    closedir(d);
    return rc;
}

void sup__ckpt_discard(struct instance *in)
{
    const struct config *cfg = in->sup->app->cfg;
    if (cfg && cfg->keep_checkpoints)
        return;
    char *dir = sup__ckpt_dir(in);
    int rc = empty_dir(dir);
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

/* Ends the op: the callback hears err and msg. */
static void op_end(struct instance *in, int err, const char *msg)
{
    ckpt_free(in->ckpt);
    in->ckpt = NULL;
    in->dumping = 0;
    sup_op_cb cb = in->op_done;
    void *arg = in->op_arg;
    in->op = SUP__OP_NONE;
    in->op_done = NULL;
    in->op_arg = NULL;
    if (cb)
        cb(arg, err, msg);
}

/* A failed dump or restore leaves the engine in no known state: stop it. */
static void ckpt_fail(struct instance *in, const char *what, const char *msg)
{
    char *why = xstrfmt("%s failed: %s; stopping it to free its GPU memory", what, msg);
    log_warn("sup", "'%s': %s", in->name, why);
    free(in->stop_reason);
    in->stop_reason = xstrdup(why);
    op_end(in, -EREMOTEIO, msg);
    free(why);
    sup__inst_stop(in, NULL, NULL);
}

static int ckpt_chosen(struct instance *in, int level)
{
    return level == SUP_SLEEP_CHECKPOINT || (level == 0 && sup__policy_checkpoints(in->m));
}

static int ckpt_can(struct instance *in, int level, char **err)
{
    if (in->state != INST_READY || in->op) {
        *err = xstrfmt("'%s' is %s%s; only a ready model can be checkpointed", in->name,
                       sup_state_name(in->state), in->op ? " and busy" : "");
        return -EINVAL;
    }
    if (!in->runner->pids_here) {
        /* Its images, pids file and restored tree are read here, on this machine. */
        *err = xstrfmt("cannot checkpoint '%s' on '%s': CRIU checkpoints run on this machine "
                       "only; use 'yard sleep %s --level suspend' or eviction process "
                       "cuda_suspend",
                       in->name, in->runner->host, in->name);
        return -ENOTSUP;
    }
    return 0;
}

static int ckpt_sleep(struct instance *in, int level, sup_op_cb done, void *arg, char **err)
{
    int rc = ckpt_can(in, level, err);
    if (rc < 0)
        return rc;
    /* Refuse what CRIU would refuse before anything is suspended. */
    int offender = 0;
    rc = tools_tree_uses_io_uring(in->proc.pid, &offender);
    if (rc == 1) {
        *err = xstrfmt("cannot checkpoint '%s': process %d uses io_uring, which CRIU cannot "
                       "dump; use eviction process cuda_suspend for this engine",
                       in->name, offender);
        return -ENOTSUP;
    }
    char *base = xstrfmt("%s/checkpoints", in->sup->app->state_dir);
    char *dir = sup__ckpt_dir(in);
    rc = mkdir_one(base);
    if (rc == 0)
        rc = mkdir_one(dir);
    if (rc == 0)
        rc = empty_dir(dir); /* images of an earlier run would be restored by mistake */
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
    char *path = xstrfmt("%s/%s", dir, PIDS_FILE);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f && fd >= 0)
        close(fd);
    if (f) {
        for (size_t i = 0; i < in->n_susp; i++)
            fprintf(f, "%d\n", in->susp_pids[i]);
        if (fclose(f) != 0)
            f = NULL;
    }
    if (!f)
        log_warn("sup", "cannot write '%s': %s", path, strerror(errno));
    free(path);
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
    while (fscanf(f, "%d", &pid) == 1 && pid > 0) {
        in->susp_pids = xrealloc(in->susp_pids, (in->n_susp + 1) * sizeof *in->susp_pids);
        in->susp_pids[in->n_susp++] = pid;
    }
    fclose(f);
}

static void dump_done(const struct tools_result *res, void *arg)
{
    struct instance *in = arg;
    struct ckpt *c = in->ckpt;
    in->tool = NULL;
    in->dumping = 0;
    if (!tools_result_ok(res)) {
        struct tools_cmd cmd;
        tools_criu_dump_cmd(&cmd, in->sup->app->cfg->tool_criu, in->proc.pid, c->dir);
        char *msg = tools_describe(&cmd, res);
        ckpt_fail(in, "checkpoint", msg);
        free(msg);
        return;
    }
    write_pids(in, c->dir);
    in->sleep_level = SUP_SLEEP_CHECKPOINT;
    char *what = xstrfmt("checkpointed with CRIU to %s", c->dir);
    char *reason = sup__sleep_reason(in, what);
    sup__set_state(in, INST_CHECKPOINTED, reason, NULL);
    free(reason);
    free(what);
    op_end(in, 0, NULL);
}

void sup__ckpt_dump(struct instance *in)
{
    struct ckpt *c = xcalloc(1, sizeof *c);
    c->in = in;
    c->dir = sup__ckpt_dir(in);
    in->ckpt = c;
    struct tools_cmd cmd;
    if (tools_criu_dump_cmd(&cmd, in->sup->app->cfg->tool_criu, in->proc.pid, c->dir) < 0) {
        ckpt_fail(in, "checkpoint", "cannot build the criu dump command");
        return;
    }
    /* CRIU ends the tree after the dump: that exit is not a crash. */
    in->dumping = 1;
    in->tool = in->runner->ops->exec(in->runner, &cmd, CRIU_TIMEOUT_MS, dump_done, in);
}

static void restore_done(const struct tools_result *res, void *arg)
{
    struct instance *in = arg;
    struct ckpt *c = in->ckpt;
    in->tool = NULL;
    if (!tools_result_ok(res)) {
        struct tools_cmd cmd;
        tools_criu_restore_cmd(&cmd, in->sup->app->cfg->tool_criu, c->dir, c->pidfile);
        char *msg = tools_describe(&cmd, res);
        ckpt_fail(in, "restore", msg);
        free(msg);
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
    if (pid != in->proc.pid)
        log_warn("sup", "'%s' was restored as pid %d, not %d", in->name, pid, in->proc.pid);
    in->proc = p;
    in->main_exited = 0;
    /* The restored tree is not our child: watch it as an adopted one. */
    if (!in->watch &&
        in->runner->ops->adopt(in->runner, &in->proc, sup__inst_on_exit, in, &in->watch) < 0) {
        ckpt_fail(in, "restore", "the restored process exited at once");
        return;
    }
    read_pids(in, c->dir);
    ckpt_free(c);
    in->ckpt = NULL;
    sup__ckpt_discard(in);
    sup__resume_after_restore(in);
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
    c->dir = sup__ckpt_dir(in);
    c->pidfile = xstrfmt("%s/%s", c->dir, PID_FILE);
    unlink(c->pidfile);
    struct tools_cmd cmd;
    if (tools_criu_restore_cmd(&cmd, in->sup->app->cfg->tool_criu, c->dir, c->pidfile) < 0) {
        *err = xstrfmt("cannot restore '%s': the path '%s' is too long", in->name, c->dir);
        ckpt_free(c);
        return -ENAMETOOLONG;
    }
    in->ckpt = c;
    in->op = SUP__OP_WAKE;
    in->op_done = done;
    in->op_arg = arg;
    log_info("sup", "'%s' restoring from %s", in->name, c->dir);
    in->tool = in->runner->ops->exec(in->runner, &cmd, CRIU_TIMEOUT_MS, restore_done, in);
    return 0;
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
