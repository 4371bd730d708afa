/* sluice: one binary, many subcommands. This file reads the options every
 * verb shares, wherever they stand, and dispatches. */
#include "cli/cli.h"
#include "cli/version.h"

#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const struct {
    const char *name;
    int (*fn)(const struct cli *, int, char **);
    const char *help;
} commands[] = {
    {"serve", cli_serve, "run the relay"},
    {"config", cli_config, "check | dump | docs: the configuration"},
    {"queue", cli_queue, "list | show | retry | hold | release | delete | dead | flush | stats"},
    {"creds", cli_creds, "add | list | show | revoke | rotate | delete | import credentials"},
    {"stats", cli_stats, "per-credential counters of accepted, delivered, bounced mail"},
    {"dkim", cli_dkim, "keygen | sign: DKIM keys and signatures"},
    {"verify", cli_verify, "verify the DKIM signatures of a message"},
    {"spf", cli_spf, "check: evaluate SPF for an IP and sender"},
    {"check-domain", cli_check_domain, "check SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT, DANE, rDNS"},
    {"dns-records", cli_dns_records, "print the DNS records to publish"},
    {"audit", cli_audit, "verify: check the audit log's hash chain"},
    {"send", cli_send, "build a message from parts and submit it"},
    {"sendmail", cli_sendmail, "the sendmail(1) interface (also as a link named sendmail)"},
    {"outbox", cli_outbox, "flush | list: the sendmail outbox"},
    {"version", NULL, "print the version"},
    {"users", cli_users, NULL}, /* moved to creds import; kept to say so */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: sluice [-c FILE] [--json] COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].help)
            fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\noptions every command takes, in any position:\n"
               "  -c, --config FILE  the configuration (default $SLUICE_CONFIG, else the\n"
               "                     embedded defaults, which keep state in ./var)\n"
               "  --json             results and errors as JSON on stdout\n"
               "  -h, --help         help of the command; touches nothing\n"
               "  --version          the version\n"
               "exit status: 0 ok, 1 failure, 2 usage error, 3 not found or needs --init,\n"
               "4 a check failed, 5 a check gave warnings (docs/CLI.md)\n");
}

static int print_version(const struct cli *cli)
{
    if (cli->json) {
        json_t *j = json_pack("{s:s}", "version", SLUICE_VERSION);
        char *s = json_dumps(j, JSON_COMPACT);
        printf("%s\n", s ? s : "");
        free(s);
        json_decref(j);
    } else {
        printf("sluice %s\n", SLUICE_VERSION);
    }
    return CLI_EXIT_OK;
}

/* sendmail's options are sendmail(1)'s, not sluice's: called as sendmail,
 * or as `sluice [-c FILE] sendmail ...`, the words after it go through
 * untouched (-h there is a hop count, -C the configuration). Returns -1
 * when this is not such a call. */
static int sendmail_entry(int argc, char **argv)
{
    char *name = strdup(argv[0] ? argv[0] : "");
    bool as_sendmail = name && strcmp(basename(name), "sendmail") == 0;
    free(name);
    struct cli cli = {.verb = "sendmail"};
    int at = 1;
    while (!as_sendmail && at < argc) {
        if ((strcmp(argv[at], "-c") == 0 || strcmp(argv[at], "--config") == 0) && at + 1 < argc) {
            cli.config_path = argv[at + 1];
            at += 2;
        } else if (strncmp(argv[at], "--config=", 9) == 0) {
            cli.config_path = argv[at++] + 9;
        } else {
            break;
        }
    }
    if (!as_sendmail && (at >= argc || strcmp(argv[at], "sendmail") != 0))
        return -1;
    if (as_sendmail)
        at = 0;
    if (!cli.config_path) {
        const char *env = getenv("SLUICE_CONFIG");
        cli.config_path = env && *env ? env : NULL;
    }
    return cli_sendmail(&cli, argc - at, argv + at);
}

int main(int argc, char **argv)
{
    /* Every file any command makes (stores, keys, spool, capture, sockets)
     * starts private to its owner; open() modes only narrow this further. */
    umask(077);
    int sm = sendmail_entry(argc, argv);
    if (sm >= 0)
        return sm;
    struct cli cli = {0};
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int n = 0;
    bool version = false, literal = false;
    if (!args)
        return CLI_EXIT_FAILURE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (literal) {
            args[n++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            literal = true;
            args[n++] = argv[i];
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 ||
                   strncmp(a, "--config=", 9) == 0) {
            const char *v = a[1] == 'c' || a[8] == '\0' ? (i + 1 < argc ? argv[++i] : NULL) : a + 9;
            if (!v || !*v || cli.config_path) {
                int rc = cli_usage_error(
                    &cli, NULL, v && *v ? "-c/--config given twice" : "-c/--config needs a FILE");
                free(args);
                return rc;
            }
            cli.config_path = v;
        } else if (strcmp(a, "--json") == 0) {
            cli.json = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli.help = true;
        } else if (strcmp(a, "--version") == 0 && n == 0) {
            version = true;
        } else {
            args[n++] = argv[i];
        }
    }
    if (!cli.config_path) {
        const char *env = getenv("SLUICE_CONFIG");
        cli.config_path = env && *env ? env : NULL;
    }
    int rc;
    if (version && n > 0) {
        cli.verb = NULL;
        rc = cli_usage_error(&cli, NULL, "--version takes no command ('%s' given)", args[0]);
    } else if (n == 0 && version) {
        rc = print_version(&cli);
    } else if (n == 0 && !cli.help) {
        rc = cli_usage_error(&cli, NULL, "no command given");
        usage(stderr);
    } else if (n == 0 || strcmp(args[0], "help") == 0) {
        usage(stdout);
        rc = CLI_EXIT_OK;
    } else {
        rc = -1;
        for (size_t i = 0; i < sizeof commands / sizeof commands[0] && rc < 0; i++) {
            if (strcmp(args[0], commands[i].name) != 0)
                continue;
            cli.verb = commands[i].name;
            if (!commands[i].fn) /* version */
                rc = n > 1      ? cli_usage_error(&cli, "usage: sluice version [--json]\n",
                                                  "unexpected argument '%s'", args[1])
                     : cli.help ? cli_help("usage: sluice version [--json]\n")
                                : print_version(&cli);
            else
                rc = commands[i].fn(&cli, n, args);
        }
        if (rc < 0) {
            rc = cli_usage_error(&cli, NULL, "unknown command '%s' (sluice --help lists them)",
                                 args[0]);
        }
    }
    free(args);
    return rc;
}
