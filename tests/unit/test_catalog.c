/*
 * catalog/: parsing (defaults, pi's spellings, order kept), every validation
 * error as one line naming the source and the value, reading files (missing,
 * a directory, too large), the built-in catalog, and the fit rules: GPU
 * count, gpu_types, vram per GPU, the choice among configs and the reason
 * given when none fits.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/alloc.h"
#include "catalog/catalog.h"
#include "testutil.h"

#define GIB (1024ull * 1024 * 1024)
#define MIB (1024ull * 1024)

static struct catalog *parse(const char *text, char **err)
{
    return catalog_parse(text, strlen(text), "t.json", err);
}

/* Parses text expecting a failure whose message contains want; checks it is one line. */
static void expect_error(const char *text, const char *want)
{
    char *err = NULL;
    struct catalog *cat = parse(text, &err);
    if (cat || !err || !strstr(err, want)) {
        print_error("input: %s\nwanted: %s\ngot: %s\n", text, want, err ? err : "(no error)");
        fail();
    }
    assert_null(strchr(err, '\n'));
    assert_int_equal(strncmp(err, "t.json", 6), 0);
    free(err);
}

/* A one-model catalog with the given config object text. */
static char *with_config(const char *config)
{
    return xstrfmt("{\"models\": {\"org/m\": {\"name\": \"M\", \"configs\": [%s]}}}", config);
}

static void test_parse_full(void **state)
{
    const char *text = "{\"models\": {\n"
                       " \"Qwen/Qwen2.5-72B-Instruct\": {\"name\": \"Qwen 72B\", \"engine\": "
                       "\"sglang\", \"notes\": \"big\", \"configs\": [\n"
                       "  {\"gpu_count\": 4, \"gpu_types\": [\"H100\", \"H200\"], \"vram\": "
                       "\"45GiB\", \"args\": [\"--tp\", \"4\"], \"env\": {\"HF_HOME\": \"/m\", "
                       "\"X_1\": \"\"}, \"notes\": \"four\"},\n"
                       "  {\"gpu_count\": 8, \"vram\": 1073741824}]},\n"
                       " \"b/first-seen-second\": {\"configs\": [{\"gpu_count\": 1}]},\n"
                       " \"a/pi-spelling\": {\"name\": \"pi\", \"configs\": [{\"gpuCount\": 2, "
                       "\"gpuTypes\": [\"A100\"], \"args\": []}]}\n"
                       "}}";
    char *err = NULL;
    struct catalog *cat = parse(text, &err);
    assert_non_null(cat);
    assert_null(err);
    assert_string_equal(cat->source, "t.json");
    assert_int_equal(cat->n_models, 3);

    const struct catalog_model *m = &cat->models[0];
    assert_string_equal(m->id, "Qwen/Qwen2.5-72B-Instruct");
    assert_string_equal(m->name, "Qwen 72B");
    assert_string_equal(m->engine, "sglang");
    assert_string_equal(m->notes, "big");
    assert_int_equal(m->n_configs, 2);
    const struct catalog_config *c = &m->configs[0];
    assert_int_equal(c->gpu_count, 4);
    assert_int_equal(c->n_gpu_types, 2);
    assert_string_equal(c->gpu_types[1], "H200");
    assert_true(c->vram == 45 * GIB);
    assert_int_equal(c->n_args, 2);
    assert_string_equal(c->args[0], "--tp");
    assert_int_equal(c->n_env, 2);
    assert_string_equal(c->env[0].key, "HF_HOME");
    assert_string_equal(c->env[0].value, "/m");
    assert_string_equal(c->env[1].value, "");
    assert_string_equal(c->notes, "four");
    assert_true(m->configs[1].vram == GIB);
    assert_int_equal(m->configs[1].n_gpu_types, 0);
    assert_null(m->configs[1].notes);

    /* File order, not sorted; defaults: name = id, engine vllm, no args. */
    m = &cat->models[1];
    assert_string_equal(m->id, "b/first-seen-second");
    assert_string_equal(m->name, "b/first-seen-second");
    assert_string_equal(m->engine, "vllm");
    assert_null(m->notes);
    assert_int_equal(m->configs[0].n_args, 0);
    assert_true(m->configs[0].vram == 0);

    m = &cat->models[2];
    assert_int_equal(m->configs[0].gpu_count, 2);
    assert_int_equal(m->configs[0].n_gpu_types, 1);
    assert_string_equal(m->configs[0].gpu_types[0], "A100");
    catalog_free(cat);
    catalog_free(NULL);
}

