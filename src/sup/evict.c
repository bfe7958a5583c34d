/*
 * Eviction: which mechanism puts an instance to sleep and wakes it. Three
 * implement struct sup__evict_ops: the engine's own sleep levels (sleep.c),
 * cuda_suspend (suspend.c) and checkpoint (checkpoint.c). A sleep takes the
 * mechanism of the level asked for, or of the model's eviction policy; a wake
 * takes the one the instance sleeps by (its state says which, also after an
 * adoption); a cancel goes to the one whose operation runs.
 */
#include <stddef.h>

#include "sup/sup_int.h"

static const struct sup__evict_ops *const evict_table[] = {
    &sup__evict_checkpoint,
    &sup__evict_suspend,
    &sup__evict_engine,
};

const struct sup__evict_ops *sup__evict_for_sleep(struct instance *in, int level)
{
    for (size_t i = 0; i < sizeof evict_table / sizeof evict_table[0]; i++)
        if (evict_table[i]->chosen(in, level))
            return evict_table[i];
    return &sup__evict_engine;
}

/* The mechanism in sleeps by. */
static const struct sup__evict_ops *evict_for_wake(struct instance *in)
{
    if (in->state == INST_CHECKPOINTED)
        return &sup__evict_checkpoint;
    if (in->state == INST_SLEEPING && in->sleep_level == SUP_SLEEP_SUSPEND)
        return &sup__evict_suspend;
    return &sup__evict_engine;
}

int sup__inst_sleep(struct instance *in, int level, sup_op_cb done, void *arg, char **err)
{
    const struct sup__evict_ops *ops = sup__evict_for_sleep(in, level);
    int rc = ops->sleep(in, level, done, arg, err);
    if (rc == 0)
        in->evict = ops;
    return rc;
}

int sup__inst_sleep_check(struct instance *in, int level, char **err)
{
    return sup__evict_for_sleep(in, level)->can(in, level, err);
}

int sup__inst_wake(struct instance *in, sup_op_cb done, void *arg, char **err)
{
    const struct sup__evict_ops *ops = evict_for_wake(in);
    int rc = ops->wake(in, done, arg, err);
    if (rc == 0)
        in->evict = ops;
    return rc;
}

void sup__inst_cancel_op(struct instance *in)
{
    if (!in->op)
        return;
    /* A restore resumed after an adoption ran without a sleep or wake here: its state says. */
    const struct sup__evict_ops *ops = in->evict ? in->evict : evict_for_wake(in);
    ops->cancel(in);
}
