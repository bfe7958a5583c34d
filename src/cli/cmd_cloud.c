/*
 * `yard cloud`: what a cloud's marketplace would rent, ranked (offers); a
 * machine rented now (rent), the machines rented (ls) and one destroyed
 * (release). docs/cloud.md.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/units.h"
#include "base/utf8.h"
#include "cli/cli.h"

#define CLOUD_GPUS_MAX 64

static const char usage[] =
    "usage: yard cloud offers CLOUD [--gpus N] [--vram SIZE] [--model NAME] [--json]\n"
    "       yard cloud rent CLOUD [--gpus N] [--vram SIZE] [--model NAME]\n"
    "       yard cloud ls [--json]\n"
    "       yard cloud release NAME\n"
    "       yard cloud bad [--add MACHINE | --forget MACHINE] [--json]\n"
    "\n"
    "offers: asks the cloud's marketplace (config: clouds: {CLOUD: ...}) for the\n"
    "machines it would rent and lists them ranked, each with why it ranks there,\n"
    "then the offers it leaves out with why; the search is the cloud's strictness,\n"
    "max_price and filters with the need: --gpus (default 1) and --vram (memory per\n"
    "GPU, as '24GiB'), or a model's gpus and vram with --model\n"
    "rent: rents the best ranked offer for the need now (the next one when a\n"
    "machine fails to start, up to the cloud's max_tries) and waits until ssh\n"
    "answers there; the machine is a host of kind rented named CLOUD-N\n"
    "ls: the machines yard rents: offer, machine, $/h, state, age, spent so far\n"
    "release: destroys a rented machine (it stops billing)\n"
    "bad: the bad-host registry, machines that failed a start and that every\n"
    "search leaves out until their entry expires (the cloud's bad_host_ttl);\n"
    "--add puts a machine id there for good, --forget takes one out\n";

/* ---- --json: the stable form --------------------------------------- */

static json_t *number_field(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_deep_copy(v) : json_null();
}

static json_t *bool_field(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_incref(v) : json_null();
}

/* Our history of the offer's machine: {ready, failed, mean_ready_s, last_failure}. */
static json_t *history_stable(const json_t *h)
{
    const json_t *last = json_object_get(h, "last_failure");
    json_t *l = json_is_object(last)
                    ? json_pack("{s:o, s:o}", "reason", cli_json_field(last, "reason", JSON_STRING),
                                "at_ms", cli_json_field(last, "at_ms", JSON_INTEGER))
                    : json_null();
    json_t *ready = json_object_get(h, "ready"), *failed = json_object_get(h, "failed");
    return json_pack(
        "{s:I, s:I, s:o, s:o}", "ready", json_is_integer(ready) ? json_integer_value(ready) : 0,
        "failed", json_is_integer(failed) ? json_integer_value(failed) : 0, "mean_ready_s",
        cli_json_field(h, "mean_ready_s", JSON_INTEGER), "last_failure", l ? l : json_null());
}

/* One offer, ranked (rank > 0) or excluded, with exactly the documented keys. */
static json_t *offer_stable(const json_t *e, int ranked)
{
    json_t *o = json_object();
    if (ranked)
        json_object_set_new(o, "rank", cli_json_field(e, "rank", JSON_INTEGER));
    json_object_set_new(o, "id", cli_json_field(e, "id", JSON_INTEGER));
    json_object_set_new(o, "machine_id", cli_json_field(e, "machine_id", JSON_INTEGER));
    json_object_set_new(o, "host_id", cli_json_field(e, "host_id", JSON_INTEGER));
    json_object_set_new(o, "gpu_name", cli_json_field(e, "gpu_name", JSON_STRING));
    json_object_set_new(o, "num_gpus", cli_json_field(e, "num_gpus", JSON_INTEGER));
    json_object_set_new(o, "gpu_ram_mib", number_field(e, "gpu_ram_mib"));
    json_object_set_new(o, "dph_total", number_field(e, "dph_total"));
    json_object_set_new(o, "reliability", number_field(e, "reliability"));
    json_object_set_new(o, "inet_down", number_field(e, "inet_down"));
    json_object_set_new(o, "verified", bool_field(e, "verified"));
    json_object_set_new(o, "datacenter", bool_field(e, "datacenter"));
    json_object_set_new(o, "direct_port_count",
                        cli_json_field(e, "direct_port_count", JSON_INTEGER));
    json_object_set_new(o, "geolocation", cli_json_field(e, "geolocation", JSON_STRING));
    json_object_set_new(o, "score", number_field(e, "score"));
    json_object_set_new(o, "reason", cli_json_field(e, "reason", JSON_STRING));
    json_object_set_new(o, "history", history_stable(json_object_get(e, "history")));
    return o;
}