static void test_parse_json_errors(void **state)
{
    char *err = NULL;
    /* The position is jansson's: line 2, around the stray comma. */
    struct catalog *cat = parse("{\"models\": {\n  ,\n}}", &err);
    assert_null(cat);
    assert_non_null(err);
    assert_int_equal(strncmp(err, "t.json:2:", 9), 0);
    assert_non_null(strstr(err, "not valid JSON"));
    free(err);

    expect_error("", "t.json:1:");
    expect_error("{\"models\": {}} trailing", "not valid JSON");
    expect_error("{\"models\": {\"a/b\": {\"configs\": [{\"gpu_count\": 1}]}, \"a/b\": {}}}",
                 "duplicate");
    expect_error("{\"models\": {\"a/b\": {\"name\": \"x\\u0000y\", \"configs\": []}}}",
                 "not valid JSON");
}

static void test_parse_shape_errors(void **state)
{
    expect_error("[]", "t.json: the top level must be an object");
    expect_error("{\"model\": {}}",
                 "t.json: top level: unknown key 'model'; known keys are models");
    expect_error("{}", "'models' must be an object of models by Hugging Face id");
    expect_error("{\"models\": []}", "'models' must be an object");
    expect_error("{\"models\": {}}", "'models' is empty");
    expect_error("{\"models\": {\"\": {\"configs\": [{\"gpu_count\": 1}]}}}",
                 "models[\"\"]: a model id must be a Hugging Face id");
    expect_error("{\"models\": {\"a b\": {\"configs\": [{\"gpu_count\": 1}]}}}",
                 "models[\"a b\"]: a model id must be");
    expect_error("{\"models\": {\"a\\nb\": {\"configs\": [{\"gpu_count\": 1}]}}}",
                 "models[\"a?b\"]: a model id must be");
    expect_error("{\"models\": {\"a/b\": 3}}", "models[\"a/b\"]: must be an object");
    expect_error("{\"models\": {\"a/b\": {\"configs\": [{\"gpu_count\": 1}], \"nmae\": \"x\"}}}",
                 "models[\"a/b\"]: unknown key 'nmae'; known keys are name, engine, notes and "
                 "configs");
    expect_error("{\"models\": {\"a/b\": {\"name\": 7, \"configs\": [{\"gpu_count\": 1}]}}}",
                 "'name' must be a string");
    expect_error("{\"models\": {\"a/b\": {\"name\": \"\", \"configs\": [{\"gpu_count\": 1}]}}}",
                 "'name' must not be empty");
    expect_error("{\"models\": {\"a/b\": {\"engine\": \"ollama\", \"configs\": [{\"gpu_count\": "
                 "1}]}}}",
                 "unknown engine 'ollama'; use vllm, sglang, llamacpp or generic");
    expect_error("{\"models\": {\"a/b\": {\"notes\": [], \"configs\": [{\"gpu_count\": 1}]}}}",
                 "'notes' must be a string");
    expect_error("{\"models\": {\"a/b\": {\"name\": \"x\"}}}",
                 "models[\"a/b\"]: 'configs' must be a non-empty list");
    expect_error("{\"models\": {\"a/b\": {\"configs\": []}}}",
                 "'configs' must be a non-empty list");
    expect_error("{\"models\": {\"a/b\": {\"configs\": {}}}}",
                 "'configs' must be a non-empty list");
}

