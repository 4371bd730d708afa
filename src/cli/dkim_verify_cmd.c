/* `sluice verify`: checks a message the way a receiver would (DKIM
 * signatures, SPF for the given client address, DMARC alignment) and prints
 * the verdict, an Authentication-Results field or JSON. */
#include "cli/cli.h"
#include "cli/dkim_cmd_int.h"
#include "mailauth/dkim.h"
#include "mailauth/dmarc.h"
#include "mailauth/spf.h"
#include "policy/mime.h"

#include <arpa/inet.h>
#include <stdbool.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#define MAX_KEY_TEXT (64 * 1024)

/* ---- verify ------------------------------------------------------------------ */

/* Key source for `verify --key-file`: one record used for every signature. */
static int fixed_key_lookup(void *ctx, const char *selector, const char *domain, char **txt)
{
    (void)selector;
    (void)domain;
    *txt = strdup(ctx);
    return *txt ? 0 : -1;
}

static int dns_key_lookup(void *ctx, const char *selector, const char *domain, char **txt)
{
    struct dns_resolver *r = ctx;
    struct dns_result res;
    char name[600];
    snprintf(name, sizeof(name), "%s._domainkey.%s", selector, domain);
    if (dns_lookup_txt(r, name, &res) < 0) {
        dns_result_clear(&res);
        return -1;
    }
    int rc = -1;
    if (res.status == DNS_NXDOMAIN || res.status == DNS_NODATA) {
        rc = 1;
    } else if (res.status == DNS_OK && res.count > 0) {
        /* RFC 6376 3.6.2.2: with several records, use one that parses as a key */
        size_t pick = 0;
        for (size_t i = 0; i < res.count; i++) {
            struct dkim_key_record kr;
            if (res.rr[i].text &&
                dkim_key_record_parse(res.rr[i].text, res.rr[i].text_len, &kr, NULL, 0) == 0) {
                pick = i;
                break;
            }
        }
        *txt = strndup(res.rr[pick].text ? res.rr[pick].text : "",
                       res.rr[pick].text ? res.rr[pick].text_len : 0);
        rc = *txt ? 0 : -1;
    }
    dns_result_clear(&res);
    return rc;
}

/* A --key-file holds a PEM public key, or a TXT record value: bare, or as
 * quoted strings (BIND style, as keygen prints it) which are joined. */
