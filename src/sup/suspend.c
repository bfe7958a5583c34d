/*
 * cuda_suspend: the engine-agnostic way to free all of an instance's GPU
 * memory while its processes keep running (llama-server included). Every
 * process of the instance that holds GPU memory (vLLM's is EngineCore, not
 * the pid yard started) is toggled with `cuda-checkpoint --toggle --pid P`,
 * then checked with `--get-state`. A failure toggles back what was suspended,
 * unlocks a process a failed attempt may have left locked, and stops the
 * instance: the GPU memory must come back. Waking toggles every process back,
 * checks it runs, and sends the 1-token warm-up before real traffic.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "engine/sleep.h"
#include "gpu/gpu.h"
#include "runner/cgroup.h"
#include "runner/tools.h"
#include "sup/sup_int.h"

#define TOOL_TIMEOUT_MS (10 * 60 * 1000) /* copying 80 GB of VRAM to host RAM takes a while */
#define WARMUP_TIMEOUT_MS (60 * 1000)

enum { PH_TOGGLE = 0, PH_VERIFY, PH_ROLLBACK };

struct suspend {
    struct instance *in;
    int waking;
    int checkpoint; /* a CRIU dump follows the suspend; a restore came before the resume */
    int reading;    /* the inventory read runs in the thread pool */
    int cancelled;  /* the instance let go of it while reading */
    int phase;
    size_t i;
    char *failure;
    uv_work_t work;
    struct gpu_inventory inv;
    char *inv_err;
};

/*
 * The cuda-checkpoint to run on in's host: tools.cuda_checkpoint names this
 * machine's; on another host the bare name is looked up in its PATH.
 */
static const char *cuda_bin(struct instance *in)
{
    const struct config *cfg = in->sup->app->cfg;
    return in->runner->pids_here && cfg ? cfg->tool_cuda_checkpoint : NULL;
}

static void step(struct suspend *x);

static void finish(struct suspend *x, int err, const char *msg)
{
    struct instance *in = x->in;
    in->suspend = NULL;
    if (x->checkpoint)
        sup__ckpt_drop(in); /* the dump never ran, or the restore's part is over */
    sup_op_cb cb = in->op_done;
    void *arg = in->op_arg;
    in->op = SUP__OP_NONE;
    in->op_done = NULL;
    in->op_arg = NULL;
    free(x->failure);
    free(x->inv_err);
    gpu_inventory_release(&x->inv);
    free(x);
    if (cb)
        cb(arg, err, msg);
}

static void fail(struct suspend *x, const char *what, const char *msg)
{
    struct instance *in = x->in;
    char *why = xstrfmt("%s failed: %s; stopping it to free its GPU memory", what, msg);
    log_warn("sup", "'%s': %s", in->name, why);
    free(in->stop_reason);
    in->stop_reason = xstrdup(why);
    finish(x, -EREMOTEIO, msg);
    free(why);
    sup__inst_stop(in, NULL, NULL, NULL);
}

static void run_tool(struct suspend *x, enum tools_cuda_op op, int pid, tools_cb cb)
{
    struct instance *in = x->in;
    struct tools_cmd cmd;
    if (tools_cuda_checkpoint_cmd(&cmd, cuda_bin(in), op, pid, 0) < 0) {
        fail(x, x->waking ? "wake" : "suspend", "cannot build the cuda-checkpoint command");
        return;
    }
    in->tool = in->runner->ops->exec(in->runner, &cmd, TOOL_TIMEOUT_MS, cb, x);
}

static void unlock_done(const struct tools_result *res, void *arg)
{
    struct suspend *x = arg;
    x->in->tool = NULL;
    x->i = 0;
    step(x);
}

static void rollback_done(const struct tools_result *res, void *arg)
{
    struct suspend *x = arg;
    x->in->tool = NULL;
    x->i++;
    step(x);
}