static void test_parse_config_errors(void **state)
{
    static const struct {
        const char *config;
        const char *want;
    } cases[] = {
        {"7", "models[\"org/m\"].configs[0]: must be an object"},
        {"{}", "configs[0]: 'gpu_count' is missing"},
        {"{\"gpu_count\": 0}", "'gpu_count' must be a whole number from 1 to 64"},
        {"{\"gpu_count\": 65}", "'gpu_count' must be a whole number from 1 to 64"},
        {"{\"gpu_count\": -1}", "'gpu_count' must be a whole number"},
        {"{\"gpu_count\": \"2\"}", "'gpu_count' must be a whole number"},
        {"{\"gpu_count\": 1.5}", "'gpu_count' must be a whole number"},
        {"{\"gpu_count\": 1, \"gpuCount\": 1}", "gives both 'gpu_count' and 'gpuCount'"},
        {"{\"gpu_count\": 1, \"gpu_types\": \"H100\"}", "'gpu_types' must be a list of GPU names"},
        {"{\"gpu_count\": 1, \"gpu_types\": [\"H100\", \"\"]}", "gpu_types[1] must be a non-empty"},
        {"{\"gpu_count\": 1, \"gpu_types\": [80]}", "gpu_types[0] must be a non-empty string"},
        {"{\"gpu_count\": 1, \"gpu_types\": [], \"gpuTypes\": []}",
         "gives both 'gpu_types' and 'gpuTypes'"},
        {"{\"gpu_count\": 1, \"vram\": \"lots\"}", "'vram' must be the memory needed on each GPU"},
        {"{\"gpu_count\": 1, \"vram\": \"0GiB\"}", "'vram' must be"},
        {"{\"gpu_count\": 1, \"vram\": 0}", "'vram' must be"},
        {"{\"gpu_count\": 1, \"vram\": -5}", "'vram' must be"},
        {"{\"gpu_count\": 1, \"vram\": 1.5}", "'vram' must be"},
        {"{\"gpu_count\": 1, \"args\": \"--tp 2\"}", "'args' must be a list of strings"},
        {"{\"gpu_count\": 1, \"args\": [\"--tp\", 2]}", "args[1] must be a string"},
        {"{\"gpu_count\": 1, \"env\": [\"A=1\"]}", "'env' must be an object of strings"},
        {"{\"gpu_count\": 1, \"env\": {\"1X\": \"a\"}}", "env: '1X' is not a variable name"},
        {"{\"gpu_count\": 1, \"env\": {\"A B\": \"a\"}}", "env: 'A B' is not a variable name"},
        {"{\"gpu_count\": 1, \"env\": {\"\": \"a\"}}", "env: '' is not a variable name"},
        {"{\"gpu_count\": 1, \"env\": {\"N\": 1}}", "env.N must be a string"},
        {"{\"gpu_count\": 1, \"notes\": 1}", "'notes' must be a string"},
        {"{\"gpu_count\": 1, \"tensor_parallel\": 2}", "configs[0]: unknown key 'tensor_parallel'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = with_config(cases[i].config);
        expect_error(text, cases[i].want);
        free(text);
    }
    /* The second config's error names configs[1]. */
    char *text = with_config("{\"gpu_count\": 1}, {\"gpu_count\": 99}");
    expect_error(text, "models[\"org/m\"].configs[1]: 'gpu_count' must be");
    free(text);
}

static void test_parse_limits(void **state)
{
    /* More args than allowed. */
    char *args = xstrdup("\"a\"");
    for (int i = 1; i <= CATALOG_MAX_ARGS; i++) {
        char *next = xstrfmt("%s, \"a\"", args);
        free(args);
        args = next;
    }
    char *cfg = xstrfmt("{\"gpu_count\": 1, \"args\": [%s]}", args);
    char *text = with_config(cfg);
    expect_error(text, "'args' has more than 256 entries");
    free(args);
    free(cfg);
    free(text);

    /* More configs than allowed. */
    char *cfgs = xstrdup("{\"gpu_count\": 1}");
    for (int i = 1; i <= CATALOG_MAX_CONFIGS; i++) {
        char *next = xstrfmt("%s, {\"gpu_count\": 1}", cfgs);
        free(cfgs);
        cfgs = next;
    }
    text = with_config(cfgs);
    expect_error(text, "more than 64 configs");
    free(cfgs);
    free(text);
}

static char tmp_dir[] = "/tmp/yard-test-catalog-XXXXXX";

static char *write_tmp(const char *name, const char *text)
{
    char *path = xstrfmt("%s/%s", tmp_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_load_files(void **state)
{
    char *err = NULL;
    char *path = write_tmp("good.json", "{\"models\": {\"a/b\": {\"configs\": [{\"gpu_count\": 1, "
                                        "\"vram\": \"10GiB\"}]}}}");
    struct catalog *cat = catalog_load(path, &err);
    assert_non_null(cat);
    assert_string_equal(cat->source, path);
    assert_int_equal(cat->n_models, 1);
    catalog_free(cat);
    free(path);

    path = write_tmp("bad.json", "{\n  \"models\": {\n    \"a/b\": {\"configs\": [}\n  }\n}\n");
    cat = catalog_load(path, &err);
    assert_null(cat);
    char *want = xstrfmt("%s:3:", path);
    assert_int_equal(strncmp(err, want, strlen(want)), 0);
    assert_non_null(strstr(err, "not valid JSON"));
    assert_null(strchr(err, '\n'));
    free(want);
    free(err);
    free(path);

    path = xstrfmt("%s/missing.json", tmp_dir);
    cat = catalog_load(path, &err);
    assert_null(cat);
    want = xstrfmt("cannot read catalog '%s': No such file or directory", path);
    assert_string_equal(err, want);
    free(want);
    free(err);
    free(path);

    cat = catalog_load(tmp_dir, &err);
    assert_null(cat);
    assert_non_null(strstr(err, "not a regular file"));
    free(err);

    /* A (sparse) file past the limit is refused before it is read. */
    path = xstrfmt("%s/huge.json", tmp_dir);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)CATALOG_MAX_BYTES + 1), 0);
    close(fd);
    cat = catalog_load(path, &err);
    assert_null(cat);
    assert_non_null(strstr(err, "is larger than 4 MiB"));
    free(err);
    free(path);
}