static char *key_file_record(const char *path)
{
    size_t len;
    char *text = cli_read_all(path, MAX_KEY_TEXT, &len), err[200];
    if (!text) {
        fprintf(stderr, "sluice verify: cannot read %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char *rec = NULL;
    if (strstr(text, "-----BEGIN")) {
        rec = dkim_key_record_from_public_pem(text, len, err, sizeof(err));
        if (!rec)
            fprintf(stderr, "sluice verify: %s: %s\n", path, err);
    } else if (strchr(text, '"')) {
        rec = calloc(1, len + 1);
        size_t o = 0;
        int in_q = 0;
        for (size_t i = 0; rec && i < len; i++) {
            if (text[i] == '"')
                in_q = !in_q;
            else if (in_q && text[i] == '\\' && i + 1 < len)
                rec[o++] = text[++i];
            else if (in_q)
                rec[o++] = text[i];
        }
    } else {
        while (len && strchr(" \t\r\n", text[len - 1]))
            text[--len] = '\0';
        const char *p = text;
        while (*p && strchr(" \t\r\n", *p))
            p++;
        rec = strdup(p);
    }
    free(text);
    return rec;
}

static const char verify_usage[] =
    "usage: sluice verify FILE.eml [--json] [--key-file KEY] [--dns-zone ZONEFILE]\n"
    "                    [--authserv-id HOST]\n"
    "                    [--client-ip IP --helo NAME [--mail-from ADDR]\n"
    "                     [--dmarc-mode rfc9989|rfc7489]]\n"
    "Checks every DKIM signature. Keys come from --key-file (a TXT record value\n"
    "or PEM public key, used for every signature), --dns-zone (lines\n"
    "`NAME TXT \"...\"`), or DNS. Exit 0: all pass, 5: no signature, 4: any other.\n"
    "With --client-ip (the connecting SMTP client) and --helo, SPF (MAIL FROM\n"
    "domain, or HELO when --mail-from is absent or empty) and DMARC (From domain)\n"
    "are evaluated too, and the exit status follows DMARC: 0 pass, 5 none, 4 other.\n"
    "DMARC follows RFC 9989 (DNS Tree Walk) unless --dmarc-mode rfc7489 asks for\n"
    "the Public Suffix List and pct sampling. 2: bad usage, 1: cannot read or resolve.\n";

static enum dmarc_auth dkim_to_dmarc(enum dkim_status s)
{
    switch (s) {
    case DKIM_STATUS_PASS:
        return DMARC_AUTH_PASS;
    case DKIM_STATUS_NEUTRAL:
        return DMARC_AUTH_NEUTRAL;
    case DKIM_STATUS_TEMPERROR:
        return DMARC_AUTH_TEMPERROR;
    case DKIM_STATUS_PERMERROR:
        return DMARC_AUTH_PERMERROR;
    case DKIM_STATUS_NONE:
        return DMARC_AUTH_NONE;
    default:
        return DMARC_AUTH_FAIL;
    }
}

static enum dmarc_auth spf_to_dmarc(enum spf_result r)
{
    switch (r) {
    case SPF_PASS:
        return DMARC_AUTH_PASS;
    case SPF_FAIL:
        return DMARC_AUTH_FAIL;
    case SPF_SOFTFAIL:
        return DMARC_AUTH_SOFTFAIL;
    case SPF_NEUTRAL:
        return DMARC_AUTH_NEUTRAL;
    case SPF_TEMPERROR:
        return DMARC_AUTH_TEMPERROR;
    case SPF_PERMERROR:
        return DMARC_AUTH_PERMERROR;
    default:
        return DMARC_AUTH_NONE;
    }
}

/* What DMARC concluded for one Author Domain. */
struct dmarc_check {
    char from[MIME_DOMAIN_MAX]; /* the Author Domain, "" when none */
    struct dmarc_discovery disc;
    struct dmarc_verdict verdict;
    const char *dmarc; /* RFC 8601 result: none, pass, fail, temperror, permerror */
    char problem[160]; /* why DMARC gave none / permerror */
};

/* What SPF and DMARC concluded for the message (verify --client-ip). */
struct receiver_view {
    struct spf_outcome spf;
    const char *spf_identity; /* "mailfrom" or "helo" */
    char spf_value[512];      /* the MAIL FROM address or the HELO name */
    char spf_domain[256];     /* domain the SPF result speaks for (DMARC input) */
    struct dmarc_check dm;    /* the check that decided the DMARC result */
};

static int dmarc_check_domain(const struct dmarc_env *env, const struct dkim_verify_result *res,
                              const struct receiver_view *v, const char *from,
                              struct dmarc_check *c)
{
    memset(c, 0, sizeof(*c));
    c->dmarc = "none";
    /* RFC 7489 6.6.1: U-labels are looked up as A-labels */
    if (dmarc_domain_to_ascii(from, c->from, sizeof(c->from)) < 0) {
        snprintf(c->from, sizeof(c->from), "%s", from);
        c->dmarc = "permerror";
        snprintf(c->problem, sizeof(c->problem), "the From domain is not a valid domain name");
        return 0;
    }
    int rc = dmarc_discover(env, c->from, &c->disc);
    if (rc == 0 && c->disc.status == DMARC_DISC_FOUND) {
        struct dmarc_dkim_input *dk = calloc(res->count ? res->count : 1, sizeof(*dk));
        if (!dk)
            return -1;
        for (size_t i = 0; i < res->count; i++)
            dk[i] =
                (struct dmarc_dkim_input){res->sig[i].domain, dkim_to_dmarc(res->sig[i].status)};
        struct dmarc_input in = {.from_domain = c->from,
                                 .spf_domain = v->spf_domain,
                                 .spf = spf_to_dmarc(v->spf.result),
                                 .dkim = dk,
                                 .ndkim = res->count,
                                 .sample = 0};
        rc = dmarc_evaluate(env, &c->disc, &in, &c->verdict);
        free(dk);
        c->dmarc = rc < 0 ? "permerror" : dmarc_result_name(c->verdict.result);
    } else if (rc == 0) {
        c->dmarc = c->disc.status == DMARC_DISC_TEMPFAIL    ? "temperror"
                   : c->disc.status == DMARC_DISC_NO_POLICY ? "permerror"
                                                            : "none";
        snprintf(c->problem, sizeof(c->problem), "%s",
                 c->disc.problem ? c->disc.problem : "no DMARC record");
    }
    return rc == -ENOMEM ? -1 : 0;
}

/* Which of two checks of a multi-domain From decides (RFC 7489 6.6.1: the
 * strictest policy among the checks that fail), then temperror. */
static int check_weight(const struct dmarc_check *c)
{
    if (!strcmp(c->dmarc, "fail"))
        return 10 + (int)c->verdict.applied;
    return !strcmp(c->dmarc, "temperror") ? 2 : !strcmp(c->dmarc, "permerror") ? 1 : 0;
}

static int receiver_evaluate(struct dns_resolver *dns, enum dmarc_mode mode,
                             const struct dkim_verify_result *res, const char *msg, size_t len,
                             int family, const unsigned char *addr, const char *helo,
                             const char *mail_from, struct receiver_view *v)
{
    memset(v, 0, sizeof(*v));
    struct spf_request req = {.family = family, .sender = mail_from, .helo = helo};
    memcpy(req.addr, addr, family == AF_INET ? 4 : 16);
    if (spf_check(dns, &req, &v->spf) < 0)
        return -1;
    bool use_helo = !mail_from || !*mail_from;
    v->spf_identity = use_helo ? "helo" : "mailfrom";
    snprintf(v->spf_value, sizeof(v->spf_value), "%s", use_helo ? helo : mail_from);
    const char *at = use_helo ? NULL : strrchr(mail_from, '@');
    snprintf(v->spf_domain, sizeof(v->spf_domain), "%s", at ? at + 1 : use_helo ? helo : mail_from);

    v->dm.dmarc = "none";
    struct mime_address_list *authors = malloc(sizeof(*authors));
    if (!authors)
        return -1;
    /* RFC 7489 6.6.1: DMARC needs exactly one From field; a message without a
     * usable one cannot pass, whatever its other fields say. */
    int n = mime_from_domains(msg, len, authors);
    if (n < 0) {
        v->dm.dmarc = "permerror";
        snprintf(v->dm.problem, sizeof(v->dm.problem), "%s",
                 n == MIME_FROM_NONE      ? "no From field in the message"
                 : n == MIME_FROM_SEVERAL ? "more than one From field (RFC 5322 3.6 allows one)"
                                          : "the From field is not a valid RFC 5322 mailbox list");
        free(authors);
        return 0;
    }
    /* The Public Suffix List only serves RFC 7489 mode. */
    struct psl *psl = mode == DMARC_MODE_RFC7489 ? psl_new_from_file(NULL) : NULL;
    struct dmarc_env env = {.mode = mode, .dns = dns, .psl = psl};
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct dmarc_check c;
        rc = dmarc_check_domain(&env, res, v, authors->domains[i], &c);
        if (rc == 0 && (i == 0 || check_weight(&c) > check_weight(&v->dm))) {
            dmarc_discovery_clear(&v->dm.disc);
            v->dm = c;
        } else {
            dmarc_discovery_clear(&c.disc);
        }
    }
    /* Several Author Domains never pass, even when each one would. */
    if (rc == 0 && n > 1 && check_weight(&v->dm) == 0) {
        v->dm.dmarc = "permerror";
        snprintf(v->dm.problem, sizeof(v->dm.problem),
                 "the From field names %d domains; DMARC passes a single Author Domain", n);
    }
    psl_free(psl);
    free(authors);
    return rc;
}

static void receiver_clear(struct receiver_view *v)
{
    spf_outcome_clear(&v->spf);
    dmarc_discovery_clear(&v->dm.disc);
}

/* A policy was found and the verdict below speaks for it. */
static bool check_found(const struct dmarc_check *c)
{
    return c->disc.status == DMARC_DISC_FOUND && c->from[0] &&
           (!strcmp(c->dmarc, "pass") || !strcmp(c->dmarc, "fail") ||
            !strcmp(c->dmarc, "temperror"));
}

/* "; spf=... smtp.mailfrom=...; dmarc=... (p=... dis=...) header.from=..." (RFC 8601 2.7.2,
 * RFC 7489 11.2); malloc'd. */
static char *receiver_auth_results(const struct receiver_view *v)
{
    char *out = NULL, dm[256] = "";
    const struct dmarc_check *c = &v->dm;
    if (check_found(c))
        snprintf(dm, sizeof(dm), " (p=%s dis=%s)", dmarc_policy_name(c->verdict.policy),
                 dmarc_policy_name(c->verdict.result == DMARC_RESULT_FAIL ? c->verdict.applied
                                                                          : DMARC_POLICY_NONE));
    if (asprintf(&out, "; spf=%s smtp.%s=%s; dmarc=%s%s header.from=%s",
                 spf_result_name(v->spf.result), v->spf_identity, v->spf_value, c->dmarc, dm,
                 c->from) < 0)
        return NULL;
    return out;
}

static json_t *receiver_json_spf(const struct receiver_view *v)
{
    return json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:s?, s:I}", "result",
                     spf_result_name(v->spf.result), "identity", v->spf_identity, "domain",
                     v->spf_domain, "mechanism", v->spf.mechanism, "explanation",
                     v->spf.explanation, "problem", v->spf.problem, "dns_lookups",
                     (json_int_t)v->spf.dns_lookups);
}

