/* Aligned tables for the CLI's listings (ps, gpus). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "cli/cli.h"

char *cli_one_line(const char *s)
{
    char *r = xstrdup(s);
    for (char *p = r; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return r;
}

void cli_table_print(char **cells, size_t n_rows, int n_cols, FILE *out,
                     void (*after_row)(size_t row, void *arg), void *arg)
{
    size_t *width = xcalloc((size_t)n_cols, sizeof *width);
    for (int k = 0; k < n_cols; k++)
        for (size_t i = 0; i < n_rows; i++) {
            size_t w = strlen(cells[i * (size_t)n_cols + (size_t)k]);
            if (w > width[k])
                width[k] = w;
        }
    for (size_t i = 0; i < n_rows; i++) {
        for (int k = 0; k < n_cols; k++) {
            const char *s = cells[i * (size_t)n_cols + (size_t)k];
            if (k == n_cols - 1)
                fprintf(out, "%s\n", s);
            else
                fprintf(out, "%-*s  ", (int)width[k], s);
        }
        if (i > 0 && after_row)
            after_row(i - 1, arg);
    }
    for (size_t i = 0; i < n_rows * (size_t)n_cols; i++)
        free(cells[i]);
    free(cells);
    free(width);
}