static void test_default_catalog(void **state)
{
    size_t len = 0;
    const char *text = catalog_default_text(&len);
    assert_true(len > 100);
    assert_int_equal(strlen(text), len);
    char *err = NULL;
    struct catalog *cat = catalog_load_default(&err);
    if (!cat)
        fail_msg("the built-in catalog does not parse: %s", err);
    assert_string_equal(cat->source, "built-in");
    assert_true(cat->n_models >= 10);
    int seen_7b = 0;
    for (size_t i = 0; i < cat->n_models; i++) {
        const struct catalog_model *m = &cat->models[i];
        assert_true(m->n_configs >= 1);
        assert_true(strchr(m->id, '/') != NULL);
        seen_7b += strcmp(m->id, "Qwen/Qwen2.5-7B-Instruct") == 0;
        for (size_t j = 0; j < m->n_configs; j++)
            assert_true(m->configs[j].vram > 0); /* every built-in config says its memory */
    }
    assert_int_equal(seen_7b, 1);

    /* A single 80 GB H100 runs the 7B model on one GPU and not the 480B coder. */
    struct catalog_gpu h100 = {"NVIDIA H100 80GB HBM3", 81559 * MIB};
    for (size_t i = 0; i < cat->n_models; i++) {
        const struct catalog_config *c = NULL;
        char *why = NULL;
        int rc = catalog_fit(&cat->models[i], &h100, 1, "pod", &c, &why);
        if (strcmp(cat->models[i].id, "Qwen/Qwen2.5-7B-Instruct") == 0) {
            assert_int_equal(rc, 0);
            assert_int_equal(c->gpu_count, 1);
        }
        if (strcmp(cat->models[i].id, "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8") == 0) {
            assert_int_equal(rc, -ENOSPC);
            assert_string_equal(why, "needs 8 GPUs, pod has 1");
        }
        free(why);
    }
    catalog_free(cat);
}