static json_t *receiver_json_dmarc(const struct receiver_view *v)
{
    const struct dmarc_check *c = &v->dm;
    bool found = check_found(c);
    json_t *o = json_pack("{s:s, s:s, s:s?, s:s?}", "result", c->dmarc, "mode",
                          dmarc_mode_name(c->disc.mode), "from_domain", c->from[0] ? c->from : NULL,
                          "record", found ? c->disc.record_name : NULL);
    if (!o)
        return NULL;
    if (found) {
        json_object_set_new(o, "policy", json_string(dmarc_policy_name(c->verdict.policy)));
        json_object_set_new(o, "disposition",
                            json_string(dmarc_policy_name(c->verdict.result == DMARC_RESULT_FAIL
                                                              ? c->verdict.applied
                                                              : DMARC_POLICY_NONE)));
        json_object_set_new(o, "policy_tag", json_string(c->verdict.policy_tag));
        if (c->disc.org_domain)
            json_object_set_new(o, "org_domain", json_string(c->disc.org_domain));
        json_object_set_new(o, "testing", json_boolean(c->verdict.testing));
        json_object_set_new(o, "spf_aligned", json_boolean(c->verdict.spf_aligned));
        json_object_set_new(o, "dkim_aligned", json_boolean(c->verdict.dkim_aligned));
    }
    if (c->problem[0])
        json_object_set_new(o, "problem", json_string(c->problem));
    return o;
}

