/* `sluice check-domain` and `sluice dns-records`: the operator's view of
 * what receivers see for a sending domain, and the records that make it
 * right. The checks and the record set come from mailauth/domaincheck;
 * this file reads options and configuration and formats the results. */
#include "cli/cli.h"
#include "core/config.h"
#include "mailauth/dns.h"
#include "mailauth/domaincheck.h"
#include "mailauth/psl.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#define MAX_SELECTORS 16
#define MAX_DOMAINS 64

/* ANSI SGR colours for the status column */
#define COLOR_PASS "\033[32m"
#define COLOR_WARN "\033[33m"
#define COLOR_FAIL "\033[31m"
#define COLOR_DIM "\033[2m"
#define COLOR_OFF "\033[0m"

/* Host names of the configured smarthosts (capture upstreams send nothing). */
static size_t upstream_hosts(const struct config *cfg, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_upstreams && n < max; i++)
        if (!cfg->upstreams[i].capture && cfg->upstreams[i].host && *cfg->upstreams[i].host)
            out[n++] = cfg->upstreams[i].host;
    return n;
}

/* Sets *rc to the exit status when the resolver cannot be made. */
static struct dns_resolver *open_resolver(const struct cli *cli, const char *zone, int *rc)
{
    struct dns_resolver *r = zone ? dns_resolver_new_zonefile(zone) : dns_resolver_new_system();
    if (!r && zone)
        *rc = cli_fail(cli, CLI_ERR_INVALID, "zone file %s: %s", zone, dns_zone_last_error());
    else if (!r)
        *rc = cli_fail(cli, CLI_ERR_IO, "cannot set up the DNS resolver");
    return r;
}

/* ---- check-domain ------------------------------------------------------------------ */

static const char check_usage[] =
    "usage: sluice check-domain DOMAIN [--selector S]... [--sending-ip IP]\n"
    "                           [--dns-zone FILE] [--json] [--no-color] [-c FILE]\n"
    "                           [--mta-sts-url-base URL] [--ca-file FILE]\n"
    "Checks SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT, DANE and reverse DNS of DOMAIN as\n"
    "receivers see them, and says how to fix each problem. DKIM selectors come from\n"
    "--selector and the keys in the configured dkim key_dir.\n"
    "  --sending-ip IP          address mail leaves from (SPF, PTR, forward-confirmed rDNS)\n"
    "  --dns-zone FILE          answer DNS from FILE instead of the network\n"
    "  --mta-sts-url-base URL   fetch the MTA-STS policy from URL/.well-known/mta-sts.txt\n"
    "                           ({domain} in URL is replaced by DOMAIN)\n"
    "  --ca-file FILE           trust these CAs for the policy fetch\n"
    "exit status: 0 all pass, 5 warnings, 4 failures, 2 bad usage, 1 cannot check\n";

static const char *status_color(enum dc_status s)
{
    return s == DC_FAIL ? COLOR_FAIL : s == DC_WARN ? COLOR_WARN : COLOR_PASS;
}

static void print_report_text(const struct dc_report *r, bool color)
{
    printf("check-domain %s\n", r->domain);
    for (size_t i = 0; i < r->count; i++) {
        const struct dc_finding *f = &r->findings[i];
        char tag[8];
        snprintf(tag, sizeof(tag), "%s", dc_status_name(f->status));
        for (char *p = tag; *p; p++)
            *p = (char)(*p - 32);
        printf("  %s%-4s%s  %-18s %s\n", color ? status_color(f->status) : "", tag,
               color ? COLOR_OFF : "", f->check, f->message);
        if (f->fix)
            printf("        %s%-18s fix: %s%s\n", color ? COLOR_DIM : "", "", f->fix,
                   color ? COLOR_OFF : "");
    }
    size_t counts[3];
    dc_report_counts(r, counts);
    printf("summary: %zu pass, %zu warn, %zu fail\n", counts[DC_PASS], counts[DC_WARN],
           counts[DC_FAIL]);
}

