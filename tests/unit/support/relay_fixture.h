/* The relay context unit tests start from: a temporary var_dir, the config
 * "[server] var_dir = DIR, hostname = relay.test" followed by the test's own
 * text (which may go on with more [server] keys), an event base and a real
 * spool. The test adds the parts it drives and frees them before close. */
#ifndef SLUICE_TESTS_RELAY_FIXTURE_H
#define SLUICE_TESTS_RELAY_FIXTURE_H

#include "core/relay.h"

#include <stddef.h>

#define RELAY_FIXTURE_DIR_MAX 64

/* dir receives the temporary folder; fails the test on any error. */
void relay_fixture_open(struct relay *r, char dir[RELAY_FIXTURE_DIR_MAX], const char *extra);

/* Closes the spool, the base and the config, and removes the folder. */
void relay_fixture_close(struct relay *r, const char *dir);

#endif
