/* The unit tests' relay context (relay_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "unit/support/relay_fixture.h"

#include "core/config.h"
#include "spool/spool.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void relay_fixture_open(struct relay *r, char dir[RELAY_FIXTURE_DIR_MAX], const char *extra)
{
    snprintf(dir, RELAY_FIXTURE_DIR_MAX, "/tmp/sluice-unit-XXXXXX");
    assert_non_null(mkdtemp(dir));
    size_t n = strlen(extra) + 256;
    char *text = malloc(n);
    assert_non_null(text);
    snprintf(text, n, "[server]\nvar_dir = %s\nhostname = relay.test\n%s", dir, extra);
    struct config_errors errs = {0};
    char *envp[] = {NULL};
    int rc = config_load_string(text, "test.conf", envp, &r->cfg, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "config: %s\n", errs.v[i].message);
    config_errors_free(&errs);
    free(text);
    assert_int_equal(rc, 0);
    r->base = event_base_new();
    assert_non_null(r->base);
    char err[512];
    assert_int_equal(spool_open(r->cfg->spool_dir, r->base, &r->spool, err, sizeof err), 0);
}

void relay_fixture_close(struct relay *r, const char *dir)
{
    spool_close(r->spool);
    event_base_free(r->base);
    config_free(r->cfg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}