static json_t *list_stable(const json_t *list, int ranked)
{
    json_t *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        json_array_append_new(out, offer_stable(e, ranked));
    }
    return out;
}

static json_t *offers_stable(const json_t *r)
{
    json_t *need = json_object_get(r, "need");
    json_t *o = json_object();
    json_object_set_new(o, "cloud", cli_json_field(r, "cloud", JSON_STRING));
    json_object_set_new(o, "strictness", cli_json_field(r, "strictness", JSON_STRING));
    json_object_set_new(o, "need",
                        json_pack("{s:o, s:o}", "gpus", cli_json_field(need, "gpus", JSON_INTEGER),
                                  "vram", cli_json_field(need, "vram", JSON_INTEGER)));
    json_object_set_new(o, "query", cli_json_field(r, "query", JSON_OBJECT));
    json_object_set_new(o, "offers", list_stable(json_object_get(r, "offers"), 1));
    json_object_set_new(o, "excluded", list_stable(json_object_get(r, "excluded"), 0));
    return o;
}

/* ---- the table ------------------------------------------------------ */

enum {
    COL_RANK,
    COL_OFFER,
    COL_MACHINE,
    COL_GPUS,
    COL_PRICE,
    COL_REL,
    COL_NET,
    COL_WHERE,
    COL_WHY,
    COL_COUNT
};

static const char *const headers[COL_COUNT] = {"RANK",    "OFFER", "MACHINE",  "GPUS", "$/H",
                                               "RELIAB.", "MB/S",  "LOCATION", "WHY"};

static char *int_text(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? xstrfmt("%lld", (long long)json_integer_value(v)) : xstrdup("-");
}

/* A number with digits after the point; "-" when absent. */
static char *num_text(const json_t *o, const char *key, int digits)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? xstrfmt("%.*f", digits, json_number_value(v)) : xstrdup("-");
}

static char *str_text(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return cli_one_line(s && *s ? s : "-");
}

/* "1x RTX 4090 24.0GiB" */
static char *gpus_text(const json_t *o)
{
    json_t *n = json_object_get(o, "num_gpus"), *ram = json_object_get(o, "gpu_ram_mib");
    const char *name = json_string_value(json_object_get(o, "gpu_name"));
    char mem[32] = "";
    if (json_is_number(ram) && json_number_value(ram) > 0)
        units_fmt_size((uint64_t)(json_number_value(ram) * 1048576.0), mem, sizeof mem);
    char *s = xstrfmt("%lldx %s%s%s", json_is_integer(n) ? (long long)json_integer_value(n) : 0,
                      name ? name : "?", *mem ? " " : "", mem);
    char *cell = cli_one_line(s);
    free(s);
    return cell;
}

/* A rental's GPUs in an offer's shape, for gpus_text. New. */
static json_t *json_object_pack_gpus(const json_t *r)
{
    return json_pack("{s:O?, s:O?, s:O?}", "num_gpus", json_object_get(r, "num_gpus"), "gpu_name",
                     json_object_get(r, "gpu_name"), "gpu_ram_mib",
                     json_object_get(r, "gpu_ram_mib"));
}

