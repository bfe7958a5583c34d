// fuzz-sources: src/config/llamaswap.c src/config/walk.c src/config/keys.c src/config/argv.c
// fuzz-sources: src/base/alloc.c src/base/buf.c src/base/units.c src/base/hash.c
// fuzz-sources: src/base/suggest.c src/config/clouds.c src/config/sessions.c src/config/slurm.c
// fuzz-sources: src/config/model.c src/config/compose.c
// fuzz-libs: -lyaml -ljansson
/*
 * libFuzzer target for config_import_llamaswap (yard import llama-swap). The
 * input is a llama-swap config, in an exact-size copy.
 *
 * A refusal is one line naming the file. A translation is YAML that libyaml
 * reads back as one mapping with a models mapping (every scalar the importer
 * wrote is quoted right, whatever bytes the input held), yard's loader takes
 * it without crashing (it may refuse it), and every note is one line that
 * names the file.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "config/config.h"
#include "config/llamaswap.h"

#define NAME "fuzz.yaml"

static void check_yaml(const char *text, size_t len)
{
    yaml_parser_t p;
    yaml_document_t d;
    if (!yaml_parser_initialize(&p))
        abort();
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, &d)) {
        fprintf(stderr, "the translation is not YAML: %s\n%.*s\n", p.problem, (int)len, text);
        abort();
    }
    yaml_node_t *root = yaml_document_get_root_node(&d);
    if (!root || root->type != YAML_MAPPING_NODE)
        abort();
    yaml_document_delete(&d);
    yaml_parser_delete(&p);
}

static void check_lines(const char *text, size_t len)
{
    for (const char *p = text; p < text + len;) {
        const char *nl = memchr(p, '\n', (size_t)(text + len - p));
        if (!nl || strncmp(p, NAME, strlen(NAME)) != 0)
            abort(); /* a note is a whole line naming the file */
        p = nl + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    memcpy(text, data, size);
    struct buf out, notes;
    buf_init(&out, 64 << 20);
    buf_init(&notes, 64 << 20);
    char *err = NULL;
    int rc = config_import_llamaswap(text, size, NAME, &out, &notes, &err);
    if (rc < 0) {
        if (rc != -EINVAL && rc != -ENOMEM)
            abort();
        if (!err || strchr(err, '\n') || strncmp(err, NAME, strlen(NAME)) != 0)
            abort();
    } else {
        if (err)
            abort();
        check_yaml(out.data, out.len);
        check_lines(notes.data ? notes.data : "", notes.len);
        struct config_errors errs = {0};
        struct config *cfg = config_parse(out.data, out.len, "out.yaml", &errs);
        if (cfg)
            config_free(cfg);
        config_errors_release(&errs);
    }
    free(err);
    buf_release(&out);
    buf_release(&notes);
    free(text);
    return 0;
}
