/* SASL response decoding for SMTP AUTH (RFC 4954): turns a client's base64
 * line into the identities and password the credential check needs. The
 * results go straight to authentication, so anything ambiguous (extra NULs,
 * empty fields, truncation) is refused rather than trimmed. */
#include "smtp/sasl.h"

#include "core/base64.h"
#include "mail/address.h"

#include <string.h>

/* Largest PLAIN message: three fields and two NULs (RFC 4616 2). */
#define SASL_PLAIN_MAX (3 * SASL_FIELD_MAX + 2)

/* Base64 length that can hold n decoded octets. */
#define SASL_B64_MAX(n) ((((n) + 2) / 3) * 4)

static void copy_field(char *dst, const unsigned char *src, size_t len)
{
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* The decoded message holds the password: every way out wipes it. */
static int plain_fields(const unsigned char *msg, long n, struct sasl_plain *out)
{
    /* message = [authzid] UTF8NUL authcid UTF8NUL passwd (RFC 4616 2):
     * exactly two NULs, authcid and passwd = 1*SAFE. */
    const unsigned char *end = msg + n;
    const unsigned char *nul1 = memchr(msg, '\0', (size_t)n);
    if (nul1 == NULL)
        return -1;
    const unsigned char *nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1));
    if (nul2 == NULL || memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL)
        return -1;

    size_t zlen = (size_t)(nul1 - msg);
    size_t clen = (size_t)(nul2 - nul1 - 1);
    size_t plen = (size_t)(end - nul2 - 1);
    if (clen == 0 || plen == 0)
        return -1;
    if (zlen > SASL_FIELD_MAX || clen > SASL_FIELD_MAX || plen > SASL_FIELD_MAX)
        return -1;
    /* RFC 4616 2: all three are UTF-8; refusing malformed octets keeps
     * identities comparable byte for byte. */
    if (!smtp_utf8_valid((const char *)msg, (size_t)n))
        return -1;

    copy_field(out->authzid, msg, zlen);
    copy_field(out->authcid, nul1 + 1, clen);
    copy_field(out->passwd, nul2 + 1, plen);
    return 0;
}

int sasl_plain_decode(const char *b64, size_t len, struct sasl_plain *out)
{
    unsigned char msg[SASL_B64_MAX(SASL_PLAIN_MAX) / 4 * 3];

    memset(out, 0, sizeof(*out));
    if (len > SASL_B64_MAX(SASL_PLAIN_MAX))
        return -1;
    long n = base64_decode(b64, len, msg, 0);
    int rc = n < 0 ? -1 : plain_fields(msg, n, out);
    explicit_bzero(msg, sizeof msg);
    if (rc < 0)
        explicit_bzero(out, sizeof(*out));
    return rc;
}

int sasl_login_decode(const char *b64, size_t len, char *out, size_t out_size)
{
    unsigned char buf[SASL_B64_MAX(SASL_FIELD_MAX) / 4 * 3];

    if (out_size > 0)
        out[0] = '\0';
    if (out_size == 0 || len > SASL_B64_MAX(SASL_FIELD_MAX))
        return -1;
    long n = base64_decode(b64, len, buf, 0);
    /* A NUL would cut the C string short and make "user\0x" log in as
     * "user"; LOGIN has no field separator, so none is legal. LOGIN names
     * no character set, so other octets are passed on unchanged. */
    int rc = n < 0 || (size_t)n > SASL_FIELD_MAX || (size_t)n >= out_size ||
                     memchr(buf, '\0', (size_t)n) != NULL
                 ? -1
                 : 0;
    if (rc == 0)
        copy_field(out, buf, (size_t)n);
    /* the response may be the password */
    explicit_bzero(buf, sizeof buf);
    return rc;
}
