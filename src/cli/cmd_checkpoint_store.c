#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cli/cli.h"
#include "cloud/ckstore.h"
#include "cloud/curl_dl.h"

/*
 * The checkpoint store's mover: the daemon runs it as a child of its own
 * after a dump (upload) and before a restore whose images are missing
 * (download), so no transfer ever blocks the daemon's loop (docs/checkpoint.md).
 * Its exit status is an enum ckstore_outcome; stdout a line for the log,
 * stderr the one line of a failure.
 */

static const char usage[] =
    "usage: yard checkpoint-store upload|download --url URL --bucket B --prefix P --model M\n"
    "                             --dir DIR [--generation G] [--keep N] [--part-size BYTES]\n"
    "                             [--skip NAME] [--launch SHA256] [--parent PID]\n"
    "\n"
    "moves a CRIU images directory to or from the checkpoint store; the daemon runs it\n"
    "(tools.checkpoint_store), with the credentials of its environment\n";

int cmd_checkpoint_store(int argc, char **argv, struct app *app)
{
    (void)app;
    const char *verb = NULL, *url = NULL, *bucket = NULL, *prefix = NULL, *model = NULL;
    const char *dir = NULL, *gen = NULL, *skip = NULL, *launch = NULL;
    long keep = 2, parent = 0;
    long long part = CKSTORE_PART_SIZE_DEFAULT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "--url")          ? &url
                           : !strcmp(a, "--bucket")     ? &bucket
                           : !strcmp(a, "--prefix")     ? &prefix
                           : !strcmp(a, "--model")      ? &model
                           : !strcmp(a, "--dir")        ? &dir
                           : !strcmp(a, "--generation") ? &gen
                           : !strcmp(a, "--skip")       ? &skip
                           : !strcmp(a, "--launch")     ? &launch
                                                        : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        }
        if (dst || !strcmp(a, "--keep") || !strcmp(a, "--part-size") || !strcmp(a, "--parent")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "yard checkpoint-store: %s needs a value\n%s", a, usage);
                return 64; /* EX_USAGE */
            }
            const char *v = argv[++i];
            if (dst) {
                *dst = v;
                continue;
            }
            char *end = NULL;
            long long n = strtoll(v, &end, 10);
            if (!end || *end || n < 1 || (!strcmp(a, "--part-size") && n < CKSTORE_PART_SIZE_MIN)) {
                fprintf(stderr, "yard checkpoint-store: %s '%s' is not a valid number\n", a, v);
                return 64; /* EX_USAGE */
            }
            if (!strcmp(a, "--keep"))
                keep = (long)n;
            else if (!strcmp(a, "--parent"))
                parent = (long)n;
            else
                part = n;
            continue;
        }
        if (!verb && a[0] != '-') {
            verb = a;
            continue;
        }
        fprintf(stderr, "yard checkpoint-store: unexpected argument '%s'\n%s", a, usage);
        return 64; /* EX_USAGE */
    }
    int up = verb && !strcmp(verb, "upload");
    if (!verb || (!up && strcmp(verb, "download") != 0) || !url || !bucket || !prefix || !model ||
        !dir || (up && !gen)) {
        fprintf(stderr, "yard checkpoint-store: say upload or download with --url, --bucket, "
                        "--prefix, --model and --dir (and --generation to upload)\n");
        return 64; /* EX_USAGE */
    }
    if (up && !ckstore_valid_generation(gen)) {
        fprintf(stderr, "yard checkpoint-store: '%s' is not a generation's name\n", gen);
        return 64; /* EX_USAGE */
    }
    if (launch && (up || strlen(launch) != 64 || strspn(launch, "0123456789abcdef") != 64)) {
        fprintf(stderr, "yard checkpoint-store: --launch takes the 64 hex digits of a launch, "
                        "and only to download\n");
        return 64; /* EX_USAGE */
    }
    if (parent) {
        /*
         * The daemon's child: it ends with the daemon, however that ends (kill -9
         * included), so the next daemon's resume of the same generation runs alone.
         */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if ((long)getppid() != parent) {
            fprintf(stderr, "checkpoint store: %s of '%s' not run: the daemon (pid %ld) is gone\n",
                    verb, model, parent);
            return CKSTORE_TRANSIENT;
        }
    }
    struct ckstore s = {.prefix = prefix, .model = model, .keep = (int)keep, .part_size = part};
    char *err = NULL, *note = NULL;
    if (s3_conf_from_env(&s.s3, url, bucket, &err) < 0) {
        fprintf(stderr, "checkpoint store: %s of '%s' impossible: %s\n", verb, model, err);
        free(err);
        return CKSTORE_REFUSED;
    }
    if (cloud_curl_load(&err) < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "checkpoint store: %s of '%s' impossible: %s\n", verb, model,
                err ? err : "libcurl cannot start");
        free(err);
        s3_conf_release(&s.s3);
        return CKSTORE_REFUSED;
    }
    int out = up ? ckstore_upload(&s, gen, dir, skip, &note, &err)
                 : ckstore_download(&s, dir, launch, &note, &err);
    if (note)
        printf("%s\n", note);
    if (err)
        fprintf(stderr, "%s\n", err);
    free(note);
    free(err);
    s3_conf_release(&s.s3);
    curl_global_cleanup();
    return out;
}
