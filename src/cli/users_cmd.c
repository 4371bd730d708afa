/* `sluice users` was the second user store (an argon2id users file); the
 * credential store replaced it. The verb stays only to say where it went. */
#include "cli/cli.h"

int cli_users(const struct cli *cli, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_usage_error(cli, NULL,
                           "the users verb moved: 'sluice creds add NAME --password' adds a "
                           "credential, 'sluice creds import FILE' imports an old users file");
}
