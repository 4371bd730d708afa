/* What the DKIM subcommands share. Included only by src/cli/dkim*_cmd.c. */
#ifndef SLUICE_CLI_DKIM_CMD_INT_H
#define SLUICE_CLI_DKIM_CMD_INT_H

#include <stddef.h>

#define MAX_MESSAGE (256 * 1024 * 1024) /* refuse to slurp anything larger */

char *dkim_cmd_to_crlf(const char *in, size_t len, size_t *out_len);

#endif
