/*
 * An instance's state and its record (sup_int.h): every transition goes
 * through set_state, which writes it to the store before the log and the
 * observers hear of it; a write the store refuses leaves the instance
 * unrecorded and is retried (sup__record_now) until it is taken. instance.c
 * decides the transitions.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "base/utf8.h"
#include "store/store.h"
#include "sup/sup_int.h"

static const char *const state_names[] = {
    [INST_STOPPED] = "stopped",
    [INST_STARTING] = "starting",
    [INST_READY] = "ready",
    [INST_SLEEPING] = "sleeping",
    [INST_CHECKPOINTED] = "checkpointed",
    [INST_STOPPING] = "stopping",
    [INST_FAILED] = "failed",
    [INST_UNKNOWN] = "unknown",
};

const char *sup_state_name(enum inst_state st)
{
    return state_names[st];
}

struct store_instance sup__row_of(struct instance *in, enum inst_state to,
                                  const struct runner_proc *p, const char *reason)
{
    return (struct store_instance){
        .model = in->name,
        .host = (char *)in->runner->host,
        .replica = in->replica,
        .pid = p ? p->pid : 0,
        .pgid = p ? p->pgid : 0,
        .start_time = p ? p->start_time : 0,
        .port = in->port,
        .gpus = in->gpus ? in->gpus : "",
        .state = (char *)state_names[to],
        .reason = (char *)(reason ? reason : ""),
        .cmd = in->cmdline ? in->cmdline : "",
        .restarts = in->restarts,
        .exit_code = (int)in->exit_code,
        .created_ms = in->started_wall_ms,
        .ready_ms = in->ready_wall_ms,
    };
}

/* The process a row in state `to` names: none once stopped. */
static const struct runner_proc *proc_for(struct instance *in, enum inst_state to)
{
    return to == INST_STOPPED ? NULL : &in->proc;
}

/* The store took the instance's current state. */
static void recorded(struct instance *in)
{
    in->recorded = in->state;
    in->unrecorded = 0;
}

/*
 * Memory first, then the store (unless the caller wrote it already), then the
 * log and observers. A write that fails leaves the instance unrecorded: what
 * happened happened (a process exited, a stop ended), and sup retries the
 * write until the store takes it.
 */
static void set_state(struct instance *in, enum inst_state to, const char *reason,
                      const char *detail, int written)
{
    enum inst_state from = in->state;
    in->state = to;
    sup__tail_follow(&in->tail);
    /* Reasons carry engine log lines and ssh output: made valid UTF-8 before the store, the
     * notes and every JSON answer see them. */
    char *r = utf8_xdup(reason ? reason : "");
    char *d = detail ? utf8_xdup(detail) : xstrdup(r);
    free(in->reason);
    free(in->detail);
    in->reason = r;
    in->detail = d;

    if (written) {
        recorded(in);
    } else {
        struct store_instance row = sup__row_of(in, to, proc_for(in, to), in->detail);
        int rc = store_record_transition(in->sup->app->store, &row, state_names[from]);
        if (rc < 0) {
            log_error("sup",
                      "cannot record '%s' %s -> %s: %s; retrying until the state "
                      "database takes it",
                      in->name, state_names[from], state_names[to], strerror(-rc));
            in->unrecorded = 1;
            sup__record_later(in->sup);
        } else {
            recorded(in);
        }
    }
    if (to == INST_FAILED)
        log_warn("sup", "'%s' %s -> %s: %s", in->label, state_names[from], state_names[to],
                 in->reason);
    else
        log_info("sup", "'%s' %s -> %s%s%s", in->label, state_names[from], state_names[to],
                 *in->reason ? ": " : "", in->reason);
    struct sup_note n = {.kind = SUP_NOTE_STATE,
                         .model = in->name,
                         .replica = in->replica,
                         .state = to,
                         .from = from,
                         .reason = in->reason,
                         .machine_fault = to == INST_FAILED && in->fatal && in->fatal_machine};
    sup__notify(in->sup, &n);
}

char *sup__sleep_reason(struct instance *in, const char *what)
{
    return in->sleep_why ? xstrfmt("%s: %s", in->sleep_why, what) : xstrdup(what);
}

/* The one place a transition happens: store first, then the log and observers. */
void sup__set_state(struct instance *in, enum inst_state to, const char *reason, const char *detail)
{
    set_state(in, to, reason, detail, 0);
}

int sup__try_state(struct instance *in, enum inst_state to, const char *reason,
                   const struct runner_proc *p)
{
    char *r = utf8_xdup(reason ? reason : "");
    struct store_instance row = sup__row_of(in, to, p, r);
    int rc = store_record_transition(in->sup->app->store, &row, state_names[in->state]);
    if (rc == 0)
        set_state(in, to, r, NULL, 1);
    free(r);
    return rc;
}

int sup__record_now(struct instance *in)
{
    if (!in->unrecorded)
        return 0;
    struct store_instance row = sup__row_of(in, in->state, proc_for(in, in->state), in->detail);
    int rc = store_record_transition(in->sup->app->store, &row, state_names[in->recorded]);
    if (rc == 0) {
        log_info("sup", "recorded '%s' %s late: the state database takes writes again", in->label,
                 state_names[in->state]);
        recorded(in);
    }
    return rc;
}

enum inst_state sup__state_of_name(const char *name)
{
    for (size_t i = 0; i < sizeof state_names / sizeof *state_names; i++)
        if (state_names[i] && strcmp(state_names[i], name) == 0)
            return (enum inst_state)i;
    return INST_STOPPED;
}

const char *sup__store_advice(int rc)
{
    switch (-rc) {
    case EBUSY:
        return "another process holds it locked: end that process (fuser names it), then try "
               "again";
    case ENOSPC:
        return "free space on its disk, then try again";
    case EROFS:
    case EACCES:
    case EPERM:
        return "make it writable by the daemon's user, then try again";
    default:
        return "it may be damaged: see the daemon's log, then stop the daemon and move the file "
               "and its -wal aside";
    }
}

char *sup__unwritable_msg(struct sup *s, int rc)
{
    return xstrfmt("the state database '%s/yard.db' cannot be written (%s), and yard starts "
                   "nothing it cannot record; %s",
                   s->app->state_dir, strerror(-rc), sup__store_advice(rc));
}

int sup__record_sleep_intent(struct instance *in, int level)
{
    char reason[64];
    snprintf(reason, sizeof reason, SUP__SLEEP_INTENT "%d", level);
    struct store_instance row = sup__row_of(in, in->state, &in->proc, reason);
    int rc = store_put_instance(in->sup->app->store, &row);
    if (rc < 0)
        log_error("sup", "cannot record that '%s' goes to sleep: %s", in->label, strerror(-rc));
    return rc;
}
