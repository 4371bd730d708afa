/* Fuzz target for the configuration loader (core/config.c): any text loads
 * without crashing, every problem carries a message, and a configuration that
 * loads cleanly dumps to a file that loads back to the same dump. An input
 * starting with "SLUICE_" uses its first line as an environment entry. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static char *dump_text(const struct config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f);
    config_dump(cfg, f);
    CHECK(fclose(f) == 0);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    char *env[2] = {NULL, NULL};
    struct config *cfg = NULL, *again = NULL;
    struct config_errors errs, errs2;
    long long sz;
    int secs;

    CHECK(text);
    memcpy(text, data, size);
    text[size] = '\0'; /* the file reader stops at a NUL byte as well */
    char *body = text;
    if (strncmp(text, "SLUICE_", 7) == 0) {
        char *nl = strchr(text, '\n');
        env[0] = text;
        body = nl ? nl + 1 : text + strlen(text);
        if (nl)
            *nl = '\0';
    }

    (void)config_parse_size(body, &sz);
    (void)config_parse_duration(body, &secs);

    int rc = config_load_string(body, "fuzz.conf", env, &cfg, &errs);
    CHECK(cfg);
    CHECK((rc == 0) == (errs.n == 0));
    for (size_t i = 0; i < errs.n; i++)
        CHECK(errs.v[i].message && errs.v[i].message[0]);
    if (rc == 0) {
        CHECK(cfg->n_upstreams >= 1);
        for (size_t i = 1; i < cfg->n_upstreams; i++)
            CHECK(cfg->upstreams[i - 1].priority <= cfg->upstreams[i].priority);
        char *first = dump_text(cfg);
        CHECK(config_load_string(first, "dump.conf", NULL, &again, &errs2) == 0);
        char *second = dump_text(again);
        CHECK(strcmp(strchr(first, '\n'), strchr(second, '\n')) == 0);
        free(first);
        free(second);
        config_free(again);
        config_errors_free(&errs2);
    }
    config_free(cfg);
    config_errors_free(&errs);
    free(text);
    return 0;
}