/* The first line: what was searched for. */
static void print_head(const json_t *r)
{
    const json_t *need = json_object_get(r, "need");
    const char *cloud = json_string_value(json_object_get(r, "cloud"));
    const char *strict = json_string_value(json_object_get(r, "strictness"));
    json_int_t gpus = json_integer_value(json_object_get(need, "gpus"));
    json_t *vram = json_object_get(need, "vram");
    char mem[32] = "any memory";
    if (json_is_integer(vram) && json_integer_value(vram) > 0) {
        char tmp[32];
        snprintf(mem, sizeof mem, "%s each",
                 units_fmt_size((uint64_t)json_integer_value(vram), tmp, sizeof tmp));
    }
    char *c = cli_one_line(cloud ? cloud : "?");
    size_t n = json_array_size(json_object_get(r, "offers"));
    size_t x = json_array_size(json_object_get(r, "excluded"));
    printf("%s (strictness %s): %zu offer%s for %lld GPU%s, %s; %zu excluded\n", c,
           strict ? strict : "?", n, n == 1 ? "" : "s", (long long)gpus, gpus == 1 ? "" : "s", mem,
           x);
    free(c);
}

static void print_offers(const json_t *r)
{
    print_head(r);
    const json_t *offers = json_object_get(r, "offers");
    size_t n = json_array_size(offers);
    if (n) {
        char **cells = xcalloc((n + 1) * COL_COUNT, sizeof *cells);
        for (int k = 0; k < COL_COUNT; k++)
            cells[k] = xstrdup(headers[k]);
        for (size_t i = 0; i < n; i++) {
            const json_t *o = json_array_get(offers, i);
            char **row = &cells[(i + 1) * COL_COUNT];
            row[COL_RANK] = int_text(o, "rank");
            row[COL_OFFER] = int_text(o, "id");
            row[COL_MACHINE] = int_text(o, "machine_id");
            row[COL_GPUS] = gpus_text(o);
            row[COL_PRICE] = num_text(o, "dph_total", 3);
            row[COL_REL] = num_text(o, "reliability", 3);
            row[COL_NET] = num_text(o, "inet_down", 0);
            row[COL_WHERE] = str_text(o, "geolocation");
            row[COL_WHY] = str_text(o, "reason");
        }
        cli_table_print(cells, n + 1, COL_COUNT, stdout, NULL, NULL);
    } else {
        printf("no offer passes; loosen the cloud's strictness, max_price or filters, or ask "
               "for less\n");
    }
    const json_t *ex = json_object_get(r, "excluded");
    if (json_array_size(ex))
        printf("excluded:\n");
    size_t i;
    json_t *o;
    json_array_foreach(ex, i, o)
    {
        char *id = int_text(o, "id"), *machine = int_text(o, "machine_id"),
             *why = str_text(o, "reason");
        printf("  offer %s (machine %s): %s\n", id, machine, why);
        free(id);
        free(machine);
        free(why);
    }
}

/* ---- rent, ls, release ---------------------------------------------- */

/*
 * Sends cmd (cloud_offers, cloud_rent) for cloud with what the instance needs
 * (gpus, vram, model; each left out when 0 or NULL): 0 with the daemon's
 * answer in *res, which the caller releases, or cli_request's code.
 */
static int cloud_ask(struct app *app, const char *cmd, const char *cloud, long gpus, uint64_t vram,
                     const char *model, json_t **res)
{
    json_t *req = json_pack("{s:s, s:o}", "cmd", cmd, "cloud", utf8_json_xstring(cloud));
    if (gpus > 0)
        json_object_set_new(req, "gpus", json_integer(gpus));
    if (vram)
        json_object_set_new(req, "vram", json_integer((json_int_t)vram));
    if (model)
        json_object_set_new(req, "model", utf8_json_xstring(model));
    *res = NULL;
    return cli_request(app, req, NULL, NULL, res);
}

