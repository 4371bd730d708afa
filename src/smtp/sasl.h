/* SASL mechanism message decoding for SMTP AUTH (RFC 4954): PLAIN (RFC 4616)
 * and LOGIN. Pure functions; the session drives the exchange. */
#ifndef SLUICE_SMTP_SASL_H
#define SLUICE_SMTP_SASL_H

#include <stddef.h>

#define SASL_FIELD_MAX 256

struct sasl_plain {
    char authzid[SASL_FIELD_MAX + 1];
    char authcid[SASL_FIELD_MAX + 1];
    char passwd[SASL_FIELD_MAX + 1];
};

/* Decodes a base64 PLAIN response ("authzid\0authcid\0passwd").
 * Returns 0, or -1 on bad base64, wrong field count, NUL misuse or a field
 * over SASL_FIELD_MAX. */
int sasl_plain_decode(const char *b64, size_t len, struct sasl_plain *out);

/* Decodes one base64 LOGIN response (user name or password) into out
 * (NUL-terminated, at most SASL_FIELD_MAX). Returns 0 or -1. */
int sasl_login_decode(const char *b64, size_t len, char *out, size_t out_size);

#endif
