/* SMTP reply parsing for the delivery client (RFC 5321 section 4.2): reply
 * lines, multiline replies, enhanced status codes (RFC 3463, RFC 2034) and
 * EHLO keywords (RFC 5321 4.1.1.1, RFC 1870 SIZE, RFC 4954 AUTH). Pure
 * functions over (ptr, len): no I/O, no allocation, no globals. */
#ifndef SLUICE_DELIVER_CLIENT_REPLY_H
#define SLUICE_DELIVER_CLIENT_REPLY_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets including CRLF.
 * Real servers exceed it (long EHLO AUTH lists, verbose 5xx texts), so the
 * client tolerates lines up to SMTP_REPLY_LINE_TOLERANCE and treats longer
 * ones as a protocol error rather than buffering without bound. */
#define SMTP_REPLY_LINE_MAX 512
#define SMTP_REPLY_LINE_TOLERANCE 8192
/* A multiline reply with more lines than this is treated as hostile. */
#define SMTP_REPLY_LINES_MAX 256
/* Kept text of a reply (all lines joined by a space, enhanced code removed). */
#define SMTP_REPLY_TEXT_MAX 512
/* "5.123.456" plus NUL (RFC 3463 section 2: subject and detail 1-3 digits). */
#define SMTP_ENHANCED_MAX 12

struct smtp_reply_line {
    int code;         /* 200..599 */
    bool last;        /* "ddd " or "ddd" (true) versus "ddd-" (false) */
    const char *text; /* after the separator; not NUL-terminated */
    size_t text_len;
};

/* A reply being accumulated line by line. */
struct smtp_reply {
    int code;
    char enhanced[SMTP_ENHANCED_MAX]; /* "" when the reply carries none */
    char text[SMTP_REPLY_TEXT_MAX];   /* NUL-terminated, truncated if longer */
    size_t text_len;
    unsigned lines;
    bool complete;
};

/* Parses one reply line without its line terminator. Returns 0 or -1 when the
 * line is not "3DIGIT [SP / "-" text]" with a first digit 2..5. */
int smtp_reply_line_parse(const char *line, size_t len, struct smtp_reply_line *out);

/* Parses an enhanced status code "class.subject.detail" at the start of
 * text, followed by a space or the end. class must be 2, 4 or 5. Writes the
 * code to out (SMTP_ENHANCED_MAX bytes) and the bytes consumed including one
 * following space. Returns 0, or -1 when text does not start with one. */
int smtp_reply_enhanced_parse(const char *text, size_t len, char *out, size_t *consumed);

void smtp_reply_reset(struct smtp_reply *r);

/* Adds one line (terminator removed) to r. Returns 1 when the reply is now
 * complete, 0 when more lines follow, -1 on a malformed line, a code that
 * differs from the first line's, or too many lines. The enhanced code is
 * taken from the first line only when its class matches the reply code. */
int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len);

/* Parses one whole reply from the start of buf. Lines end with CRLF (a bare
 * LF is tolerated). Returns 1 with *consumed set when a reply is complete,
 * 0 when more bytes are needed, -1 when malformed (including a line over
 * SMTP_REPLY_LINE_TOLERANCE). r is reset first. */
int smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *r, size_t *consumed);

/* Authentication mechanisms the client knows (bit flags). */
enum smtp_auth_mech_bit {
    SMTP_AUTH_BIT_PLAIN = 1u << 0,
    SMTP_AUTH_BIT_LOGIN = 1u << 1,
    SMTP_AUTH_BIT_XOAUTH2 = 1u << 2,
    SMTP_AUTH_BIT_CRAM_MD5 = 1u << 3,
    SMTP_AUTH_BIT_OTHER = 1u << 4,
};

/* Service extensions announced in an EHLO reply. */
struct smtp_ehlo {
    bool pipelining;             /* RFC 2920 */
    bool eightbitmime;           /* RFC 6152 */
    bool smtputf8;               /* RFC 6531 */
    bool starttls;               /* RFC 3207 */
    bool enhancedstatuscodes;    /* RFC 2034 */
    bool dsn;                    /* RFC 3461 */
    bool chunking;               /* RFC 3030 */
    bool size;                   /* RFC 1870 */
    unsigned long long size_max; /* 0: SIZE without a (non-zero) limit */
    unsigned auth;               /* enum smtp_auth_mech_bit */
};

/* Records the keyword on one EHLO reply line (the text after "250-"; the
 * first line, the server's name, must not be passed). Unknown keywords and
 * malformed parameters are ignored: a server's odd extension must not stop
 * delivery. Returns 0, or -1 when the line holds no keyword at all. */
int smtp_ehlo_keyword(const char *text, size_t len, struct smtp_ehlo *ehlo);

#endif