/* Parses a one-model catalog from configs text; the test owns the catalog. */
static struct catalog *model_of(const char *configs)
{
    char *text = xstrfmt("{\"models\": {\"org/m\": {\"configs\": [%s]}}}", configs);
    char *err = NULL;
    struct catalog *cat = parse(text, &err);
    if (!cat)
        fail_msg("%s: %s", text, err);
    free(text);
    return cat;
}

/* Fits the one model; returns the chosen config's index, or -1 with why compared to want_why. */
static int fit_index(const struct catalog *cat, const struct catalog_gpu *gpus, size_t n,
                     const char *want_why)
{
    const struct catalog_config *c = NULL;
    char *why = NULL;
    int rc = catalog_fit(&cat->models[0], gpus, n, "pod", &c, &why);
    if (rc == 0) {
        assert_null(why);
        assert_null(want_why);
        return (int)(c - cat->models[0].configs);
    }
    assert_int_equal(rc, -ENOSPC);
    assert_null(c);
    assert_non_null(why);
    if (!want_why || strcmp(why, want_why) != 0)
        fail_msg("reason '%s', wanted '%s'", why, want_why ? want_why : "(a fit)");
    free(why);
    return -1;
}

static void test_fit_count(void **state)
{
    struct catalog_gpu two[] = {{"NVIDIA H100 80GB HBM3", 80 * GIB},
                                {"NVIDIA H100 80GB HBM3", 80 * GIB}};
    struct catalog *cat = model_of("{\"gpu_count\": 8}");
    fit_index(cat, two, 2, "needs 8 GPUs, pod has 2");
    fit_index(cat, NULL, 0, "needs 8 GPUs, pod has none");
    catalog_free(cat);
    cat = model_of("{\"gpu_count\": 1}");
    fit_index(cat, NULL, 0, "needs 1 GPU, pod has none");
    assert_int_equal(fit_index(cat, two, 2, NULL), 0); /* more GPUs than needed is fine */
    catalog_free(cat);

    /* The smallest count that fits wins; among equals, the first listed. */
    cat = model_of("{\"gpu_count\": 2, \"notes\": \"a\"}, {\"gpu_count\": 1, \"vram\": "
                   "\"200GiB\"}, {\"gpu_count\": 1, \"notes\": \"c\"}, {\"gpu_count\": 1}");
    assert_int_equal(fit_index(cat, two, 2, NULL), 2);
    catalog_free(cat);
    cat = model_of("{\"gpu_count\": 2}, {\"gpu_count\": 8}");
    assert_int_equal(fit_index(cat, two, 2, NULL), 0);
    /* Of several too big, the reason names the smallest. */
    catalog_free(cat);
    cat = model_of("{\"gpu_count\": 8}, {\"gpu_count\": 4}");
    fit_index(cat, two, 2, "needs 4 GPUs, pod has 2");
    catalog_free(cat);
}

