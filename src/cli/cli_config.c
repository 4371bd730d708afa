/* Configuration loading shared by the subcommands that read it: the path
 * given, else $SLUICE_CONFIG, else the embedded defaults. */
#include "cli/cli.h"

#include "core/config.h"

#include <stdio.h>
#include <stdlib.h>

extern char **environ;

struct config *cli_load_config(const char *cmd, const char *path)
{
    if (!path || !*path) {
        const char *env = getenv("SLUICE_CONFIG");
        path = env && *env ? env : NULL;
    }
    struct config *cfg = NULL;
    struct config_errors errs = {0};
    if (config_load(path, environ, &cfg, &errs) < 0) {
        for (size_t i = 0; i < errs.n; i++) {
            const struct config_error *e = &errs.v[i];
            if (e->file && e->line)
                fprintf(stderr, "sluice %s: %s:%d: %s\n", cmd, e->file, e->line, e->message);
            else
                fprintf(stderr, "sluice %s: %s%s%s\n", cmd, e->file ? e->file : "",
                        e->file ? ": " : "", e->message);
        }
        fprintf(stderr, "sluice %s: fix the configuration ('sluice config check' explains)\n", cmd);
        config_errors_free(&errs);
        config_free(cfg);
        return NULL;
    }
    config_errors_free(&errs);
    return cfg;
}
