/* The rule syntax of credentials as the CLI and config write it: limits
 * ("100/min"), sizes ("10M"), certificate fingerprints and names. Pure
 * functions, no I/O besides reading a certificate file. */
#include "policy/creds.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- pure parsers --- */

long long cred_period_seconds(enum cred_period p)
{
    static const long long secs[] = {0, 1, 60, 3600, 86400, 31 * 86400LL};
    return (p >= CRED_PER_NONE && p <= CRED_PER_MONTH) ? secs[p] : 0;
}

int cred_limit_parse(const char *s, struct cred_limit *out)
{
    static const struct {
        const char *name;
        enum cred_period per;
    } units[] = {
        {"s", CRED_PER_SECOND},    {"sec", CRED_PER_SECOND},    {"second", CRED_PER_SECOND},
        {"min", CRED_PER_MINUTE},  {"minute", CRED_PER_MINUTE}, {"h", CRED_PER_HOUR},
        {"hour", CRED_PER_HOUR},   {"d", CRED_PER_DAY},         {"day", CRED_PER_DAY},
        {"month", CRED_PER_MONTH},
    };
    out->count = 0;
    out->per = CRED_PER_NONE;
    if (!s)
        return -1;
    if (strcmp(s, "none") == 0 || strcmp(s, "0") == 0)
        return 0;
    if (!isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    char *end;
    long long n = strtoll(s, &end, 10);
    if (errno || n <= 0 || n > 1000000000000LL || *end != '/')
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(end + 1, units[i].name) == 0) {
            out->count = n;
            out->per = units[i].per;
            return 0;
        }
    return -1;
}

const char *cred_limit_format(const struct cred_limit *l, char *buf, size_t size)
{
    static const char *const short_names[] = {NULL, "s", "min", "hour", "day", "month"};
    if (l->count <= 0 || l->per == CRED_PER_NONE)
        snprintf(buf, size, "none");
    else
        snprintf(buf, size, "%lld/%s", l->count, short_names[l->per]);
    return buf;
}

int cred_size_parse(const char *s, long long *out)
{
    if (!s || !isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    char *end;
    long long n = strtoll(s, &end, 10);
    if (errno || n < 0)
        return -1;
    long long mult = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mult = 1LL << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1LL << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1LL << 30;
        end++;
        break;
    default:
        break;
    }
    if (mult > 1 && *end == 'i')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || n > (1LL << 50) / mult)
        return -1;
    *out = n * mult;
    return 0;
}

int cred_fingerprint_normalise(const char *in, char out[CRED_SHA256_HEX])
{
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        if (*p == ':')
            continue;
        if (!isxdigit((unsigned char)*p) || n == 64)
            return -1;
        out[n++] = (char)tolower((unsigned char)*p);
    }
    out[n] = 0;
    return n == 64 ? 0 : -1;
}

int cred_fingerprint_pem_file(const char *path, char out[CRED_SHA256_HEX], char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!x || X509_digest(x, EVP_sha256(), md, &len) != 1 || len != 32) {
        X509_free(x);
        if (err && errlen)
            snprintf(err, errlen, "%s: no PEM certificate found", path);
        return -1;
    }
    X509_free(x);
    for (unsigned i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

bool cred_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CRED_NAME_MAX || !isalnum((unsigned char)name[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i]))
            return false;
    return true;
}
