#ifndef YARD_RUNNER_SSH_H
#define YARD_RUNNER_SSH_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "runner/tools.h"

/*
 * The transport to a pod (a remote GPU machine): the user's own OpenSSH with
 * one ControlMaster connection per pod, a truthful executor for remote
 * scripts, and the one quoting function every value sent to a remote shell
 * goes through. docs/pods.md says why it is shaped this way.
 *
 * - The pod's ssh command line is the user's ("ssh -p 2222 -i KEY root@h"),
 *   split like a shell splits words; yard's options go right after argv[0].
 * - Each remote script runs as `bash -c 'set -euo pipefail<newline>SCRIPT'`,
 *   the whole of it quoted by ssh_quote, sent as ssh's one command argument.
 * - ssh's exit 255, a timeout, or ssh not running at all is a transport
 *   failure; any other exit is the script's own (a command failure).
 */

/* How long the master connection outlives its last command (ControlPersist). */
#define SSH_CONTROL_PERSIST_S 600
/* ConnectTimeout: how long a first handshake may take. */
#define SSH_CONNECT_TIMEOUT_S 10
/* What the probe prints when the pod's shell runs scripts. */
#define SSH_PROBE_MARKER "__YARD_OK__"

struct ssh_pod {
    char *name;         /* [A-Za-z0-9._-], 1..64 bytes, not starting with '.' */
    char **argv;        /* the user's command line, split (config_argv_free) */
    char *control_path; /* the ControlMaster socket */
    unsigned control_persist_s;
};

/*
 * Fills pod from its name, the user's ssh command line and the daemon's
 * state dir. The control socket is STATE_DIR/ssh/NAME.sock (the ssh/ dir is
 * created, mode 0700), or /tmp/yard-ssh-HASH.sock when that path would not
 * fit in a unix socket address (ssh binds PATH.XXXXXXXXXXXXXXXX first).
 * Returns 0, or -EINVAL / -errno with a message in err (a bad name, an
 * unterminated quote, no destination, the dir cannot be made). pod holds
 * nothing on failure; on success free it with ssh_pod_release.
 */
int ssh_pod_init(struct ssh_pod *pod, const char *name, const char *ssh_cmd, const char *state_dir,
                 char *err, size_t errlen);
void ssh_pod_release(struct ssh_pod *pod);

/*
 * s as one POSIX shell word: in single quotes, each ' written '\''. The
 * empty string gives ''. Nothing in the result is expanded by sh, bash,
 * dash or zsh. Returns a new string the caller frees; never NULL.
 */
char *ssh_quote(const char *s);

/*
 * What is sent to the pod for script: `bash -c 'set -euo pipefail\nSCRIPT'`
 * (quoted with ssh_quote). Returns a new string the caller frees; never NULL.
 */
char *ssh_remote_command(const char *script);

/*
 * The full ssh invocation for script: argv[0] of the user's line, yard's
 * options (-o BatchMode=yes -o ConnectTimeout=10 -o ControlMaster=auto
 * -o ControlPersist=N -S CONTROL_PATH), the rest of the user's line, then
 * ssh_remote_command(script) as one argument. Returns 0, or -ENAMETOOLONG
 * when it does not fit a struct tools_cmd (about 15 KiB of script).
 */
int ssh_build_cmd(const struct ssh_pod *pod, const char *script, struct tools_cmd *c);

/*
 * `ssh -S CONTROL_PATH -O OP <the user's args>`: OP is "check" (is the
 * master running: exit 0) or "exit" (stop it). Returns 0, -EINVAL (another
 * op) or -ENAMETOOLONG.
 */
int ssh_control_cmd(const struct ssh_pod *pod, const char *op, struct tools_cmd *c);

/*
 * `ssh -S CONTROL_PATH -O forward|cancel -L 127.0.0.1:LOCAL:127.0.0.1:REMOTE
 * <the user's args>`: asks the running master to add (or drop) a local
 * forward, so that 127.0.0.1:LOCAL here reaches 127.0.0.1:REMOTE on the pod
 * with no new handshake. Returns 0, -EINVAL (a port out of range) or
 * -ENAMETOOLONG.
 */
