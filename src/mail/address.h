/* Envelope address and MAIL/RCPT parameter parsing (RFC 5321 4.1.2, 4.1.4,
 * RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 3030 BINARYMIME, RFC 6531 SMTPUTF8,
 * RFC 3461 DSN parameters, RFC 4954 AUTH=). Pure functions over bytes. */
#ifndef SLUICE_MAIL_ADDRESS_H
#define SLUICE_MAIL_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1: local-part 64 octets, domain 255, path 256 incl. <>. */
#define SMTP_LOCAL_PART_MAX 64
#define SMTP_DOMAIN_MAX 255
#define SMTP_PATH_MAX 256

/* Why a parse failed; the session maps each to an SMTP reply. */
enum smtp_addr_error {
    SMTP_ADDR_OK = 0,
    SMTP_ADDR_SYNTAX,           /* 501 5.1.7 / 5.1.3 bad address syntax */
    SMTP_ADDR_MISSING_PREFIX,   /* 501 5.5.4 expected FROM: / TO: */
    SMTP_ADDR_TOO_LONG,         /* 501 5.1.3 (local part/domain/path over limits) */
    SMTP_ADDR_SOURCE_ROUTE,     /* 553 5.1.3 source routes (@a,@b:x@y) refused */
    SMTP_ADDR_UTF8_NO_SMTPUTF8, /* 553 5.6.7 non-ASCII address without SMTPUTF8 */
    SMTP_ADDR_BAD_UTF8,         /* 501 5.6.7 malformed UTF-8 */
    SMTP_ADDR_NULL_RCPT,        /* 501 5.1.3 RCPT TO:<> */
    SMTP_ADDR_BAD_PARAM,        /* 501 5.5.4 malformed or unknown ESMTP parameter */
    SMTP_ADDR_DUP_PARAM,        /* 501 5.5.4 same parameter twice */
};

struct smtp_path {
    char addr[SMTP_PATH_MAX + 1]; /* "local@domain" as sent (quoted local parts keep
                                     their quotes), NUL-terminated; "" for <> */
    size_t local_len;             /* length of the local part within addr */
    bool is_null;                 /* MAIL FROM:<> */
    bool is_utf8;                 /* contains non-ASCII octets */
    bool local_quoted;            /* local part was a quoted-string */
    bool domain_literal;          /* domain is [address-literal] */
};

enum smtp_body_type {
    SMTP_BODY_UNSPECIFIED = 0,
    SMTP_BODY_7BIT,
    SMTP_BODY_8BITMIME,
    SMTP_BODY_BINARYMIME
};

struct smtp_mail_params {
    long long size; /* SIZE=, -1 when absent */
    enum smtp_body_type body;
    bool smtputf8;
    char ret[8];     /* RET=FULL|HDRS or "" */
    char envid[101]; /* ENVID= xtext as given, or "" */
    bool has_auth;   /* AUTH= given (value ignored, RFC 4954 5) */
};

struct smtp_rcpt_params {
    unsigned notify;                /* bit set of SMTP_NOTIFY_*; 0 when absent */
    char orcpt[SMTP_PATH_MAX + 16]; /* ORCPT= as given, or "" */
};

#define SMTP_NOTIFY_NEVER 1u
#define SMTP_NOTIFY_SUCCESS 2u
#define SMTP_NOTIFY_FAILURE 4u
#define SMTP_NOTIFY_DELAY 8u

/* `arg` is the argument of MAIL, e.g. "FROM:<a@b.example> SIZE=100".
 * A non-ASCII address is legal only when the command also carries the
 * SMTPUTF8 parameter (params->smtputf8); whether the server offers SMTPUTF8
 * at all is the session's check on params->smtputf8. A space after "FROM:"
 * is tolerated; the angle brackets are required.
 * `path` and `params` are always initialised, also on error. */
enum smtp_addr_error smtp_parse_mail(const char *arg, size_t len, struct smtp_path *path,
                                     struct smtp_mail_params *params);

/* `arg` is the argument of RCPT, e.g. "TO:<a@b.example> NOTIFY=FAILURE".
 * `smtputf8` tells whether the transaction's MAIL carried SMTPUTF8.
 * RCPT TO:<Postmaster> (any case, no domain; RFC 5321 4.1.1.3) is accepted:
 * then addr is "Postmaster" as sent and the domain is "". */
enum smtp_addr_error smtp_parse_rcpt(const char *arg, size_t len, bool smtputf8,
                                     struct smtp_path *path, struct smtp_rcpt_params *params);

/* Validates a bare address "local@domain" (no angle brackets) as a Mailbox of
 * RFC 5321 4.1.2; used for config patterns and header checks. */
enum smtp_addr_error smtp_parse_mailbox(const char *s, size_t len, bool allow_utf8,
                                        struct smtp_path *path);

/* RFC 5321 4.1.1.1: the EHLO/HELO argument is a Domain or an
 * address-literal, nothing else (ASCII only: SMTPUTF8 is not negotiated
 * until EHLO has been answered). The name ends up in the Received field, so anything
 * looser could carry octets a downstream server reads as a line end. */
bool smtp_helo_valid(const char *arg, size_t len);

/* Pointer to the domain part of a parsed path (after '@'), "" for null. */
const char *smtp_path_domain(const struct smtp_path *path);

/* A short human explanation of an error, for reply texts and logs. */
const char *smtp_addr_error_text(enum smtp_addr_error err);

/* Strict UTF-8 check (RFC 3629 section 4): no overlong forms, no surrogates,
 * nothing above U+10FFFF. Also used for SASL identities. */
bool smtp_utf8_valid(const char *s, size_t len);

#endif
