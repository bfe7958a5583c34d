/*
 * config__load_doc (config/compose.c) composes the config's node tree from
 * libyaml's events; yaml_parser_load is the reference. Every document of
 * each text below is read both ways, and the trees (nodes in order, tags,
 * values, styles, marks, pairs and items, directives) or the errors left in
 * the parser (kind, problem, context, their marks) must be the same.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <yaml.h>

#include "base/alloc.h"
#include "config/internal.h"

static void same_mark(const yaml_mark_t *a, const yaml_mark_t *b, const char *what)
{
    if (a->index != b->index || a->line != b->line || a->column != b->column)
        fail_msg("%s: mark %zu:%zu (%zu) vs %zu:%zu (%zu)", what, a->line, a->column, a->index,
                 b->line, b->column, b->index);
}

static void same_str(const char *a, const char *b, const char *what)
{
    if (!a || !b) {
        if (a != b)
            fail_msg("%s: '%s' vs '%s'", what, a ? a : "(null)", b ? b : "(null)");
        return;
    }
    if (strcmp(a, b) != 0)
        fail_msg("%s: '%s' vs '%s'", what, a, b);
}

static void same_doc(const yaml_document_t *a, const yaml_document_t *b)
{
    size_t n = (size_t)(a->nodes.top - a->nodes.start);
    assert_int_equal(n, (size_t)(b->nodes.top - b->nodes.start));
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *x = &a->nodes.start[i], *y = &b->nodes.start[i];
        assert_int_equal(x->type, y->type);
        same_str((const char *)x->tag, (const char *)y->tag, "tag");
        same_mark(&x->start_mark, &y->start_mark, "node start");
        same_mark(&x->end_mark, &y->end_mark, "node end");
        if (x->type == YAML_SCALAR_NODE) {
            assert_int_equal(x->data.scalar.length, y->data.scalar.length);
            assert_memory_equal(x->data.scalar.value, y->data.scalar.value,
                                x->data.scalar.length + 1);
            assert_int_equal(x->data.scalar.style, y->data.scalar.style);
        } else if (x->type == YAML_SEQUENCE_NODE) {
            size_t k = (size_t)(x->data.sequence.items.top - x->data.sequence.items.start);
            assert_int_equal(k,
                             (size_t)(y->data.sequence.items.top - y->data.sequence.items.start));
            for (size_t j = 0; j < k; j++)
                assert_int_equal(x->data.sequence.items.start[j], y->data.sequence.items.start[j]);
            assert_int_equal(x->data.sequence.style, y->data.sequence.style);
        } else {
            size_t k = (size_t)(x->data.mapping.pairs.top - x->data.mapping.pairs.start);
            assert_int_equal(k, (size_t)(y->data.mapping.pairs.top - y->data.mapping.pairs.start));
            for (size_t j = 0; j < k; j++) {
                assert_int_equal(x->data.mapping.pairs.start[j].key,
                                 y->data.mapping.pairs.start[j].key);
                assert_int_equal(x->data.mapping.pairs.start[j].value,
                                 y->data.mapping.pairs.start[j].value);
            }
            assert_int_equal(x->data.mapping.style, y->data.mapping.style);
        }
    }
    same_mark(&a->start_mark, &b->start_mark, "document start");
    same_mark(&a->end_mark, &b->end_mark, "document end");
    assert_int_equal(a->start_implicit, b->start_implicit);
    assert_int_equal(a->end_implicit, b->end_implicit);
    assert_int_equal(!a->version_directive, !b->version_directive);
    if (a->version_directive) {
        assert_int_equal(a->version_directive->major, b->version_directive->major);
        assert_int_equal(a->version_directive->minor, b->version_directive->minor);
    }
    size_t t = (size_t)(a->tag_directives.end - a->tag_directives.start);
    assert_int_equal(t, (size_t)(b->tag_directives.end - b->tag_directives.start));
    for (size_t i = 0; i < t; i++) {
        same_str((const char *)a->tag_directives.start[i].handle,
                 (const char *)b->tag_directives.start[i].handle, "tag handle");
        same_str((const char *)a->tag_directives.start[i].prefix,
                 (const char *)b->tag_directives.start[i].prefix, "tag prefix");
    }
}

static void same_error(const yaml_parser_t *a, const yaml_parser_t *b)
{
    assert_int_equal(a->error, b->error);
    same_str(a->problem, b->problem, "problem");
    same_mark(&a->problem_mark, &b->problem_mark, "problem");
    assert_int_equal(a->problem_offset, b->problem_offset);
    same_str(a->context, b->context, "context");
    if (a->context)
        same_mark(&a->context_mark, &b->context_mark, "context");
}

/* Reads every document of text both ways; returns how many had a root. */
static int compare(const char *text, size_t len, int want_error)
{
    yaml_parser_t pa, pb;
    assert_true(yaml_parser_initialize(&pa));
    assert_true(yaml_parser_initialize(&pb));
    yaml_parser_set_input_string(&pa, (const unsigned char *)text, len);
    yaml_parser_set_input_string(&pb, (const unsigned char *)text, len);
    int docs = 0, failed = 0;
    for (;;) {
        yaml_document_t a;
        struct config__doc b;
        int ra = yaml_parser_load(&pa, &a);
        int rb = config__load_doc(&pb, &b);
        assert_int_equal(ra, rb);
        if (!ra) {
            same_error(&pa, &pb);
            failed = 1;
            break;
        }
        same_doc(&a, &b.doc);
        int root = yaml_document_get_root_node(&a) != NULL;
        assert_int_equal(root, yaml_document_get_root_node(&b.doc) != NULL);
        yaml_document_delete(&a);
        config__doc_release(&b);
        if (!root)
            break;
        docs++;
    }
    assert_int_equal(failed, want_error);
    yaml_parser_delete(&pa);
    yaml_parser_delete(&pb);
    return docs;
}

