/* libFuzzer target for the MTA-STS record and policy parsers, MX pattern
 * matching and the TLS-RPT record, report and report-email parsers. The
 * first byte picks the parser; the rest is its input. Everything must parse
 * or fail cleanly, and what parses must hold the promised invariants. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/mtasts.h"
#include "mailauth/tlsrpt.h"

static void check_policy(const char *s, size_t n)
{
    struct mtasts_policy p;
    char err[160];
    if (mtasts_policy_parse(s, n, &p, err, sizeof err) == 0) {
        if (p.max_age > MTASTS_MAX_AGE_LIMIT || (p.nmx == 0 && p.mode != MTASTS_MODE_NONE))
            abort();
        for (size_t i = 0; i < p.nmx; i++)
            (void)mtasts_policy_allows_mx(&p, p.mx[i]);
        mtasts_policy_clear(&p);
    }
}

static void check_record(const char *s, size_t n)
{
    struct mtasts_record r;
    char err[160];
    if (mtasts_record_parse(s, n, &r, err, sizeof err) == 0) {
        size_t l = strlen(r.id);
        if (l == 0 || l > MTASTS_ID_MAX)
            abort();
    }
}

static void check_tlsrpt(const char *s, size_t n)
{
    struct tlsrpt_record r;
    char err[160];
    if (tlsrpt_record_parse(s, n, &r, err, sizeof err) == 0) {
        if (r.nrua == 0)
            abort();
        tlsrpt_record_clear(&r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    char err[160];
    switch (data[0] % 6) {
    case 0:
        check_record(s, n);
        break;
    case 1:
        check_policy(s, n);
        break;
    case 2: { /* pattern NUL host */
        char *buf = malloc(n + 2);
        if (!buf)
            return 0;
        memcpy(buf, s, n);
        buf[n] = buf[n + 1] = '\0';
        const char *host = memchr(buf, '\0', n + 1) + 1;
        (void)mtasts_mx_match(buf, host);
        free(buf);
        break;
    }
    case 3:
        check_tlsrpt(s, n);
        break;
    case 4: {
        struct tlsrpt_report r;
        if (tlsrpt_report_parse(s, n, &r, err, sizeof err) == 0)
            tlsrpt_report_clear(&r);
        break;
    }
    default: {
        struct tlsrpt_email e;
        if (tlsrpt_email_parse(s, n, &e, err, sizeof err) == 0) {
            if (!e.report_domain || !e.payload)
                abort();
            tlsrpt_email_clear(&e);
        }
        break;
    }
    }
    return 0;
}
