/* Subcommands of the sluice binary. main.c reads the options every verb
 * shares (-c/--config, --json, -h/--help) wherever they stand, then calls
 * `int cli_NAME(const struct cli *cli, int argc, char **argv)` with those
 * options removed; argv[0] is the command name. docs/CLI.md documents the
 * exit statuses below and the JSON error shape. */
#ifndef SLUICE_CLI_CLI_H
#define SLUICE_CLI_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Exit statuses, the same for every verb, with or without --json. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILURE 1    /* the work could not be done: I/O, daemon, store, config */
#define CLI_EXIT_USAGE 2      /* bad or stray arguments, unknown verb or option */
#define CLI_EXIT_NOT_FOUND 3  /* no such credential or message; no store yet (--init) */
#define CLI_EXIT_CHECK_FAIL 4 /* a checker ran and found failures */
#define CLI_EXIT_CHECK_WARN 5 /* a checker ran and found only warnings, or no verdict */

/* Error codes of the JSON error shape {"error": {"code": ..., "message": ...}}. */
enum cli_error {
    CLI_ERR_USAGE,      /* "usage", exit 2 */
    CLI_ERR_INVALID,    /* "invalid_argument", exit 2: a value was rejected */
    CLI_ERR_NOT_FOUND,  /* "not_found", exit 3 */
    CLI_ERR_NEEDS_INIT, /* "needs_init", exit 3: the store does not exist */
    CLI_ERR_CONFIG,     /* "config", exit 1: the configuration does not load */
    CLI_ERR_EXISTS,     /* "exists", exit 1 */
    CLI_ERR_DAEMON,     /* "daemon", exit 1: cannot reach or understand the daemon */
    CLI_ERR_LOCKED,     /* "locked", exit 1: another daemon holds var_dir */
    CLI_ERR_IO,         /* "io", exit 1: a file, database or system call failed */
};

/* What main.c parsed for every verb. */
struct cli {
    const char *verb;        /* "creds", for messages */
    const char *config_path; /* -c/--config, else $SLUICE_CONFIG, else NULL (embedded defaults) */
    bool json;               /* --json: results and errors as JSON on stdout */
    bool help;               /* -h/--help: print help, touch nothing */
};

int cli_serve(const struct cli *cli, int argc, char **argv);
int cli_config(const struct cli *cli, int argc, char **argv);       /* config check|dump|docs */
int cli_queue(const struct cli *cli, int argc, char **argv);        /* queue list|show|retry|... */
int cli_dkim(const struct cli *cli, int argc, char **argv);         /* dkim keygen|sign */
int cli_verify(const struct cli *cli, int argc, char **argv);       /* verify FILE.eml */
int cli_check_domain(const struct cli *cli, int argc, char **argv); /* check-domain DOMAIN */
int cli_dns_records(const struct cli *cli, int argc, char **argv);  /* dns-records */
int cli_spf(const struct cli *cli, int argc, char **argv);          /* spf check */
int cli_audit(const struct cli *cli, int argc, char **argv);        /* audit verify [FILE...] */
int cli_creds(const struct cli *cli, int argc, char **argv);        /* creds add|list|...|import */
int cli_stats(const struct cli *cli, int argc, char **argv);        /* stats [--cred] [--since] */
int cli_users(const struct cli *cli, int argc, char **argv);        /* moved: says so, exits 2 */
int cli_sendmail(const struct cli *cli, int argc, char **argv); /* sendmail(1); sysexits codes */
int cli_send(const struct cli *cli, int argc, char **argv);     /* send --from --to ... */
int cli_outbox(const struct cli *cli, int argc, char **argv);   /* outbox flush|list */

/* Reports an error: "sluice VERB: message" on stderr and, with --json, the
 * JSON error shape on stdout. Returns the exit status of code. */
__attribute__((format(printf, 3, 4))) int cli_fail(const struct cli *cli, enum cli_error code,
                                                   const char *fmt, ...);

/* A usage error: the message (when fmt is not NULL) and the usage text on
 * stderr, the JSON error with --json. Returns CLI_EXIT_USAGE. */
__attribute__((format(printf, 3, 4))) int cli_usage_error(const struct cli *cli, const char *usage,
                                                          const char *fmt, ...);

/* Prints help text on stdout; returns CLI_EXIT_OK. */
int cli_help(const char *usage);

struct config;

/* Loads cli->config_path (or the embedded defaults); reports the problems
 * through cli_fail and returns NULL when the configuration is not valid.
 * Allocates; config_free it. */
struct config *cli_load_config(const struct cli *cli);

/* Says where the configuration came from, for messages: the path, or
 * "embedded defaults (no -c FILE or SLUICE_CONFIG)". */
const char *cli_config_origin(const struct cli *cli);

/* The whole of path ("-": standard input) in a malloc'd, NUL-terminated
 * buffer, at most max bytes (errno EFBIG past it); NULL with errno set. */
char *cli_read_all(const char *path, size_t max, size_t *len);

/* A store file the verb reads (creds_db, ...). Returns 0 when path exists.
 * When it does not: with init, creates its folder and returns 0 (the caller
 * then creates the store); without, reports CLI_ERR_NEEDS_INIT naming the
 * path and the configuration, and returns its exit status. */
int cli_need_store(const struct cli *cli, const char *what, const char *path, bool init);

#endif