static int cloud_rent(struct app *app, const char *cloud, long gpus, uint64_t vram,
                      const char *model)
{
    json_t *res;
    int rc = cloud_ask(app, "cloud_rent", cloud, gpus, vram, model, &res);
    if (rc)
        return rc;
    const char *name = json_string_value(json_object_get(res, "name"));
    char *n = cli_one_line(name ? name : "?");
    if (app->json)
        printf("{\"name\":\"%s\"}\n", n);
    else
        printf("rented %s; see 'yard cloud ls', and 'yard cloud release %s' to destroy it\n", n, n);
    free(n);
    json_decref(res);
    return 0;
}

static json_t *rental_stable(const json_t *r)
{
    json_t *o = json_object();
    static const struct {
        const char *key;
        json_type type;
    } keys[] = {
        {"name", JSON_STRING},      {"cloud", JSON_STRING},        {"contract", JSON_INTEGER},
        {"offer", JSON_INTEGER},    {"machine_id", JSON_INTEGER},  {"gpu_name", JSON_STRING},
        {"num_gpus", JSON_INTEGER}, {"gpu_ram_mib", JSON_INTEGER}, {"dph", JSON_REAL},
        {"state", JSON_STRING},     {"status", JSON_STRING},       {"status_msg", JSON_STRING},
        {"label", JSON_STRING},     {"created_ms", JSON_INTEGER},  {"age_s", JSON_INTEGER},
        {"spent", JSON_REAL},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        json_object_set_new(o, keys[i].key,
                            keys[i].type == JSON_REAL
                                ? number_field(r, keys[i].key)
                                : cli_json_field(r, keys[i].key, keys[i].type));
    return o;
}

/* "1h05m", "3m", "12s" */
static char *age_text(json_int_t s)
{
    if (s >= 3600)
        return xstrfmt("%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    if (s >= 60)
        return xstrfmt("%lldm", (long long)(s / 60));
    return xstrfmt("%llds", (long long)(s < 0 ? 0 : s));
}

static void print_rentals(const json_t *rows)
{
    size_t n = json_array_size(rows);
    if (!n) {
        printf("no rented machines\n");
        return;
    }
    enum { R_NAME, R_OFFER, R_MACHINE, R_INST, R_GPUS, R_PRICE, R_STATE, R_AGE, R_SPENT, R_N };
    static const char *const head[R_N] = {"NAME", "OFFER", "MACHINE", "INSTANCE", "GPUS",
                                          "$/H",  "STATE", "AGE",     "SPENT"};
    char **cells = xcalloc((n + 1) * R_N, sizeof *cells);
    for (int k = 0; k < R_N; k++)
        cells[k] = xstrdup(head[k]);
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(rows, i);
        char **row = &cells[(i + 1) * R_N];
        row[R_NAME] = str_text(r, "name");
        row[R_OFFER] = int_text(r, "offer");
        row[R_MACHINE] = int_text(r, "machine_id");
        json_t *c = json_object_get(r, "contract");
        row[R_INST] = json_integer_value(c) > 0 ? int_text(r, "contract") : xstrdup("-");
        json_t *g = json_object_pack_gpus(r);
        row[R_GPUS] = gpus_text(g);
        json_decref(g);
        row[R_PRICE] = num_text(r, "dph", 3);
        const char *st = json_string_value(json_object_get(r, "state"));
        const char *status = json_string_value(json_object_get(r, "status"));
        char *state = status && st && strcmp(st, "ready") != 0 ? xstrfmt("%s (%s)", st, status)
                                                               : xstrdup(st ? st : "-");
        row[R_STATE] = cli_one_line(state);
        free(state);
        row[R_AGE] = age_text(json_integer_value(json_object_get(r, "age_s")));
        json_t *spent = json_object_get(r, "spent");
        row[R_SPENT] =
            json_is_number(spent) ? xstrfmt("$%.2f", json_number_value(spent)) : xstrdup("-");
    }
    cli_table_print(cells, n + 1, R_N, stdout, NULL, NULL);
}

static int cloud_release(struct app *app, const char *name)
{
    json_t *req = json_pack("{s:s, s:o}", "cmd", "cloud_release", "name", utf8_json_xstring(name));
    json_t *res = NULL;
    int rc = cli_request(app, req, NULL, NULL, &res);
    if (rc)
        return rc;
    char *n = cli_one_line(name);
    printf("released %s: its instance is destroyed\n", n);
    free(n);
    json_decref(res);
    return 0;
}

/* ---- the bad-host registry ---------------------------------------- */

static json_t *bad_stable(const json_t *b)
{
    return json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:o}", "machine_id",
        cli_json_field(b, "machine_id", JSON_INTEGER), "cloud",
        cli_json_field(b, "cloud", JSON_STRING), "reason", cli_json_field(b, "reason", JSON_STRING),
        "added_ms", cli_json_field(b, "added_ms", JSON_INTEGER), "by_hand",
        json_is_boolean(json_object_get(b, "by_hand")) ? json_incref(json_object_get(b, "by_hand"))
                                                       : json_null(),
        "expires_ms", cli_json_field(b, "expires_ms", JSON_INTEGER));
}