static void test_fit_types(void **state)
{
    struct catalog_gpu a10[] = {{"NVIDIA A10G", 23028 * MIB}, {"NVIDIA A10G", 23028 * MIB}};
    struct catalog_gpu mixed[] = {{"NVIDIA H100 80GB HBM3", 80 * GIB}, {"NVIDIA A10G", 24 * GIB}};
    struct catalog_gpu lower[] = {{"nvidia h200", 141 * GIB}};
    struct catalog_gpu unnamed[] = {{NULL, 80 * GIB}};

    struct catalog *cat = model_of("{\"gpu_count\": 1, \"gpu_types\": [\"H100\", \"H200\"]}");
    fit_index(cat, a10, 2, "needs H100 or H200, pod has 'NVIDIA A10G'");
    assert_int_equal(fit_index(cat, mixed, 2, NULL), 0);
    assert_int_equal(fit_index(cat, lower, 1, NULL), 0); /* case does not matter */
    fit_index(cat, unnamed, 1, "needs H100 or H200, pod has 'unknown'");
    catalog_free(cat);

    /* Every GPU used must match: one H100 of two is not enough for 2. */
    cat = model_of("{\"gpu_count\": 2, \"gpu_types\": [\"H100\"]}");
    fit_index(cat, mixed, 2, "needs 2 GPUs of H100, pod has 1");
    catalog_free(cat);

    /* Distinct names are listed once each; three types read "a, b or c". */
    struct catalog_gpu three[] = {
        {"NVIDIA A10G", 24 * GIB}, {"NVIDIA L4", 24 * GIB}, {"NVIDIA A10G", 24 * GIB}};
    cat = model_of("{\"gpu_count\": 1, \"gpu_types\": [\"H100\", \"H200\", \"B200\"]}");
    fit_index(cat, three, 3, "needs H100, H200 or B200, pod has 'NVIDIA A10G', 'NVIDIA L4'");
    catalog_free(cat);

    /* "NVIDIA " is removed before matching: a type "NVIDIA" matches nothing by that prefix. */
    cat = model_of("{\"gpu_count\": 1, \"gpu_types\": [\"NVIDIA\"]}");
    fit_index(cat, lower, 1, "needs NVIDIA, pod has 'nvidia h200'");
    catalog_free(cat);

    /* A substring anywhere in the rest of the name matches ("80GB"). */
    cat = model_of("{\"gpu_count\": 1, \"gpu_types\": [\"80GB\"]}");
    assert_int_equal(fit_index(cat, mixed, 2, NULL), 0);
    catalog_free(cat);
}

static void test_fit_vram(void **state)
{
    struct catalog_gpu small[] = {{"NVIDIA RTX 4090", 24 * GIB}, {"NVIDIA RTX 4090", 24 * GIB}};
    struct catalog_gpu a10[] = {{"NVIDIA A10G", 23028 * MIB}};
    struct catalog_gpu uneven[] = {{"NVIDIA A100-SXM4-40GB", 40 * GIB},
                                   {"NVIDIA A100-SXM4-80GB", 80 * GIB}};
    struct catalog_gpu unknown[] = {{"NVIDIA H100", 0}};
    struct catalog_gpu exact[] = {{"NVIDIA L40S", 70 * GIB}};

    struct catalog *cat = model_of("{\"gpu_count\": 1, \"vram\": \"70GiB\"}");
    fit_index(cat, small, 2, "needs 70 GiB per GPU, GPUs have 24 GiB");
    fit_index(cat, a10, 1, "needs 70 GiB per GPU, GPUs have 22.5 GiB");
    assert_int_equal(fit_index(cat, uneven, 2, NULL), 0);
    assert_int_equal(fit_index(cat, unknown, 1, NULL), 0); /* unknown memory passes */
    assert_int_equal(fit_index(cat, exact, 1, NULL), 0);   /* exactly enough is enough */
    catalog_free(cat);

    cat = model_of("{\"gpu_count\": 2, \"vram\": \"70GiB\"}");
    fit_index(cat, uneven, 2, "needs 2 GPUs with 70 GiB each, pod has 1");
    catalog_free(cat);

    cat = model_of("{\"gpu_count\": 1, \"vram\": \"100GiB\"}");
    fit_index(cat, uneven, 2, "needs 100 GiB per GPU, GPUs have at most 80 GiB");
    catalog_free(cat);

    cat = model_of("{\"gpu_count\": 1, \"vram\": \"30GiB\"}");
    struct catalog_gpu tiny[] = {{"NVIDIA T4", 512 * MIB}};
    fit_index(cat, tiny, 1, "needs 30 GiB per GPU, GPUs have 512 MiB");
    catalog_free(cat);

    /* vram is checked on GPUs of the right type only. */
    struct catalog_gpu mixed[] = {{"NVIDIA H100", 80 * GIB}, {"NVIDIA H200", 141 * GIB}};
    cat = model_of("{\"gpu_count\": 1, \"gpu_types\": [\"H100\"], \"vram\": \"100GiB\"}");
    fit_index(cat, mixed, 2, "needs 100 GiB per GPU, GPUs have 80 GiB");
    catalog_free(cat);
}