int cli_verify(const struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"key-file", required_argument, NULL, 'k'},
                                         {"dns-zone", required_argument, NULL, 'z'},
                                         {"authserv-id", required_argument, NULL, 'A'},
                                         {"client-ip", required_argument, NULL, 'c'},
                                         {"helo", required_argument, NULL, 'H'},
                                         {"mail-from", required_argument, NULL, 'm'},
                                         {"dmarc-mode", required_argument, NULL, 'D'},
                                         {NULL, 0, NULL, 0}};
    const char *key_file = NULL, *zone = NULL, *authserv = NULL;
    const char *client_ip = NULL, *helo = NULL, *mail_from = NULL;
    int json = cli->json, c;
    if (cli->help)
        return cli_help(verify_usage);
    enum dmarc_mode dmode = DMARC_MODE_RFC9989;
    bool dmode_given = false;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        case 'k':
            key_file = optarg;
            break;
        case 'z':
            zone = optarg;
            break;
        case 'A':
            authserv = optarg;
            break;
        case 'c':
            client_ip = optarg;
            break;
        case 'H':
            helo = optarg;
            break;
        case 'm':
            mail_from = optarg;
            break;
        case 'D':
            if (dmarc_mode_parse(optarg, &dmode) < 0)
                return cli_fail(cli, CLI_ERR_INVALID, "--dmarc-mode takes rfc9989 or rfc7489");
            dmode_given = true;
            break;
        default:
            return cli_usage_error(cli, verify_usage, NULL);
        }
    }
    if (optind > argc - 1)
        return cli_usage_error(cli, verify_usage, "verify needs the message FILE");
    if (optind < argc - 1)
        return cli_usage_error(cli, verify_usage, "unexpected argument '%s'", argv[optind + 1]);
    /* --key-file with --dns-zone only makes sense when SPF and DMARC need DNS */
    if ((key_file && zone && !client_ip) || ((helo || mail_from || dmode_given) && !client_ip))
        return cli_usage_error(cli, verify_usage,
                               "--helo, --mail-from, --dmarc-mode and --key-file with "
                               "--dns-zone need --client-ip");
    int family = 0;
    unsigned char caddr[16];
    if (client_ip) {
        if (inet_pton(AF_INET, client_ip, caddr) == 1)
            family = AF_INET;
        else if (inet_pton(AF_INET6, client_ip, caddr) == 1)
            family = AF_INET6;
        if (!family || !helo || !*helo)
            return cli_fail(cli, CLI_ERR_INVALID,
                            "--client-ip takes an IPv4 or IPv6 address and needs --helo NAME");
        if (mail_from && *mail_from == '<')
            return cli_fail(cli, CLI_ERR_INVALID, "give --mail-from without <>");
    }
    const char *path = argv[optind];
    char host[256];
    if (!authserv) {
        if (gethostname(host, sizeof(host)) < 0)
            snprintf(host, sizeof(host), "localhost");
        host[sizeof(host) - 1] = '\0';
        authserv = host;
    }

    size_t len, clen;
    char *raw = cli_read_all(path, MAX_MESSAGE, &len), *msg = NULL, *rec = NULL;
    if (!raw)
        return cli_fail(cli, errno == ENOENT ? CLI_ERR_NOT_FOUND : CLI_ERR_IO, "cannot read %s: %s",
                        path, strerror(errno));
    int rc = CLI_EXIT_FAILURE;
    struct dns_resolver *resolver = NULL;
    dkim_key_lookup lookup;
    void *lctx;
    if (!(msg = dkim_cmd_to_crlf(raw, len, &clen)))
        goto out;
    if (!key_file || client_ip) {
        resolver = zone ? dns_resolver_new_zonefile(zone) : dns_resolver_new_system();
        if (!resolver) {
            if (zone)
                fprintf(stderr, "sluice verify: zone file %s: %s\n", zone, dns_zone_last_error());
            else
                fprintf(stderr, "sluice verify: cannot set up the DNS resolver\n");
            goto out;
        }
    }
    if (key_file) {
        if (!(rec = key_file_record(key_file)))
            goto out;
        lookup = fixed_key_lookup;
        lctx = rec;
    } else {
        lookup = dns_key_lookup;
        lctx = resolver;
    }

    struct dkim_verify_result res;
    if (dkim_verify(msg, clen, NULL, lookup, lctx, &res) < 0) {
        fprintf(stderr, "sluice verify: out of memory\n");
        goto out;
    }
    size_t pass = 0;
    for (size_t i = 0; i < res.count; i++)
        pass += res.sig[i].status == DKIM_STATUS_PASS;
    rc = res.count == 0      ? CLI_EXIT_CHECK_WARN
         : pass == res.count ? CLI_EXIT_OK
                             : CLI_EXIT_CHECK_FAIL;
    const char *dkim_summary = rc == CLI_EXIT_OK           ? "pass"
                               : rc == CLI_EXIT_CHECK_WARN ? "none"
                                                           : "fail";
    char *ar = dkim_auth_results(&res, authserv);
    struct receiver_view view;
    bool have_view = false;
    if (client_ip) {
        if (receiver_evaluate(resolver, dmode, &res, msg, clen, family, caddr, helo, mail_from,
                              &view) < 0) {
            fprintf(stderr, "sluice verify: out of memory\n");
            rc = CLI_EXIT_FAILURE;
            receiver_clear(&view);
            free(ar);
            dkim_verify_result_clear(&res);
            goto out;
        }
        have_view = true;
        char *more = receiver_auth_results(&view);
        char *joined = NULL;
        if (ar && more && asprintf(&joined, "%s%s", ar, more) > 0) {
            free(ar);
            ar = joined;
        }
        free(more);
        rc = !strcmp(view.dm.dmarc, "pass")   ? CLI_EXIT_OK
             : !strcmp(view.dm.dmarc, "none") ? CLI_EXIT_CHECK_WARN
                                              : CLI_EXIT_CHECK_FAIL;
    }
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:o}", "file", path, "result", dkim_summary,
                              "authserv_id", authserv, "authentication_results", ar, "signatures",
                              dkim_results_json(&res));
        if (o && have_view) {
            json_object_set_new(o, "spf", receiver_json_spf(&view));
            json_object_set_new(o, "dmarc", receiver_json_dmarc(&view));
        }
        char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        if (text)
            puts(text);
        free(text);
        json_decref(o);
    } else {
        printf("Authentication-Results: %s\n", ar ? ar : "");
    }
    if (have_view)
        receiver_clear(&view);
    free(ar);
    dkim_verify_result_clear(&res);
out:
    dns_resolver_free(resolver);
    free(rec);
    free(msg);
    free(raw);
    return rc;
}