static void print_bad(const json_t *rows)
{
    size_t n = json_array_size(rows);
    if (!n) {
        printf("no machine in the bad-host registry\n");
        return;
    }
    enum { B_MACHINE, B_CLOUD, B_SINCE, B_EXPIRES, B_REASON, B_N };
    static const char *const head[B_N] = {"MACHINE", "CLOUD", "SINCE", "EXPIRES", "REASON"};
    char **cells = xcalloc((n + 1) * B_N, sizeof *cells);
    for (int k = 0; k < B_N; k++)
        cells[k] = xstrdup(head[k]);
    int64_t now = (int64_t)time(NULL) * 1000;
    for (size_t i = 0; i < n; i++) {
        const json_t *b = json_array_get(rows, i);
        char **row = &cells[(i + 1) * B_N];
        row[B_MACHINE] = int_text(b, "machine_id");
        row[B_CLOUD] = str_text(b, "cloud");
        json_int_t at = json_integer_value(json_object_get(b, "added_ms"));
        char *age = age_text(at > 0 && now > at ? (now - at) / 1000 : 0);
        row[B_SINCE] = xstrfmt("%s ago", age);
        free(age);
        json_t *exp = json_object_get(b, "expires_ms");
        if (json_is_integer(exp)) {
            json_int_t left = json_integer_value(exp) - now;
            char *in = age_text(left > 0 ? (left + 999) / 1000 : 0);
            row[B_EXPIRES] = xstrfmt("in %s", in);
            free(in);
        } else {
            row[B_EXPIRES] = xstrdup("never");
        }
        row[B_REASON] = str_text(b, "reason");
    }
    cli_table_print(cells, n + 1, B_N, stdout, NULL, NULL);
}

static int cloud_bad(struct app *app, const char *add, const char *forget)
{
    long m = 0;
    const char *arg = add ? add : forget;
    if (arg && (cli_parse_count(arg, &m) < 0 || m < 1))
        return cli_usage_error("cloud",
                               "'%s' is not a machine id; give the marketplace's "
                               "machine id, as 'yard cloud offers' shows it",
                               arg);
    json_t *req = json_pack("{s:s}", "cmd", "cloud_bad");
    if (add)
        json_object_set_new(req, "add", json_integer(m));
    if (forget)
        json_object_set_new(req, "forget", json_integer(m));
    json_t *res = NULL;
    int rc = cli_request(app, req, NULL, NULL, &res);
    if (rc)
        return rc;
    if (app->json) {
        json_t *arr = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(res, i, e) json_array_append_new(arr, bad_stable(e));
        json_dumpf(arr, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(arr);
    } else if (add) {
        printf("machine %ld is in the bad-host registry: every search leaves it out\n", m);
    } else if (forget) {
        printf("machine %ld is out of the bad-host registry\n", m);
    } else {
        print_bad(res);
    }
    json_decref(res);
    return 0;
}

/* ---- the command ---------------------------------------------------- */

static int cloud_offers(struct app *app, const char *cloud, long gpus, uint64_t vram,
                        const char *model)
{
    json_t *res;
    int rc = cloud_ask(app, "cloud_offers", cloud, gpus, vram, model, &res);
    if (rc)
        return rc;
    if (app->json) {
        json_t *o = offers_stable(res);
        /* 15 digits: 0.3, not 0.29999999999999999 */
        json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(15));
        fputc('\n', stdout);
        json_decref(o);
    } else {
        print_offers(res);
    }
    json_decref(res);
    return 0;
}