/* Messages go out as JSON strings: they must stay valid UTF-8 whatever came in (U+FFFD for
 * each invalid byte, cuts at character boundaries). */
static void test_messages_utf8(void **state)
{
    /* A long id (with a space, so that it is refused) is cut in the path. */
    char id[256] = "a"; /* one byte first: the cut at 80 bytes falls inside a character */
    for (int i = 0; i < 100; i++)
        memcpy(id + 1 + 2 * i, "\xc3\xa9", 2);
    memcpy(id + 201, " x", 3);
    char *text = xstrfmt("{\"models\": {\"%s\": {\"configs\": [{\"gpu_count\": 1}]}}}", id);
    char *err = NULL;
    assert_null(parse(text, &err));
    /* cut at a character boundary: 'a' and 39 characters of 2 bytes */
    assert_non_null(strstr(err, "a\xc3\xa9\xc3\xa9"));
    assert_non_null(strstr(err, "\xc3\xa9...\"]: a model id must be"));
    assert_null(strstr(err, "\xef\xbf\xbd"));
    json_t *js = json_string(err);
    assert_non_null(js);
    json_decref(js);
    free(err);
    free(text);

    /* A GPU name that is not UTF-8 (a broken driver) is cleaned in the reason. */
    struct catalog_gpu bad[] = {{"NVIDIA \xff\xe0\x80\x80\xed\xa0\x80 GPU", 8 * GIB}};
    struct catalog *cat = model_of("{\"gpu_count\": 1, \"gpu_types\": [\"H100\"]}");
    const struct catalog_config *c = NULL;
    char *why = NULL;
    assert_int_equal(catalog_fit(&cat->models[0], bad, 1, "pod", &c, &why), -ENOSPC);
    assert_string_equal(why, "needs H100, pod has 'NVIDIA \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                             "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd GPU'");
    free(why);
    catalog_free(cat);
}

static void test_fit_closest_reason(void **state)
{
    struct catalog_gpu a10[] = {{"NVIDIA A10G", 24 * GIB}, {"NVIDIA A10G", 24 * GIB}};
    /* A count failure, a type failure and a vram failure: the vram one came closest. */
    struct catalog *cat = model_of("{\"gpu_count\": 8}, {\"gpu_count\": 1, \"gpu_types\": "
                                   "[\"H200\"]}, {\"gpu_count\": 2, \"vram\": \"40GiB\"}");
    fit_index(cat, a10, 2, "needs 40 GiB per GPU, GPUs have 24 GiB");
    catalog_free(cat);
    /* A type failure beats a count failure. */
    cat = model_of("{\"gpu_count\": 4}, {\"gpu_count\": 2, \"gpu_types\": [\"H100\"]}");
    fit_index(cat, a10, 2, "needs H100, pod has 'NVIDIA A10G'");
    catalog_free(cat);
}

static int setup(void **state)
{
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    return test_rm_tree(tmp_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_full),         cmocka_unit_test(test_parse_json_errors),
        cmocka_unit_test(test_parse_shape_errors), cmocka_unit_test(test_parse_config_errors),
        cmocka_unit_test(test_parse_limits),       cmocka_unit_test(test_load_files),
        cmocka_unit_test(test_default_catalog),    cmocka_unit_test(test_fit_count),
        cmocka_unit_test(test_fit_types),          cmocka_unit_test(test_fit_vram),
        cmocka_unit_test(test_fit_closest_reason), cmocka_unit_test(test_messages_utf8),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
