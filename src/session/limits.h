#ifndef YARD_SESSION_LIMITS_H
#define YARD_SESSION_LIMITS_H

#include <stddef.h>

#include "config/config.h"

/*
 * Private to session/: the limits of sessions.limits (memory, pids, cpu)
 * on each session's cgroups (docs/sessions.md, "Limits"). A limit goes
 * into the session's cgroup2 directory when the controller is there (it is
 * enabled on the way down when it can be), else into a cgroup of the
 * controller's v1 hierarchy made for the session beside the daemon's own,
 * which the session's processes then enter too.
 */

struct session__limits;

/*
 * The way to each limit cfg sets, for sessions whose cgroup2 directories
 * are made in v2dir; tag names this daemon's v1 directories. Returns a new
 * set (NULL too when cfg sets no limit, with err ""), or NULL with a
 * one-line message in err when a limit cannot be enforced here.
 */
struct session__limits *session__limits_new(const struct config_sessions *cfg, const char *v2dir,
                                            const char *tag, char *err, size_t errlen);
void session__limits_free(struct session__limits *l);

/*
 * Writes the limits for session id: in v2cg (made already) and in the v1
 * directories, made here. *dirs receives the v1 directories every process
 * of the session must enter (a new array of new strings, NULL-terminated;
 * free with session__limits_dirs_free). 0, or a negative errno with a
 * message.
 */
int session__limits_apply(struct session__limits *l, const char *id, const char *v2cg, char ***dirs,
                          char *err, size_t errlen);
void session__limits_dirs_free(char **dirs);
/* Removes the v1 directories of session id (when empty). */
void session__limits_remove(struct session__limits *l, const char *id);

#endif
