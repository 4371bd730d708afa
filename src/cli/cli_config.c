/* What every subcommand shares: the one place that loads the configuration
 * (-c/--config or $SLUICE_CONFIG, else the embedded defaults), error reports
 * in one shape with one table of exit statuses, and the check that keeps a
 * verb from creating an empty store where the daemon keeps none. */
#include "cli/cli.h"

#include "core/config.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

static const struct {
    const char *name;
    int status;
} errors[] = {
    [CLI_ERR_USAGE] = {"usage", CLI_EXIT_USAGE},
    [CLI_ERR_INVALID] = {"invalid_argument", CLI_EXIT_USAGE},
    [CLI_ERR_NOT_FOUND] = {"not_found", CLI_EXIT_NOT_FOUND},
    [CLI_ERR_NEEDS_INIT] = {"needs_init", CLI_EXIT_NOT_FOUND},
    [CLI_ERR_CONFIG] = {"config", CLI_EXIT_FAILURE},
    [CLI_ERR_EXISTS] = {"exists", CLI_EXIT_FAILURE},
    [CLI_ERR_DAEMON] = {"daemon", CLI_EXIT_FAILURE},
    [CLI_ERR_LOCKED] = {"locked", CLI_EXIT_FAILURE},
    [CLI_ERR_IO] = {"io", CLI_EXIT_FAILURE},
};

static int report(const struct cli *cli, enum cli_error code, const char *msg)
{
    if (cli->json) {
        json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", errors[code].name, "message", msg);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(j);
        fflush(stdout);
    }
    fprintf(stderr, "sluice%s%s: %s\n", cli->verb ? " " : "", cli->verb ? cli->verb : "", msg);
    return errors[code].status;
}

int cli_fail(const struct cli *cli, enum cli_error code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return report(cli, code, msg);
}

int cli_usage_error(const struct cli *cli, const char *usage, const char *fmt, ...)
{
    char msg[1024];
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    } else {
        snprintf(msg, sizeof msg, "bad usage (sluice %s--help explains)",
                 cli->verb ? cli->verb : "");
    }
    report(cli, CLI_ERR_USAGE, msg);
    if (usage)
        fputs(usage, stderr);
    return CLI_EXIT_USAGE;
}

int cli_help(const char *usage)
{
    fputs(usage, stdout);
    return CLI_EXIT_OK;
}

const char *cli_config_origin(const struct cli *cli)
{
    return cli->config_path ? cli->config_path : "embedded defaults (no -c FILE, no SLUICE_CONFIG)";
}

struct config *cli_load_config(const struct cli *cli)
{
    struct config *cfg = NULL;
    struct config_errors errs = {0};
    if (config_load(cli->config_path, environ, &cfg, &errs) == 0) {
        config_errors_free(&errs);
        return cfg;
    }
    char msg[1024];
    size_t n = 0;
    msg[0] = '\0';
    for (size_t i = 0; i < errs.n && n < sizeof msg; i++) {
        const struct config_error *e = &errs.v[i];
        int w;
        if (e->file && e->line)
            w = snprintf(msg + n, sizeof msg - n, "%s%s:%d: %s", i ? "; " : "", e->file, e->line,
                         e->message);
        else
            w = snprintf(msg + n, sizeof msg - n, "%s%s%s%s", i ? "; " : "", e->file ? e->file : "",
                         e->file ? ": " : "", e->message);
        n += w > 0 ? (size_t)w : 0;
    }
    cli_fail(cli, CLI_ERR_CONFIG, "%s (sluice config check explains)", msg);
    config_errors_free(&errs);
    config_free(cfg);
    return NULL;
}

/* mkdir -p for the folder that holds path. */
static int make_parent(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return -1;
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return 0;
    *slash = '\0';
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0750) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

int cli_need_store(const struct cli *cli, const char *what, const char *path, bool init)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return 0;
    if (errno != ENOENT)
        return cli_fail(cli, CLI_ERR_IO, "%s %s: %s", what, path, strerror(errno));
    char cwd[4096] = "";
    const char *shown = path;
    if (path[0] != '/' && !getcwd(cwd, sizeof cwd))
        cwd[0] = '\0';
    while (cwd[0] && shown[0] == '.' && shown[1] == '/')
        shown += 2;
    if (!init)
        return cli_fail(cli, CLI_ERR_NEEDS_INIT,
                        "no %s at %s%s%s (configuration: %s); point -c FILE or SLUICE_CONFIG at "
                        "the daemon's configuration, or pass --init to create a new one there",
                        what, cwd, cwd[0] ? "/" : "", shown, cli_config_origin(cli));
    if (make_parent(path) < 0)
        return cli_fail(cli, CLI_ERR_IO, "cannot create the folder of %s: %s", path,
                        strerror(errno));
    return 0;
}

/* Reads a whole file ("-" = stdin) into a NUL-terminated buffer. */
char *cli_read_all(const char *path, size_t max, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f)
        return NULL;
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap >= max) {
                free(buf);
                buf = NULL;
                errno = EFBIG;
                break;
            }
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                free(buf);
                buf = NULL;
            }
            break;
        }
    }
    if (f != stdin)
        fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}
