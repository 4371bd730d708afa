/* `sluice spf check`: evaluates SPF (RFC 7208) for a client address and
 * sender, against live DNS or a zone file, and prints the result, the
 * explanation and the lookup count. A debugging aid for the domains the
 * relay sends for. */
#include <arpa/inet.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "mailauth/dns.h"
#include "mailauth/spf.h"

static const char spf_usage[] =
    "usage: sluice spf check --ip IP --sender ADDR [--helo NAME] [--dns-zone FILE] [--json]\n"
    "  --ip IP          client address (IPv4 or IPv6)\n"
    "  --sender ADDR    MAIL FROM address; empty (\"\") checks the HELO name instead\n"
    "  --helo NAME      HELO/EHLO name\n"
    "  --dns-zone FILE  answer DNS from FILE (lines 'name TYPE value') instead of the network\n"
    "  --json           print one JSON object\n"
    "exit status: 0 pass, 5 neutral/none/softfail, 4 fail/temperror/permerror, 2 bad usage\n";

static int exit_code(enum spf_result r)
{
    switch (r) {
    case SPF_PASS:
        return CLI_EXIT_OK;
    case SPF_NEUTRAL:
    case SPF_NONE:
    case SPF_SOFTFAIL:
        return CLI_EXIT_CHECK_WARN;
    default:
        return CLI_EXIT_CHECK_FAIL;
    }
}

static void print_text(const struct spf_outcome *out)
{
    printf("result: %s\n", spf_result_name(out->result));
    printf("domain: %s\n", out->domain ? out->domain : "");
    if (out->mechanism)
        printf("mechanism: %s\n", out->mechanism);
    if (out->explanation)
        printf("explanation: %s\n", out->explanation);
    if (out->problem)
        printf("problem: %s\n", out->problem);
    printf("dns lookups: %u (void: %u)\n", out->dns_lookups, out->void_lookups);
}

static int print_json(const struct spf_outcome *out)
{
    json_t *o = json_object();
    if (!o)
        return -1;
    json_object_set_new(o, "result", json_string(spf_result_name(out->result)));
    json_object_set_new(o, "domain", out->domain ? json_string(out->domain) : json_null());
    json_object_set_new(o, "mechanism", out->mechanism ? json_string(out->mechanism) : json_null());
    json_object_set_new(o, "explanation",
                        out->explanation ? json_string(out->explanation) : json_null());
    json_object_set_new(o, "problem", out->problem ? json_string(out->problem) : json_null());
    json_object_set_new(o, "dns_lookups", json_integer(out->dns_lookups));
    json_object_set_new(o, "void_lookups", json_integer(out->void_lookups));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return -1;
    puts(s);
    free(s);
    return 0;
}

static int spf_check_cmd(const struct cli *cli, int argc, char **argv)
{
    const char *ip = NULL, *sender = NULL, *helo = NULL, *zone = NULL;
    bool json = cli->json;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (strcmp(a, "--ip") == 0)
            slot = &ip;
        else if (strcmp(a, "--sender") == 0)
            slot = &sender;
        else if (strcmp(a, "--helo") == 0)
            slot = &helo;
        else if (strcmp(a, "--dns-zone") == 0)
            slot = &zone;
        else
            return cli_usage_error(cli, spf_usage, "%s '%s'",
                                   a[0] == '-' ? "unknown option" : "unexpected argument", a);
        if (i + 1 >= argc)
            return cli_usage_error(cli, spf_usage, "%s needs a value", a);
        *slot = argv[++i];
    }
    if (!ip || !sender)
        return cli_usage_error(cli, spf_usage, "--ip and --sender are required");
    struct spf_request req;
    memset(&req, 0, sizeof req);
    req.family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(req.family, ip, req.addr) != 1)
        return cli_fail(cli, CLI_ERR_INVALID, "'%s' is not an IPv4 or IPv6 address", ip);
    req.sender = sender;
    req.helo = helo;
    if (!*sender && (!helo || !*helo))
        return cli_fail(cli, CLI_ERR_INVALID,
                        "an empty --sender needs --helo (the HELO identity is checked)");

    struct dns_resolver *dns = zone ? dns_resolver_new_zonefile(zone) : dns_resolver_new_system();
    if (!dns) {
        if (zone)
            return cli_fail(cli, CLI_ERR_INVALID, "zone file: %s", dns_zone_last_error());
        return cli_fail(cli, CLI_ERR_IO, "cannot create a DNS resolver");
    }
    struct spf_outcome out;
    int rc = spf_check(dns, &req, &out);
    dns_resolver_free(dns);
    if (rc < 0)
        return cli_fail(cli, CLI_ERR_IO, "evaluation failed (%s)", strerror(-rc));
    if (json) {
        if (print_json(&out) < 0)
            rc = -1;
    } else {
        print_text(&out);
    }
    int code = rc < 0 ? CLI_EXIT_FAILURE : exit_code(out.result);
    spf_outcome_clear(&out);
    return code;
}

int cli_spf(const struct cli *cli, int argc, char **argv)
{
    if (cli->help)
        return cli_help(spf_usage);
    if (argc >= 2 && strcmp(argv[1], "check") == 0)
        return spf_check_cmd(cli, argc - 1, argv + 1);
    return cli_usage_error(cli, spf_usage,
                           argc >= 2 ? "unknown spf command" : "which spf command?");
}
