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

static const char config_usage[] =
    "usage: sluice config check [--json] [FILE]\n"
    "       sluice config dump [--json] [FILE]\n"
    "       sluice config docs [--json]\n"
    "FILE (it wins over -c) defaults to -c FILE, else $SLUICE_CONFIG, else the embedded defaults "
    "are checked.\n"
    "SLUICE_<SECTION>_<KEY> and SLUICE_UPSTREAM_<NAME>_<KEY> override the file.\n"
    "Relative paths in a file are resolved against the file's folder.\n"
    "exit status: 0 valid, 4 check found errors, 1 dump of an invalid file, 2 bad usage\n";

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
    int rc = json_dumpf(j, stdout, JSON_INDENT(2)) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
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
        return errs->n ? CLI_EXIT_CHECK_FAIL : rc;
    }
    if (errs->n == 0) {
        printf("config OK: %s\n", path ? path : "embedded defaults");
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < errs->n; i++)
        print_error(stdout, &errs->v[i]);
    return CLI_EXIT_CHECK_FAIL;
}

static int dump(const struct cli *cli, const struct config *cfg, const struct config_errors *errs)
{
    if (errs->n) {
        for (size_t i = 0; i < errs->n; i++)
            print_error(stderr, &errs->v[i]);
        return cli_fail(cli, CLI_ERR_CONFIG,
                        "not dumping an invalid configuration; run 'sluice config check'");
    }
    if (cli->json)
        return print_json(config_to_json(cfg));
    config_dump(cfg, stdout);
    return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}

int cli_config(const struct cli *cli, int argc, char **argv)
{
    const char *path = NULL, *sub;
    struct config *cfg = NULL;
    struct config_errors errs = {NULL, 0};
    int rc;

    if (cli->help)
        return cli_help(config_usage);
    if (argc < 2)
        return cli_usage_error(cli, config_usage, "which config command?");
    sub = argv[1];
    if (!strcmp(sub, "help"))
        return cli_help(config_usage);
    if (strcmp(sub, "check") != 0 && strcmp(sub, "dump") != 0 && strcmp(sub, "docs") != 0)
        return cli_usage_error(cli, config_usage, "unknown config command '%s'", sub);
    for (int i = 2; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] != '\0')
            return cli_usage_error(cli, config_usage, "config %s: unknown option '%s'", sub,
                                   argv[i]);
        else if (!path && strcmp(sub, "docs") != 0)
            path = argv[i];
        else
            return cli_usage_error(cli, config_usage, "config %s: unexpected argument '%s'", sub,
                                   argv[i]);
    }
    if (!strcmp(sub, "docs")) {
        if (cli->json)
            return print_json(config_keys_json());
        config_docs(stdout);
        return CLI_EXIT_OK;
    }
    if (!path)
        path = cli->config_path;

    config_load(path, environ, &cfg, &errs);
    if (!strcmp(sub, "check")) {
        secrets_check_files(cfg, &errs);
        rc = check(path, &errs, cli->json);
    } else
        rc = dump(cli, cfg, &errs);
    config_free(cfg);
    config_errors_free(&errs);
    return rc;
}
