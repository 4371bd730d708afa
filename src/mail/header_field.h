/* Header fields that Sluice writes itself (Received, Message-ID, Date, the
 * fields of a DSN): the one place where such a field is put together. Values
 * often carry what a client sent (its EHLO name, its login), so the builder
 * never lets a CR, LF or other control octet through: a field it returns is
 * one logical line, folded at white space, ending in CRLF. Pure. */
#ifndef SLUICE_MAIL_HEADER_FIELD_H
#define SLUICE_MAIL_HEADER_FIELD_H

#include <stddef.h>

/* RFC 5322 2.1.1: lines SHOULD stay within 78 octets and MUST within 998. */
#define HEADER_LINE_SOFT 78
#define HEADER_LINE_HARD 998

/* Octet written in place of a control octet (C0 other than HTAB, or DEL). */
#define HEADER_FIELD_ESCAPE '?'

/* Writes "Name: value" CRLF into out (cap octets, NUL-terminated). The
 * value is a single logical line: every CR, LF and other control octet in
 * it becomes HEADER_FIELD_ESCAPE, runs of white space are kept, and the
 * field is folded (CRLF before a space) so no line passes 78 octets where a
 * space allows it, and none ever passes 998. The name must be RFC 5322 ftext
 * (printable ASCII except ':'). Returns the length written, or -1 for a bad
 * name or when the field does not fit (out then holds ""). */
int header_field(char *out, size_t cap, const char *name, const char *value);

/* As header_field, with the value made by printf from fmt. */
__attribute__((format(printf, 4, 5))) int header_fieldf(char *out, size_t cap, const char *name,
                                                        const char *fmt, ...);

/* Copies s into out (cap octets, NUL-terminated) with every control octet
 * replaced as in header_field: for text that goes inside a field or a
 * DSN's human-readable part. Returns the length written. */
size_t header_text_clean(char *out, size_t cap, const char *s);

#endif