int cmd_cloud(int argc, char **argv, struct app *app)
{
    struct cli_opt opts[] = {
        {.name = "gpus", .kind = CLI_OPT_VALUE},   {.name = "vram", .kind = CLI_OPT_VALUE},
        {.name = "model", .kind = CLI_OPT_VALUE},  {.name = "add", .kind = CLI_OPT_VALUE},
        {.name = "forget", .kind = CLI_OPT_VALUE},
    };
    struct cli_args args;
    int rc = cli_setup(argc, argv, app, opts, 5, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    const char *sub = args.n > 0 ? args.pos[0] : NULL;
    long gpus = 0;
    uint64_t vram = 0;
    int rent = sub && strcmp(sub, "rent") == 0;
    int bad = sub && strcmp(sub, "bad") == 0;
    if (!bad && (opts[3].value || opts[4].value)) {
        rc = cli_usage_error("cloud", "--add and --forget go with 'yard cloud bad'");
    } else if (!sub) {
        rc = cli_usage_error("cloud",
                             "which subcommand? offers, rent, ls, release or bad; see 'yard "
                             "cloud --help'");
    } else if (bad) {
        if (args.n != 1 || opts[0].value || opts[1].value || opts[2].value)
            rc = cli_usage_error("cloud", "'yard cloud bad' takes --add MACHINE, --forget "
                                          "MACHINE and --json");
        else if (opts[3].value && opts[4].value)
            rc = cli_usage_error("cloud", "give --add or --forget, not both");
        else
            rc = cloud_bad(app, opts[3].value, opts[4].value);
    } else if (strcmp(sub, "ls") == 0) {
        if (args.n != 1 || opts[0].value || opts[1].value || opts[2].value)
            rc = cli_usage_error("cloud", "'yard cloud ls' takes only --json");
        else
            rc = cli_list(app, "cloud_ls", rental_stable, print_rentals);
    } else if (strcmp(sub, "release") == 0) {
        if (args.n != 2 || opts[0].value || opts[1].value || opts[2].value)
            rc = cli_usage_error("cloud", "name one rented machine, as 'yard cloud release "
                                          "vast-1' ('yard cloud ls' lists them)");
        else
            rc = cloud_release(app, args.pos[1]);
    } else if (strcmp(sub, "offers") != 0 && !rent) {
        rc = cli_usage_error("cloud",
                             "unknown subcommand '%s'; use offers, rent, ls, release or bad", sub);
    } else if (args.n != 2) {
        rc = cli_usage_error("cloud", "name one cloud of the config, as 'yard cloud %s vast'", sub);
    } else if (opts[0].value &&
               (cli_parse_count(opts[0].value, &gpus) < 0 || gpus < 1 || gpus > CLOUD_GPUS_MAX)) {
        rc = cli_usage_error("cloud", "'--gpus %s' is not a GPU count; give 1 to %d", opts[0].value,
                             CLOUD_GPUS_MAX);
    } else if (opts[1].value && (units_parse_size(opts[1].value, &vram) < 0 || !vram)) {
        rc = cli_usage_error("cloud",
                             "'--vram %s' is not a size; give the memory per GPU, as '24GiB'",
                             opts[1].value);
    } else if (rent) {
        rc = cloud_rent(app, args.pos[1], gpus, vram, opts[2].value);
    } else {
        rc = cloud_offers(app, args.pos[1], gpus, vram, opts[2].value);
    }
    cli_args_release(&args);
    return rc;
}
