/* Subcommands of the sluice binary. main.c only dispatches: each command is
 * `int cli_NAME(int argc, char **argv)` where argv[0] is the command name.
 * Exit status: 0 success, 1 warnings / not found, 2 errors or bad usage. */
#ifndef SLUICE_CLI_CLI_H
#define SLUICE_CLI_CLI_H

int cli_serve(int argc, char **argv);
int cli_config(int argc, char **argv); /* config check | config dump */
int cli_queue(int argc, char **argv);  /* queue list|show|retry|hold|release|delete|dead|flush */
int cli_users(int argc, char **argv);  /* users add|list (argon2id users file) */
int cli_dkim(int argc, char **argv);   /* dkim keygen ... */
int cli_verify(int argc, char **argv); /* verify FILE.eml */
int cli_check_domain(int argc, char **argv); /* check-domain DOMAIN */
int cli_dns_records(int argc, char **argv);  /* dns-records */
int cli_spf(int argc, char **argv);          /* spf check (debug tool) */
int cli_audit(int argc, char **argv);        /* audit verify FILE... */
int cli_creds(int argc, char **argv);        /* creds add|list|show|revoke|rotate|delete */
int cli_stats(int argc, char **argv);        /* stats [--cred] [--since] */

struct config;

/* Loads path (or $SLUICE_CONFIG, or the embedded defaults when both are
 * unset); prints the errors prefixed with "sluice CMD:" and returns NULL
 * when the configuration is not valid. Allocates; config_free it. */
struct config *cli_load_config(const char *cmd, const char *path);

#endif