static int compare_str(const char *text, int want_error)
{
    return compare(text, strlen(text), want_error);
}

static void test_trees(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "listen: 127.0.0.1:8080\nmodels:\n  a:\n    cmd: vllm serve a --port ${PORT}\n"
        "    aliases: [x, y]\n    env: {A: '1', B: \"two\"}\n  b: {cmd: b, ttl: 5m}\n",
        "models:\n  - one\n  - [two, three, []]\n  - {}\n  -\n    - nested: [1, {k: v}]\n",
        "a: |\n  literal\n  text\nb: >\n  folded\n  text\nc: 'single ''q'''\nd: \"esc \\t "
        "\\u00e9\"\n",
        "a:\nb: ~\nc: null\nd: ''\n? [complex, key]\n: value\n? {m: 1}\n",
        "base: &b {x: 1, y: [1, 2]}\nother: *b\nlist: &l [a, &s scalar]\nagain: [*l, *s]\n"
        "merged: {<<: *b, z: 3}\n",
        "&root\nk: v\n",
        "s: !!str 1\nt: ! plain\nu: !custom y\nm: !!map {a: 1}\nq: !!seq [1]\nv: !<tag:x> z\n",
        "%YAML 1.1\n%TAG !e! tag:example.com,2000:\n---\n!e!foo bar: !e!baz [1]\n...\n",
        "nul: \"a\\0b\"\n",
        "# only a comment\n",
        "",
        "--- x\n",
        "plain scalar root\n",
        "[1, 2, 3]\n",
        "key: \xc3\xa9t\xc3\xa9\n",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        compare_str(texts[i], 0);
    assert_int_equal(compare_str("a: 1\n---\nb: 2\n--- [3]\n...\n", 0), 3);
    assert_int_equal(compare_str("---\n...\n---\n...\n", 0), 2);
    assert_int_equal(compare_str("", 0), 0);
}

static void test_errors(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "a: *nope\n",
        "a: &x 1\nb: &x 2\n",
        "a: &x 1\nb:\n  c: &x [2]\n",
        "a: [1, 2\n",
        "a: b: c\n",
        "a:\n\t- x\n",
        "a: \xff\n",
        "a: \"\\q\"\n",
        "a: 1\n---\n[\n",
        "a: 1\n---\nb: *a\n",
        "{a: 1\n",
        "- a\nb: c\n",
        "%YAML 2.0\n---\na\n",
        "!<bad tag\n",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        compare_str(texts[i], 1);
}

/* The bench's shape (JSON flow mappings, one model a line), many models. */
static void test_many_models(void **state)
{
    (void)state;
    size_t cap = 1 << 20, len = 0;
    char *text = xmalloc(cap);
    len += (size_t)snprintf(text + len, cap - len,
                            "listen: 127.0.0.1:8080\ndefaults: { ttl: 10m }\nmodels:\n");
    for (int i = 0; i < 300; i++)
        len += (size_t)snprintf(text + len, cap - len,
                                "  model-%04d: {\"engine\":\"vllm\",\"cmd\":\"mock --port "
                                "${PORT} --name ${NAME}\",\"aliases\":[\"alias-%d\"]}\n",
                                i, i);
    assert_int_equal(compare(text, len, 0), 1);
    free(text);
}

/* Deep nesting: the composer keeps its own stack, not the C one. */
static void test_deep(void **state)
{
    (void)state;
    enum { DEPTH = 5000 };
    char *text = xmalloc(2 * DEPTH + 2);
    memset(text, '[', DEPTH);
    memset(text + DEPTH, ']', DEPTH);
    text[2 * DEPTH] = '\n';
    text[2 * DEPTH + 1] = '\0';
    yaml_parser_t ps;
    assert_true(yaml_parser_initialize(&ps));
    yaml_parser_set_input_string(&ps, (const unsigned char *)text, 2 * DEPTH + 1);
    struct config__doc d;
    assert_int_equal(config__load_doc(&ps, &d), 1);
    assert_int_equal(d.doc.nodes.top - d.doc.nodes.start, DEPTH);
    for (int i = 0; i < DEPTH - 1; i++) {
        const yaml_node_t *n = &d.doc.nodes.start[i];
        assert_int_equal(n->type, YAML_SEQUENCE_NODE);
        assert_int_equal(n->data.sequence.items.top - n->data.sequence.items.start, 1);
        assert_int_equal(n->data.sequence.items.start[0], i + 2);
    }
    config__doc_release(&d);
    yaml_parser_delete(&ps);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trees),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_many_models),
        cmocka_unit_test(test_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