static void tool_done(const struct tools_result *res, void *arg)
{
    struct suspend *x = arg;
    struct instance *in = x->in;
    in->tool = NULL;
    int pid = in->susp_pids[x->i];
    int want = x->waking ? TOOLS_CUDA_RUNNING : TOOLS_CUDA_CHECKPOINTED;
    int ok = tools_result_ok(res);
    if (ok && x->phase == PH_VERIFY && tools_parse_cuda_state(res->out, res->out_len) != want) {
        free(x->failure);
        x->failure = xstrfmt("process %d is %s after the toggle, not %s", pid,
                             tools_cuda_state_name(tools_parse_cuda_state(res->out, res->out_len)),
                             tools_cuda_state_name(want));
        ok = 0;
    } else if (!ok) {
        struct tools_cmd cmd;
        tools_cuda_checkpoint_cmd(&cmd, cuda_bin(in),
                                  x->phase == PH_VERIFY ? TOOLS_CUDA_GET_STATE : TOOLS_CUDA_TOGGLE,
                                  pid, 0);
        free(x->failure);
        x->failure = tools_describe(&cmd, res);
    }
    if (!ok) {
        if (x->waking) {
            fail(x, "wake", x->failure);
            return;
        }
        /* Undo: unlock the one that failed, toggle back those already suspended. */
        x->phase = PH_ROLLBACK;
        run_tool(x, TOOLS_CUDA_UNLOCK, pid, unlock_done);
        return;
    }
    x->i++;
    step(x);
}

static void warm_done(int err, const char *msg, void *arg)
{
    struct suspend *x = arg;
    struct instance *in = x->in;
    in->plan = NULL;
    if (err < 0) {
        fail(x, "wake", msg ? msg : "the warm-up request failed");
        return;
    }
    in->sleep_level = 0;
    const char *reason =
        x->checkpoint ? "restored from a CRIU checkpoint" : "resumed from cuda-checkpoint";
    finish(x, 0, NULL);
    sup__inst_mark_ready(in, reason);
}

static void step(struct suspend *x)
{
    struct instance *in = x->in;
    if (x->phase == PH_ROLLBACK) {
        /* Toggle back every process suspended before the failure (best effort). */
        if (x->i < in->n_susp_toggled) {
            run_tool(x, TOOLS_CUDA_TOGGLE, in->susp_pids[x->i], rollback_done);
            return;
        }
        char *f = xstrdup(x->failure ? x->failure : "error");
        fail(x, "suspend", f);
        free(f);
        return;
    }
    if (x->i < in->n_susp) {
        if (x->phase == PH_TOGGLE)
            in->n_susp_toggled = x->i;
        run_tool(x, x->phase == PH_TOGGLE ? TOOLS_CUDA_TOGGLE : TOOLS_CUDA_GET_STATE,
                 in->susp_pids[x->i], tool_done);
        return;
    }
    if (x->phase == PH_TOGGLE) {
        in->n_susp_toggled = in->n_susp;
        x->phase = PH_VERIFY;
        x->i = 0;
        step(x);
        return;
    }
    if (!x->waking && x->checkpoint) {
        /* The op goes on: CRIU dumps the suspended tree (checkpoint.c). */
        in->suspend = NULL;
        free(x->failure);
        free(x->inv_err);
        gpu_inventory_release(&x->inv);
        free(x);
        sup__ckpt_dump(in);
        return;
    }
    if (!x->waking) {
        in->sleep_level = SUP_SLEEP_SUSPEND;
        char what[96];
        snprintf(what, sizeof what, "suspended with cuda-checkpoint (%zu process%s)", in->n_susp,
                 in->n_susp == 1 ? "" : "es");
        char *reason = sup__sleep_reason(in, what);
        sup__set_state(in, INST_SLEEPING, reason, NULL);
        free(reason);
        finish(x, 0, NULL);
        return;
    }
    struct engine_step warm[1];
    char key[65];
    if (engine_warmup_plan(in->name, warm, 1) == 1)
        in->plan = engine_run_plan_keyed(in->sup->app->loop, sup__addr(in), in->reach_port,
                                         sup__engine_key(in, key) == 0 ? key : NULL, warm, 1,
                                         WARMUP_TIMEOUT_MS, warm_done, x);
    if (!in->plan)
        warm_done(0, NULL, x);
}

/* The processes to suspend are in in->susp_pids (the leader when none was found): go on. */
static void pids_known(struct suspend *x)
{
    struct instance *in = x->in;
    if (!in->n_susp) {
        in->susp_pids = xcalloc(1, sizeof *in->susp_pids);
        in->susp_pids[in->n_susp++] = in->proc.pid;
    }
    if (in->state != INST_READY) { /* stopped meanwhile */
        finish(x, -ECANCELED, "the model stopped");
        return;
    }
    step(x);
}

