/* Shared by the composer's two files: the growing output buffer and the
 * encoders (compose_encode.c) that the structure builder (compose.c) calls.
 * Not part of the composer's contract (compose.h). */
#ifndef SLUICE_MAIL_COMPOSE_INT_H
#define SLUICE_MAIL_COMPOSE_INT_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 2045 6.7 (5) and 6.8: encoded lines are at most 76 octets. */
#define COMPOSE_ENCODED_LINE 76
/* RFC 2047 2: an encoded word is at most 75 octets. */
#define COMPOSE_WORD_MAX 75

struct cbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

void cbuf_add(struct cbuf *b, const void *s, size_t n);
void cbuf_str(struct cbuf *b, const char *s);
__attribute__((format(printf, 2, 3))) void cbuf_fmt(struct cbuf *b, const char *fmt, ...);

/* Every octet is ASCII (below 0x80). */
bool compose_ascii(const char *s, size_t n);

/* Appends data as base64 in lines of 76 octets, each ending in CRLF. */
void compose_base64_lines(struct cbuf *b, const void *data, size_t len);

/* Appends text (lines already split at CRLF) as quoted-printable. */
void compose_qp(struct cbuf *b, const char *s, size_t n);

/* Appends s as a run of RFC 2047 "B" encoded words (UTF-8) separated by
 * spaces, never splitting a UTF-8 sequence. */
void compose_encoded_words(struct cbuf *b, const char *s);

/* Appends a display name: as is when it is atoms and spaces, as a quoted
 * string when it holds other ASCII, as encoded words when not ASCII. */
void compose_display_name(struct cbuf *b, const char *name);

/* Appends "; NAME=value" for a MIME parameter: a quoted string when ASCII,
 * else RFC 2231 NAME*=utf-8''%XX... */
void compose_param(struct cbuf *b, const char *name, const char *value);

/* Appends "Name: value" CRLF with the value folded at spaces so that lines
 * stay within 78 octets where a space allows. Returns -1 when some line
 * would still pass 998 octets. */
int compose_field(struct cbuf *b, const char *name, const char *value, size_t vlen);

#endif
