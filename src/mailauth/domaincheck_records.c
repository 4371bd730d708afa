/* The records to publish for a domain (`sluice dns-records`): SPF, DKIM,
 * DMARC, MTA-STS and TLS-RPT, built from the relay's settings and local keys
 * rather than from DNS. */
#include "mailauth/domaincheck.h"
#include "mailauth/domaincheck_int.h"
#include "mailauth/dkim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* ---- Records to publish -------------------------------------------------------------- */

void dc_records_clear(struct dc_records *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->count; i++) {
        free(r->records[i].name);
        free(r->records[i].type);
        free(r->records[i].value);
        free(r->records[i].comment);
    }
    free(r->records);
    free(r->domain);
    free(r->mta_sts_policy);
    free(r->mta_sts_url);
    memset(r, 0, sizeof(*r));
}

/* Appends a record; takes ownership of the three strings. */
static int rec_add(struct dc_records *r, char *name, char *value, char *comment)
{
    struct dc_record *v = realloc(r->records, (r->count + 1) * sizeof(*v));
    char *type = strdup("TXT");
    if (!v || !name || !value || !comment || !type) {
        if (v)
            r->records = v;
        free(name);
        free(value);
        free(comment);
        free(type);
        return -ENOMEM;
    }
    r->records = v;
    v[r->count++] = (struct dc_record){name, type, value, comment};
    return 0;
}

/* RFC 8461 3.1 id: must change whenever the policy does; a digest of the
 * policy text does that by itself. */
static int policy_id(const char *policy, char out[MTASTS_ID_MAX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(policy, strlen(policy), md, &mdlen, EVP_sha256(), NULL))
        return -ENOMEM;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < 10; i++) { /* 20 hex digits */
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[20] = '\0';
    return 0;
}

int dc_records_build(const char *domain, const struct dc_records_options *opts,
                     struct dc_records *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!dc_valid_domain(domain)) {
        snprintf(err, errlen, "'%s' is not a domain name", domain ? domain : "");
        return -EINVAL;
    }
    const char *dp = opts->dmarc_policy ? opts->dmarc_policy : "none";
    if (strcmp(dp, "none") && strcmp(dp, "quarantine") && strcmp(dp, "reject")) {
        snprintf(err, errlen, "DMARC policy must be none, quarantine or reject");
        return -EINVAL;
    }
    if (!(out->domain = strdup(domain)))
        return -ENOMEM;
    int rc = 0;

    /* SPF: the upstreams' terms, the sending address, soft fail for the rest */
    char spf[1024] = "v=spf1";
    size_t o = strlen(spf), nterms = 0;
    char term[300];
    for (size_t i = 0; i <= opts->nupstreams; i++) {
        const char *h = i < opts->nupstreams ? opts->upstream_hosts[i] : opts->sending_ip;
        if (!h || !*h || dc_spf_term_for_host(h, term, sizeof(term)) < 0)
            continue;
        char needle[310];
        snprintf(needle, sizeof(needle), " %s ", term);
        char probe[1030];
        snprintf(probe, sizeof(probe), "%s ", spf);
        if (strstr(probe, needle) || o + strlen(term) + 8 >= sizeof(spf))
            continue;
        o += (size_t)snprintf(spf + o, sizeof(spf) - o, " %s", term);
        nterms++;
    }
    if (nterms == 0)
        o += (size_t)snprintf(spf + o, sizeof(spf) - o, " mx");
    snprintf(spf + o, sizeof(spf) - o, " ~all");
    rc = rec_add(out, strdup(domain), strdup(spf),
                 nterms ? strdup("SPF: the hosts mail leaves through")
                        : strdup("SPF: no upstream configured; add the sending host (ip4:...)"));

    /* DKIM: one record per local key */
    struct dc_local_key *keys = NULL;
    size_t nkeys = 0;
    if (rc == 0 && opts->key_dir)
        rc = dc_local_keys(opts->key_dir, domain, &keys, &nkeys);
    for (size_t i = 0; rc == 0 && i < nkeys; i++) {
        struct dkim_sign_opts so = {
            .domain = domain, .selector = keys[i].selector, .key_file = keys[i].path};
        char kerr[256];
        struct dkim_signer *s = dkim_signer_new(&so, kerr, sizeof(kerr));
        if (!s) {
            snprintf(err, errlen, "%s: %s", keys[i].path, kerr);
            rc = -EINVAL;
            break;
        }
        char *val = dkim_signer_key_record(s);
        rc = rec_add(out, dc_fmt("%s._domainkey.%s", keys[i].selector, domain), val,
                     dc_fmt("DKIM selector %s (%s)", keys[i].selector,
                            dkim_algorithm_name(dkim_signer_algorithm(s))));
        dkim_signer_free(s);
    }
    dc_local_keys_free(keys, nkeys);

    if (rc == 0)
        rc = rec_add(out, dc_fmt("_dmarc.%s", domain),
                     dc_fmt("v=DMARC1; p=%s; rua=mailto:dmarc-reports@%s", dp, domain),
                     dc_fmt("DMARC: start at p=none, read the reports, then quarantine/reject"));

    /* MTA-STS policy and its record */
    if (rc == 0) {
        char pol[4096];
        size_t po = (size_t)snprintf(pol, sizeof(pol), "version: STSv1\r\nmode: %s\r\n",
                                     mtasts_mode_name(opts->sts_mode));
        for (size_t i = 0; i < opts->nmx && po < sizeof(pol); i++)
            po += (size_t)snprintf(pol + po, sizeof(pol) - po, "mx: %s\r\n", opts->mx_hosts[i]);
        if (opts->nmx == 0 && po < sizeof(pol))
            po += (size_t)snprintf(pol + po, sizeof(pol) - po, "mx: *.%s\r\n", domain);
        if (po < sizeof(pol))
            po += (size_t)snprintf(pol + po, sizeof(pol) - po, "max_age: %u\r\n",
                                   STS_MAX_AGE_DEFAULT);
        char id[MTASTS_ID_MAX + 1];
        if (po >= sizeof(pol)) {
            snprintf(err, errlen, "too many MX hosts for the policy");
            rc = -EINVAL;
        } else if ((rc = policy_id(pol, id)) == 0 && (out->mta_sts_policy = strdup(pol)) != NULL &&
                   (out->mta_sts_url = dc_fmt("https://mta-sts.%s" MTASTS_WELL_KNOWN, domain))) {
            rc = rec_add(out, dc_fmt("_mta-sts.%s", domain), dc_fmt("v=STSv1; id=%s", id),
                         dc_fmt("MTA-STS: serve the policy below at %s", out->mta_sts_url));
        } else if (rc == 0) {
            rc = -ENOMEM;
        }
    }
    if (rc == 0)
        rc = rec_add(out, dc_fmt("_smtp._tls.%s", domain),
                     dc_fmt("v=TLSRPTv1; rua=mailto:tls-reports@%s", domain),
                     dc_fmt("TLS-RPT: where senders report TLS failures"));
    if (rc < 0)
        dc_records_clear(out);
    return rc;
}