static void inv_read(uv_work_t *w)
{
    struct suspend *x = w->data;
    struct gpu *g = x->in->sup->app->gpu;
    if (g)
        gpu_read(g, &x->inv, &x->inv_err);
}

/* The instance's GPU-holding processes, from the inventory; its leader when none is known. */
static void inv_done(uv_work_t *w, int status)
{
    struct suspend *x = w->data;
    struct instance *in = x->in;
    x->reading = 0;
    if (x->cancelled) {
        free(x->inv_err);
        gpu_inventory_release(&x->inv);
        free(x);
        return;
    }
    free(in->susp_pids);
    in->susp_pids = NULL;
    in->n_susp = 0;
    for (size_t d = 0; d < x->inv.n; d++)
        for (size_t k = 0; k < x->inv.devs[d].n_procs; k++) {
            int pid = x->inv.devs[d].procs[k].pid;
            int seen = 0;
            for (size_t j = 0; j < in->n_susp; j++)
                seen |= in->susp_pids[j] == pid;
            if (seen || !runner_pid_owned_by(pid, in->proc.pid, in->proc.pgid))
                continue;
            in->susp_pids = xrealloc(in->susp_pids, (in->n_susp + 1) * sizeof *in->susp_pids);
            in->susp_pids[in->n_susp++] = pid;
        }
    pids_known(x);
}

/*
 * On another host: the processes of the engine's group or session that its
 * nvidia-smi lists, found there (one line each). The pod's engines run in
 * their own session (setsid), so group and session both name the tree.
 */
static const char remote_pids_script[] =
    "nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory"
    " --format=csv,noheader,nounits 2>/dev/null |"
    " while IFS=, read -r u p rest; do p=${p//[!0-9]/}; [ -n \"$p\" ] && [ -r /proc/$p/stat ] || "
    "continue;"
    " s=$(cat /proc/$p/stat 2>/dev/null) || continue; set -- ${s##*) };"
    " if [ \"$3\" = \"$1LEADER\" ] || [ \"$4\" = \"$1LEADER\" ]; then echo $p; fi; done; true";

static void remote_pids_done(const struct tools_result *res, void *arg)
{
    struct suspend *x = arg;
    struct instance *in = x->in;
    in->tool = NULL;
    free(in->susp_pids);
    in->susp_pids = NULL;
    in->n_susp = 0;
    if (!tools_result_ok(res))
        log_warn("sup", "'%s': cannot list its GPU processes on '%s' (%s); suspending its leader",
                 in->name, in->runner->host, res->why ? res->why : "the listing failed");
    const char *c = tools_result_ok(res) ? res->out : "";
    const char *end = c + (tools_result_ok(res) ? res->out_len : 0);
    while (c < end) {
        const char *nl = memchr(c, '\n', (size_t)(end - c));
        size_t len = nl ? (size_t)(nl - c) : (size_t)(end - c);
        int pid = 0;
        if (tools_parse_pid(c, len, &pid) == 0) {
            in->susp_pids = xrealloc(in->susp_pids, (in->n_susp + 1) * sizeof *in->susp_pids);
            in->susp_pids[in->n_susp++] = pid;
        }
        c += len + 1;
    }
    pids_known(x);
}

/* Lists the GPU processes of the tree on its own host, over its runner. */
static void remote_pids(struct suspend *x)
{
    struct instance *in = x->in;
    struct tools_cmd cmd = {0};
    char leader[24];
    snprintf(leader, sizeof leader, "%d", in->proc.pgid > 0 ? in->proc.pgid : in->proc.pid);
    /* the leader's number replaces "$1LEADER": a literal, never expanded */
    char *script = xstrdup(remote_pids_script);
    char *text = NULL;
    for (char *at; (at = strstr(script, "$1LEADER"));) {
        *at = '\0';
        text = xstrfmt("%s%s%s", script, leader, at + strlen("$1LEADER"));
        free(script);
        script = text;
    }
    tools_cmd_add(&cmd, "bash");
    tools_cmd_add(&cmd, "-c");
    tools_cmd_add(&cmd, script);
    free(script);
    in->tool = in->runner->ops->exec(in->runner, &cmd, TOOL_TIMEOUT_MS, remote_pids_done, x);
}

