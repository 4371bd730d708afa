/* `sluice config check|dump|docs`: validates a configuration and names every
 * problem with its place, prints the effective settings as a loadable file,
 * or prints the key reference that docs/CONFIG.md embeds. */
#include "cli/cli.h"
#include "core/config.h"
#include "core/secrets.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static int usage(FILE *f, int status)
{
    fprintf(f, "usage: sluice config check [--json] [FILE]\n"
               "       sluice config dump [--json] [FILE]\n"
               "       sluice config docs\n"
               "FILE defaults to $SLUICE_CONFIG, else the embedded defaults are checked.\n"
               "SLUICE_<SECTION>_<KEY> and SLUICE_UPSTREAM_<NAME>_<KEY> override the file.\n");
    return status;
}

static void print_error(FILE *f, const struct config_error *e)
{
    if (e->file && e->line > 0)
        fprintf(f, "%s:%d: %s\n", e->file, e->line, e->message);
    else if (e->file)
        fprintf(f, "%s: %s\n", e->file, e->message);
    else
        fprintf(f, "%s\n", e->message);
}

static json_t *errors_json(const struct config_errors *errs)
{
    json_t *a = json_array();
    for (size_t i = 0; i < errs->n; i++) {
        const struct config_error *e = &errs->v[i];
        json_array_append_new(a, json_pack("{s:o, s:i, s:s}", "file",
                                           e->file ? json_string(e->file) : json_null(), "line",
                                           e->line, "message", e->message));
    }
    return a;
}

static int print_json(json_t *j)
{
    int rc = json_dumpf(j, stdout, JSON_INDENT(2)) == 0 ? 0 : 2;
    fputc('\n', stdout);
    json_decref(j);
    return rc;
}

static int check(const char *path, const struct config_errors *errs, bool json)
{
    if (json) {
        json_t *j = json_pack("{s:b, s:o, s:o}", "ok", errs->n == 0, "file",
                              path ? json_string(path) : json_null(), "errors", errors_json(errs));
        int rc = print_json(j);
        return errs->n ? 2 : rc;
    }
    if (errs->n == 0) {
        printf("config OK: %s\n", path ? path : "embedded defaults");
        return 0;
    }
    for (size_t i = 0; i < errs->n; i++)
        print_error(stdout, &errs->v[i]);
    return 2;
}

static int dump(const struct config *cfg, const struct config_errors *errs, bool json)
{
    if (errs->n) {
        for (size_t i = 0; i < errs->n; i++)
            print_error(stderr, &errs->v[i]);
        fprintf(stderr, "not dumping an invalid configuration; run `sluice config check`\n");
        return 2;
    }
    if (json)
        return print_json(config_to_json(cfg));
    config_dump(cfg, stdout);
    return fflush(stdout) == 0 ? 0 : 2;
}

int cli_config(int argc, char **argv)
{
    const char *path = NULL, *sub;
    bool json = false;
    struct config *cfg = NULL;
    struct config_errors errs = {NULL, 0};
    int rc;

    if (argc < 2)
        return usage(stderr, 2);
    sub = argv[1];
    if (!strcmp(sub, "help") || !strcmp(sub, "--help") || !strcmp(sub, "-h"))
        return usage(stdout, 0);
    if (strcmp(sub, "check") != 0 && strcmp(sub, "dump") != 0 && strcmp(sub, "docs") != 0) {
        fprintf(stderr, "sluice config: unknown command '%s'\n", sub);
        return usage(stderr, 2);
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            return usage(stdout, 0);
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "sluice config %s: unknown option '%s'\n", sub, argv[i]);
            return usage(stderr, 2);
        } else if (!path && strcmp(sub, "docs") != 0) {
            path = argv[i];
        } else {
            fprintf(stderr, "sluice config %s: unexpected argument '%s'\n", sub, argv[i]);
            return usage(stderr, 2);
        }
    }
    if (!strcmp(sub, "docs")) {
        config_docs(stdout);
        return 0;
    }
    if (!path) {
        const char *env = getenv("SLUICE_CONFIG");
        if (env && *env)
            path = env;
    }

    config_load(path, environ, &cfg, &errs);
    if (!strcmp(sub, "check")) {
        secrets_check_files(cfg, &errs);
        rc = check(path, &errs, json);
    } else
        rc = dump(cfg, &errs, json);
    config_free(cfg);
    config_errors_free(&errs);
    return rc;
}