static int print_report_json(const struct dc_report *r)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < r->count; i++) {
        const struct dc_finding *f = &r->findings[i];
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s?}", "check", f->check, "status",
                                             dc_status_name(f->status), "message", f->message,
                                             "fix", f->fix));
    }
    size_t counts[3];
    dc_report_counts(r, counts);
    json_t *o = json_pack("{s:s, s:o, s:{s:I, s:I, s:I, s:s}}", "domain", r->domain, "findings",
                          arr, "summary", "pass", (json_int_t)counts[DC_PASS], "warn",
                          (json_int_t)counts[DC_WARN], "fail", (json_int_t)counts[DC_FAIL],
                          "status", dc_status_name(dc_report_status(r)));
    char *s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    if (!s)
        return -1;
    puts(s);
    free(s);
    return 0;
}

int cli_check_domain(const struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"selector", required_argument, NULL, 's'},
                                         {"sending-ip", required_argument, NULL, 'i'},
                                         {"dns-zone", required_argument, NULL, 'z'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"no-color", no_argument, NULL, 'n'},
                                         {"mta-sts-url-base", required_argument, NULL, 'u'},
                                         {"ca-file", required_argument, NULL, 'a'},
                                         {NULL, 0, NULL, 0}};
    const char *selectors[MAX_SELECTORS];
    size_t nsel = 0;
    const char *ip = NULL, *zone = NULL, *url_base = NULL, *ca_file = NULL;
    bool json = cli->json, no_color = false;
    int c;
    if (cli->help)
        return cli_help(check_usage);
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (nsel == MAX_SELECTORS)
                return cli_fail(cli, CLI_ERR_INVALID, "at most %d selectors", MAX_SELECTORS);
            selectors[nsel++] = optarg;
            break;
        case 'i':
            ip = optarg;
            break;
        case 'z':
            zone = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'n':
            no_color = true;
            break;
        case 'u':
            url_base = optarg;
            break;
        case 'a':
            ca_file = optarg;
            break;
        default:
            return cli_usage_error(cli, check_usage, NULL);
        }
    }
    if (optind > argc - 1)
        return cli_usage_error(cli, check_usage, "check-domain needs a DOMAIN");
    if (optind < argc - 1)
        return cli_usage_error(cli, check_usage, "unexpected argument '%s'", argv[optind + 1]);
    const char *domain = argv[optind];
    struct config *cfg = cli_load_config(cli);
    if (!cfg)
        return CLI_EXIT_FAILURE;
    const char *hosts[64];
    size_t nhosts = upstream_hosts(cfg, hosts, 64);
    int rc = CLI_EXIT_FAILURE;
    struct dns_resolver *dns = open_resolver(cli, zone, &rc);
    struct psl *psl = psl_new_from_file(NULL);
    if (!dns)
        goto out;
    struct mtasts_fetch_opts fetch = {.url_base = url_base, .ca_file = ca_file};
    struct dc_options o = {.selectors = selectors,
                           .nselectors = nsel,
                           .key_dir = cfg->dkim_key_dir,
                           .upstream_hosts = hosts,
                           .nupstreams = nhosts,
                           .sending_ip = ip,
                           .mta_sts = &fetch,
                           .psl = psl};
    struct dc_report rep;
    int r = domaincheck_run(dns, domain, &o, &rep);
    if (r < 0) {
        rc = r == -EINVAL ? cli_fail(cli, CLI_ERR_INVALID, "not a domain name (example.com)")
                          : cli_fail(cli, CLI_ERR_IO, "out of memory");
        goto out;
    }
    bool color = !no_color && !json && isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
    if (json ? print_report_json(&rep) : (print_report_text(&rep, color), 0)) {
        fprintf(stderr, "sluice check-domain: out of memory\n");
    } else {
        enum dc_status st = dc_report_status(&rep);
        rc = st == DC_FAIL   ? CLI_EXIT_CHECK_FAIL
             : st == DC_WARN ? CLI_EXIT_CHECK_WARN
                             : CLI_EXIT_OK;
    }
    dc_report_clear(&rep);
out:
    psl_free(psl);
    dns_resolver_free(dns);
    config_free(cfg);
    return rc;
}

/* ---- dns-records ------------------------------------------------------------------- */