int ssh_forward_cmd(const struct ssh_pod *pod, int cancel, int local_port, int remote_port,
                    struct tools_cmd *c);
/* As ssh_forward_cmd, to host:REMOTE as the pod sees it (a Slurm node from its login node). */
int ssh_forward_to_cmd(const struct ssh_pod *pod, int cancel, int local_port, const char *host,
                       int remote_port, struct tools_cmd *c);

/*
 * The invocation as one line for the debug log, each word shell-quoted when
 * it needs it, with key paths redacted: the argument of -i (also -iKEY) and
 * of -o IdentityFile= / CertificateFile= becomes <redacted>. Returns a new
 * string the caller frees; never NULL.
 */
char *ssh_cmd_text_redacted(const struct tools_cmd *c);

/* ---- running a script ---- */

enum ssh_status {
    SSH_OK = 0,           /* the script ran and exited 0 */
    SSH_COMMAND_FAILED,   /* the script ran and failed: exit_code, errout */
    SSH_TRANSPORT_FAILED, /* the pod was not reached, or the connection broke: err */
};

struct ssh_result {
    enum ssh_status status;
    /*
     * SSH_TRANSPORT_FAILED only: -ETIMEDOUT (killed at the timeout: the
     * script may have run in part), -ENOENT/-EACCES (ssh itself could not be
     * started), -ECONNREFUSED, -EPERM (authentication or host key refused),
     * -ECONNABORTED (any other exit 255, or ssh killed by a signal). 0 otherwise.
     */
    int err;
    int exit_code;   /* the script's exit status; -1 on a transport failure */
    const char *out; /* stdout, NUL-terminated, at most TOOLS_OUTPUT_MAX bytes */
    size_t out_len;
    const char *errout; /* stderr (ssh's own messages too), likewise */
    size_t err_len;
    int truncated;
    uint64_t elapsed_ms;
};

/*
 * Reads what tools_run reported for an ssh invocation. exit 255 is a
 * transport failure: a script that itself exits 255 is reported as one too
 * (yard's scripts never do). res points into tr's output.
 */
void ssh_result_from_tools(const struct tools_result *tr, struct ssh_result *res);

/*
 * One line for a person, lowercase, naming the pod:
 *   "cannot reach pod 'gpu1': ssh: connect to host h port 22: Connection refused"
 *   "pod 'gpu1' did not answer within 5000 ms"
 *   "cannot run ssh for pod 'gpu1': no such file or directory"
 *   "command on pod 'gpu1' exited 3: boom (last stderr line)"
 * Returns a new string the caller frees; never NULL.
 */
char *ssh_describe(const char *pod_name, const struct ssh_result *res);

/* The result is valid only during the call. */
typedef void (*ssh_cb)(const struct ssh_result *res, void *arg);
struct ssh_exec;

/*
 * Runs script on the pod (ssh_build_cmd), stdin /dev/null, killing ssh at
 * timeout_ms (0: none; the remote script is not killed with it). On 0, cb
 * runs exactly once unless the run is cancelled, and *exec (when not NULL)
 * is the run, valid until cb. Returns 0 or -ENAMETOOLONG (cb never runs).
 */
int ssh_exec(uv_loop_t *loop, const struct ssh_pod *pod, const char *script, uint64_t timeout_ms,
             ssh_cb cb, void *arg, struct ssh_exec **exec);
/* Kills ssh if it still runs; cb will not run. The run frees itself. */
void ssh_exec_cancel(struct ssh_exec *e);

/* Runs `printf __YARD_OK__` on the pod: see ssh_probe_verdict. */
int ssh_probe(uv_loop_t *loop, const struct ssh_pod *pod, uint64_t timeout_ms, ssh_cb cb, void *arg,
              struct ssh_exec **exec);
/*
 * What a probe's result says: 0 (the pod runs scripts), -EHOSTUNREACH (a
 * transport failure: the pod is unreachable) or -EPROTO (ssh got there but
 * the script did not print the marker: the remote shell or bash is broken).
 */
int ssh_probe_verdict(const struct ssh_result *res);

#endif
