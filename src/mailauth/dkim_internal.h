/* Pieces shared by the DKIM source files and nothing else: base64 with FWS,
 * and header-block splitting. Not part of the module's contract. */
#ifndef SLUICE_MAILAUTH_DKIM_INTERNAL_H
#define SLUICE_MAILAUTH_DKIM_INTERNAL_H

#include <stddef.h>

#include "mailauth/dkim.h"

/* Decodes base64 that may contain FWS (RFC 6376 2.6). Padding optional.
 * Returns the decoded length or -1 (bad character, does not fit in cap). */
long dkim_b64_decode(const char *s, size_t len, unsigned char *out, size_t cap);
/* Encodes to a malloc'd NUL-terminated string, NULL when out of memory. */
char *dkim_b64_encode(const unsigned char *in, size_t len);

/* One header field in a header block: start and length without its CRLF. */
struct dkim_field {
    const char *start;
    size_t len;
    size_t name_len; /* up to the colon, without WSP before it; 0 if no colon */
};

/* Splits msg into header fields (up to max) and finds the body. Returns the
 * number of fields found, or -1 if there are more than max. *body is set to
 * the byte after the empty line (or len when there is none). */
long dkim_split_header(const char *msg, size_t len, struct dkim_field *fields, size_t max,
                       size_t *body);

/* Case-insensitive comparison of a field's name with (name, nlen). */
int dkim_field_is(const struct dkim_field *f, const char *name, size_t nlen);

/* The data a signature covers (RFC 6376 3.7): the fields named in names,
 * each name taking the last not yet used instance (5.4.2), canonicalised,
 * then the DKIM-Signature field sig_field (b= value empty) canonicalised
 * without its CRLF. *out is malloc'd. Returns 0 or DKIM_E_NOMEM. */
struct dkim_hname;
int dkim_header_hash_input(const struct dkim_field *fields, size_t nfields,
                           const struct dkim_hname *names, size_t nnames, enum dkim_canon canon,
                           const char *sig_field, size_t sig_len, char **out, size_t *out_len);

#endif
