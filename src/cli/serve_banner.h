/* The start-up summary `sluice serve` prints for a person. */
#ifndef SLUICE_CLI_SERVE_BANNER_H
#define SLUICE_CLI_SERVE_BANNER_H

#include <stdio.h>

struct config;

/* relay_nets: the networks in force (relay_networks with "auto" resolved);
 * program: how the binary was invoked, for the example commands. */
void serve_banner(FILE *out, const struct config *cfg, const char *config_path,
                  const char *relay_nets, const char *program);

#endif