static const char records_usage[] =
    "usage: sluice dns-records [--domain D]... [--format bind|json] [--dns-zone FILE]\n"
    "                          [--sending-ip IP] [--dmarc-policy none|quarantine|reject]\n"
    "                          [--mta-sts-mode testing|enforce] [-c FILE]\n"
    "Prints the DNS records to publish for the configured set-up: SPF (with the\n"
    "upstreams' includes), DKIM (from the keys in the dkim key_dir), DMARC, MTA-STS\n"
    "(record and policy file) and TLS-RPT. Domains default to those with DKIM keys.\n"
    "The MX hosts for the MTA-STS policy are looked up (--dns-zone or DNS).\n";

/* MX hosts of domain, best preference first (into hosts, malloc'd each). */
static size_t lookup_mx(struct dns_resolver *dns, const char *domain, char **hosts, size_t max)
{
    struct dns_result res;
    size_t n = 0;
    if (!dns || dns_lookup(dns, domain, DNS_T_MX, &res) < 0 || res.status != DNS_OK) {
        if (dns)
            dns_result_clear(&res);
        return 0;
    }
    while (n < max) {
        size_t best = res.count;
        for (size_t i = 0; i < res.count; i++)
            if (res.rr[i].host && res.rr[i].host[0] && strcmp(res.rr[i].host, ".") &&
                (best == res.count || res.rr[i].pref < res.rr[best].pref))
                best = i;
        if (best == res.count)
            break;
        hosts[n++] = res.rr[best].host;
        res.rr[best].host = NULL;
    }
    dns_result_clear(&res);
    return n;
}

static void print_txt_strings(const char *v)
{
    size_t len = strlen(v);
    for (size_t i = 0; i == 0 || i < len; i += DC_TXT_STRING_MAX) {
        size_t n = len - i < DC_TXT_STRING_MAX ? len - i : DC_TXT_STRING_MAX;
        printf("%s\"", i ? " " : "");
        for (size_t k = 0; k < n; k++) {
            char ch = v[i + k];
            if (ch == '"' || ch == '\\')
                putchar('\\');
            putchar(ch);
        }
        putchar('"');
    }
}

static void print_records_bind(const struct dc_records *r)
{
    printf("; DNS records for %s (sluice dns-records)\n", r->domain);
    for (size_t i = 0; i < r->count; i++) {
        printf("; %s\n%s. %s ", r->records[i].comment, r->records[i].name, r->records[i].type);
        print_txt_strings(r->records[i].value);
        putchar('\n');
    }
    printf("; MTA-STS policy file: serve at %s as text/plain\n"
           "; (mta-sts.%s needs an A/AAAA record and a certificate valid for that name):\n",
           r->mta_sts_url, r->domain);
    const char *p = r->mta_sts_policy;
    while (*p) {
        size_t n = strcspn(p, "\r\n");
        printf(";   %.*s\n", (int)n, p);
        p += n;
        while (*p == '\r' || *p == '\n')
            p++;
    }
}

static json_t *records_json(const struct dc_records *r)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < r->count; i++) {
        const char *v = r->records[i].value;
        size_t len = strlen(v);
        json_t *strings = json_array();
        for (size_t k = 0; strings && (k == 0 || k < len); k += DC_TXT_STRING_MAX)
            json_array_append_new(
                strings,
                json_stringn(v + k, len - k < DC_TXT_STRING_MAX ? len - k : DC_TXT_STRING_MAX));
        json_array_append_new(arr,
                              json_pack("{s:s, s:s, s:s, s:o, s:s}", "name", r->records[i].name,
                                        "type", r->records[i].type, "value", v, "strings", strings,
                                        "comment", r->records[i].comment));
    }
    return json_pack("{s:s, s:o, s:{s:s, s:s}}", "domain", r->domain, "records", arr,
                     "mta_sts_policy", "url", r->mta_sts_url, "body", r->mta_sts_policy);
}

