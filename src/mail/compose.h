/* Builds an RFC 5322 / MIME message from its parts: the one place where
 * Sluice writes a whole message for a caller (the `sluice send` and sendmail
 * front doors, the HTTP JSON API). Pure: no I/O; the Message-ID's random
 * part comes from OpenSSL's generator, the Date from the clock when the
 * caller gives none.
 *
 * What comes out: CRLF line ends; Date, From, Reply-To, To, Cc, Subject,
 * Message-ID, MIME-Version, the extra fields, then the body:
 *   text only or html only      one part
 *   text and html               multipart/alternative
 *   inline attachments          multipart/related around the html (or the
 *                               alternative) and the inline parts
 *   other attachments           multipart/mixed around all of it
 * Text parts are UTF-8; 7bit when every line is ASCII and within 998 octets,
 * quoted-printable otherwise. Attachments are base64 in 76-column lines.
 * Display names and the subject with non-ASCII are RFC 2047 encoded words;
 * non-ASCII file names use RFC 2231 (filename*=utf-8''...). Bcc never
 * appears in the message: compose_recipients gives the envelope.
 *
 * Refused, with COMPOSE_EINVAL and a message naming the field: a CR, LF or
 * other control octet in any value that goes into a header (header
 * injection), a header name that is not RFC 5322 ftext, an extra field that
 * the composer writes itself (From, To, Content-Type, ...), an address that
 * does not parse, text that is not UTF-8, a content type or Content-ID that
 * is not a plain token. C strings cannot carry a NUL: a caller holding
 * counted strings (JSON) must refuse an embedded NUL itself, e.g. with
 * compose_check_value. */
#ifndef SLUICE_MAIL_COMPOSE_H
#define SLUICE_MAIL_COMPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* A file name longer than this is refused (it must fit a header line). */
#define COMPOSE_FILENAME_MAX 255

enum compose_error {
    COMPOSE_OK = 0,
    COMPOSE_EINVAL = -1, /* the input is refused; err says why (HTTP 400/422, exit 2) */
    COMPOSE_ENOMEM = -2,
};

struct compose_attachment {
    const char *filename;     /* required; UTF-8; a path's folders are not stripped */
    const char *content_type; /* "type/subtype"; NULL: guessed from the file name's extension */
    const void *data;
    size_t len;
    const char *content_id; /* non-NULL: an inline part of multipart/related, referenced from
                               the html as "cid:<content_id>" (given without the <>) */
};

struct compose_header {
    const char *name;  /* ftext, e.g. "X-Campaign", "List-Unsubscribe", "In-Reply-To" */
    const char *value; /* one line; non-ASCII becomes RFC 2047 encoded words */
};

struct compose_msg {
    const char *from; /* required, one mailbox: "addr@dom" or "Display Name <addr@dom>" */
    /* Each element is one mailbox or a comma list of them, as in a header. */
    const char *const *to;
    size_t nto;
    const char *const *cc;
    size_t ncc;
    const char *const *bcc; /* envelope only, never written */
    size_t nbcc;
    const char *reply_to; /* NULL: none */
    const char *subject;  /* NULL: no Subject field */
    const char *text;     /* text/plain body, UTF-8, LF or CRLF line ends; NULL: none */
    const char *html;     /* text/html body; NULL: none */
    const struct compose_attachment *attachments;
    size_t nattachments;
    const struct compose_header *headers;
    size_t nheaders;
    time_t date;            /* 0: now */
    const char *message_id; /* without <>; NULL: "<random@from-domain>" */
};

/* Builds the message into *out (malloc'd, NUL-terminated, *outlen octets
 * without the NUL; free it). Returns COMPOSE_OK, or a compose_error with a
 * human message in err (*out is then NULL). */
int compose_build(const struct compose_msg *m, char **out, size_t *outlen, char *err,
                  size_t errlen);

/* The envelope recipients of m: every address of to, cc and bcc, bare
 * ("local@domain"), duplicates removed, in order. *rcpts is a malloc'd array
 * of malloc'd strings; free with compose_recipients_free. Returns COMPOSE_OK
 * or a compose_error with err set. */
int compose_recipients(const struct compose_msg *m, char ***rcpts, size_t *n, char *err,
                       size_t errlen);
void compose_recipients_free(char **rcpts, size_t n);

/* The bare address of m->from ("local@domain"), for MAIL FROM; writes it
 * into out (cap octets). Returns COMPOSE_OK or COMPOSE_EINVAL with err set. */
int compose_sender(const struct compose_msg *m, char *out, size_t cap, char *err, size_t errlen);

/* True when s[0..len) may stand in a header value: no NUL, CR, LF or other
 * control octet besides HTAB. */
bool compose_check_value(const char *s, size_t len);

/* The content type for a file name's extension ("application/pdf"), or
 * "application/octet-stream" when the extension is not known. */
const char *compose_guess_type(const char *filename);

#endif