static int suspend_start(struct instance *in, sup_op_cb done, void *arg, int checkpoint, char **err)
{
    if (in->state != INST_READY || in->op) {
        *err = xstrfmt("'%s' is %s%s; only a ready model can be suspended", in->name,
                       sup_state_name(in->state), in->op ? " and busy" : "");
        return -EINVAL;
    }
    struct suspend *x = xcalloc(1, sizeof *x);
    x->in = in;
    x->checkpoint = checkpoint;
    in->op = SUP__OP_SLEEP;
    in->op_done = done;
    in->op_arg = arg;
    in->suspend = x;
    sup__tail_follow(&in->tail);
    sup__timers_stop(in); /* no health probes while it changes */
    log_info("sup", "'%s' suspending with cuda-checkpoint", in->name);
    if (!in->runner->pids_here) {
        /* another host's pids mean nothing in this machine's inventory: ask the host */
        remote_pids(x);
        return 0;
    }
    x->work.data = x;
    x->reading = 1;
    if (uv_queue_work(in->sup->app->loop, &x->work, inv_read, inv_done) < 0)
        inv_done(&x->work, 0);
    return 0;
}

static int suspend_chosen(struct instance *in, int level)
{
    return level == SUP_SLEEP_SUSPEND || (level == 0 && in->spec.suspends);
}

static int suspend_can(struct instance *in, int level, char **err)
{
    if (in->state != INST_READY || in->op) {
        *err = xstrfmt("'%s' is %s%s; only a ready model can be suspended", in->name,
                       sup_state_name(in->state), in->op ? " and busy" : "");
        return -EINVAL;
    }
    return 0;
}

static int suspend_sleep(struct instance *in, int level, sup_op_cb done, void *arg, char **err)
{
    return suspend_start(in, done, arg, 0, err);
}

int sup__inst_suspend_for_checkpoint(struct instance *in, sup_op_cb done, void *arg, char **err)
{
    return suspend_start(in, done, arg, 1, err);
}

void sup__resume_after_restore(struct instance *in)
{
    struct suspend *x = xcalloc(1, sizeof *x);
    x->in = in;
    x->waking = 1;
    x->checkpoint = 1;
    in->suspend = x;
    step(x);
}

static int suspend_wake(struct instance *in, sup_op_cb done, void *arg, char **err)
{
    if (in->state != INST_SLEEPING || in->op || in->sleep_level != SUP_SLEEP_SUSPEND) {
        *err = xstrfmt("'%s' is not suspended", in->name);
        return -EINVAL;
    }
    struct suspend *x = xcalloc(1, sizeof *x);
    x->in = in;
    x->waking = 1;
    in->op = SUP__OP_WAKE;
    in->op_done = done;
    in->op_arg = arg;
    in->suspend = x;
    sup__tail_follow(&in->tail);
    log_info("sup", "'%s' resuming from cuda-checkpoint", in->name);
    step(x);
    return 0;
}

static void suspend_cancel(struct instance *in)
{
    struct suspend *x = in->suspend;
    if (!x)
        return;
    if (in->tool)
        in->runner->ops->exec_cancel(in->runner, in->tool);
    in->tool = NULL;
    if (in->plan)
        engine_plan_cancel(in->plan);
    in->plan = NULL;
    if (x->reading) {
        /* The read in the thread pool cannot be stopped: it frees x when it returns. */
        x->cancelled = 1;
        in->suspend = NULL;
        if (x->checkpoint)
            sup__ckpt_drop(in);
        sup_op_cb cb = in->op_done;
        void *arg = in->op_arg;
        in->op = SUP__OP_NONE;
        in->op_done = NULL;
        if (cb)
            cb(arg, -ECANCELED, "cancelled: the model is stopping");
        return;
    }
    finish(x, -ECANCELED, "cancelled: the model is stopping");
}

const struct sup__evict_ops sup__evict_suspend = {
    .name = "cuda_suspend",
    .chosen = suspend_chosen,
    .can = suspend_can,
    .sleep = suspend_sleep,
    .wake = suspend_wake,
    .cancel = suspend_cancel,
};