int cli_dns_records(const struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"domain", required_argument, NULL, 'd'},
                                         {"format", required_argument, NULL, 'f'},
                                         {"dns-zone", required_argument, NULL, 'z'},
                                         {"sending-ip", required_argument, NULL, 'i'},
                                         {"dmarc-policy", required_argument, NULL, 'p'},
                                         {"mta-sts-mode", required_argument, NULL, 'm'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    const char *domains[MAX_DOMAINS];
    size_t ndom = 0;
    const char *zone = NULL, *ip = NULL, *dmarc = "none";
    enum mtasts_mode mode = MTASTS_MODE_TESTING;
    bool json = cli->json;
    int c;
    if (cli->help)
        return cli_help(records_usage);
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (ndom == MAX_DOMAINS)
                return cli_fail(cli, CLI_ERR_INVALID, "at most %d domains", MAX_DOMAINS);
            domains[ndom++] = optarg;
            break;
        case 'f':
            if (strcmp(optarg, "json") && strcmp(optarg, "bind"))
                return cli_fail(cli, CLI_ERR_INVALID, "--format is bind or json");
            json = strcmp(optarg, "json") == 0;
            break;
        case 'j':
            json = true;
            break;
        case 'z':
            zone = optarg;
            break;
        case 'i':
            ip = optarg;
            break;
        case 'p':
            dmarc = optarg;
            break;
        case 'm':
            if (!strcmp(optarg, "testing"))
                mode = MTASTS_MODE_TESTING;
            else if (!strcmp(optarg, "enforce"))
                mode = MTASTS_MODE_ENFORCE;
            else
                return cli_fail(cli, CLI_ERR_INVALID, "--mta-sts-mode is testing or enforce");
            break;
        default:
            return cli_usage_error(cli, records_usage, NULL);
        }
    }
    if (optind != argc)
        return cli_usage_error(cli, records_usage, "unexpected argument '%s'", argv[optind]);
    struct config *cfg = cli_load_config(cli);
    if (!cfg)
        return CLI_EXIT_FAILURE;
    int rc = CLI_EXIT_FAILURE;
    struct dc_local_key *keys = NULL;
    size_t nkeys = 0;
    struct dns_resolver *dns = NULL;
    json_t *all = json ? json_array() : NULL;
    if (ndom == 0) {
        /* every domain with a key, once */
        dc_local_keys(cfg->dkim_key_dir, NULL, &keys, &nkeys);
        for (size_t i = 0; i < nkeys && ndom < MAX_DOMAINS; i++)
            if (ndom == 0 || strcasecmp(domains[ndom - 1], keys[i].domain) != 0)
                domains[ndom++] = keys[i].domain;
        if (ndom == 0) {
            rc = cli_fail(cli, CLI_ERR_NOT_FOUND,
                          "no DKIM keys in %s (configuration: %s); pass --domain D or make a key "
                          "with sluice dkim keygen --domain D --selector S",
                          cfg->dkim_key_dir, cli_config_origin(cli));
            goto out;
        }
    }
    if (!(dns = open_resolver(cli, zone, &rc)))
        goto out;
    const char *hosts[64];
    size_t nhosts = upstream_hosts(cfg, hosts, 64);
    rc = 0;
    for (size_t d = 0; d < ndom && rc == 0; d++) {
        char *mx[32];
        size_t nmx = lookup_mx(dns, domains[d], mx, 32);
        struct dc_records_options ro = {.upstream_hosts = hosts,
                                        .nupstreams = nhosts,
                                        .sending_ip = ip,
                                        .key_dir = cfg->dkim_key_dir,
                                        .dmarc_policy = dmarc,
                                        .sts_mode = mode,
                                        .mx_hosts = (const char *const *)mx,
                                        .nmx = nmx};
        struct dc_records recs;
        char err[300] = "out of memory";
        if (dc_records_build(domains[d], &ro, &recs, err, sizeof(err)) < 0) {
            rc = cli_fail(cli, CLI_ERR_INVALID, "%s", err);
        } else {
            if (json)
                json_array_append_new(all, records_json(&recs));
            else {
                if (d)
                    putchar('\n');
                print_records_bind(&recs);
            }
            dc_records_clear(&recs);
        }
        for (size_t i = 0; i < nmx; i++)
            free(mx[i]);
    }
    if (json && rc == 0) {
        json_t *o = json_pack("{s:O}", "domains", all);
        char *s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        if (s)
            puts(s);
        else
            rc = CLI_EXIT_FAILURE;
        free(s);
        json_decref(o);
    }
out:
    json_decref(all);
    dns_resolver_free(dns);
    dc_local_keys_free(keys, nkeys);
    config_free(cfg);
    return rc;
}
