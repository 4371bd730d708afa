/* sluice: one binary, many subcommands. This file only dispatches. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"serve", cli_serve, "run the relay"},
    {"config", cli_config, "check | dump the configuration"},
    {"queue", cli_queue, "list | show | retry | hold | release | delete | dead | flush | stats"},
    {"users", cli_users, "add | list SMTP AUTH users"},
    {"dkim", cli_dkim, "keygen | sign: DKIM keys and signatures"},
    {"verify", cli_verify, "verify the DKIM signatures of a message"},
    {"spf", cli_spf, "check: evaluate SPF for an IP and sender"},
    {"check-domain", cli_check_domain, "check SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT, DANE, rDNS"},
    {"dns-records", cli_dns_records, "print the DNS records to publish"},
    {"creds", cli_creds, "add | list | show | revoke | rotate | delete credentials"},
    {"stats", cli_stats, "per-credential counters of accepted, delivered, bounced mail"},
    {"audit", cli_audit, "verify: check the audit log's hash chain"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: sluice COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
    /* Every file any command makes (stores, keys, spool, capture, sockets)
     * starts private to its owner; open() modes only narrow this further. */
    umask(077);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sluice: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
