/* Internal to the MIME module (mime.c, mime_field.c): header fields and
 * their values. Everything here is pure and bounded by the lengths given. */
#ifndef SLUICE_POLICY_MIME_FIELD_H
#define SLUICE_POLICY_MIME_FIELD_H

#include <stdbool.h>
#include <stddef.h>

#include "policy/mime.h"

/* Parameters kept per Content-Type / Content-Disposition value; a value with
 * more is too complex to judge (padding could push the file name out). */
#define MIME_PARAMS_MAX 128

/* U+FFFD: stands for what could not be decoded, and for control characters. */
#define MIME_REPLACEMENT "\xef\xbf\xbd"

struct mime_span {
    const char *p;
    size_t n;
};

/* A growable byte buffer for decoded text; oom is set once an allocation
 * failed, overflow when the input was past a decoding limit (in both cases
 * the contents are incomplete). */
struct mime_buf {
    char *p;
    size_t n, cap;
    bool oom;
    bool overflow;
};

struct mime_field {
    struct mime_span name;
    struct mime_span raw; /* value with the folding line breaks still in */
};

struct mime_param {
    char name[64]; /* lower-case attribute without the section suffix */
    int section;   /* RFC 2231 section number, -1 when none */
    bool extended; /* trailing '*': charset'lang'%XX value */
    char *value;   /* points into the parsed value (unescaped in place) */
    size_t vlen;
};

struct mime_ctvalue {
    char token[MIME_TYPE_MAX]; /* "type/subtype" or disposition type, lower-case */
    struct mime_param params[MIME_PARAMS_MAX];
    size_t nparams;
    bool ok;
    bool overflow; /* more than MIME_PARAMS_MAX parameters */
};

bool mime_span_ieq(struct mime_span s, const char *lit);
void mime_copy_lower(char *dst, size_t size, const char *src, size_t n);
void mime_copy_str(char *dst, size_t size, const char *src);
void mime_buf_put(struct mime_buf *b, const void *data, size_t n);
void mime_buf_putc(struct mime_buf *b, char c);

/* Appends in (in charset) to b as UTF-8; sets *undecoded when something had
 * to be replaced by U+FFFD. */
void mime_to_utf8(struct mime_buf *b, const char *charset, const unsigned char *in, size_t n,
                  bool *undecoded);
/* Decodes RFC 2047 encoded-words in s and appends UTF-8 to b. */
void mime_decode_words(struct mime_buf *b, const char *s, size_t n, bool *undecoded);
int mime_hexval(int c);
/* Lenient base64: skips non-alphabet octets, stops at '='. Returns octets. */
size_t mime_b64_lenient(const char *in, size_t n, unsigned char *out, size_t cap);

/* The position after the LF ending the line at p (or end). */
const char *mime_line_end(const char *p, const char *end);
/* Next field of the header block at *pos: 1 with f set, 0 at the end of the
 * header (*pos moves past the empty line), -1 on a line that is not a field
 * (*pos stays on it). */
int mime_field_next(const char **pos, const char *end, struct mime_field *f);
/* The value without line breaks and outer white space, at most max octets
 * of raw; malloc'd, NULL when out of memory. */
char *mime_field_unfold(struct mime_span raw, size_t max, size_t *len);

/* Parses a Content-Type (with_subtype) or Content-Disposition /
 * Content-Transfer-Encoding value; modifies value in place. */
void mime_ctvalue_parse(char *value, size_t len, bool with_subtype, struct mime_ctvalue *cv);
/* Appends the decoded value of parameter want (RFC 2231 or RFC 2047) to
 * out as UTF-8. Returns false when the parameter is absent. */
bool mime_param_get(const struct mime_ctvalue *cv, const char *want, struct mime_buf *out,
                    bool *undecoded);

#endif
