/* MIME structure of a submitted message for content policy: the leaf parts
 * with their type, disposition, file name and size (RFC 2045, 2046, 2183,
 * 2231, 2047), a verdict on blocked attachments, and header lookups (one
 * field's value, the domains of From/Sender for DMARC alignment). Pure
 * functions over (ptr, len). */
#ifndef SLUICE_POLICY_MIME_H
#define SLUICE_POLICY_MIME_H

#include <stdbool.h>
#include <stddef.h>

#define MIME_TYPE_MAX 128 /* "type/subtype" */
#define MIME_TOKEN_MAX 32 /* disposition, encoding */
#define MIME_NAME_MAX 256 /* decoded file name, UTF-8 */
#define MIME_PATH_MAX 48  /* "1.2.3" */
#define MIME_MAGIC_LEN 8

/* Default hard limits: deeper or larger trees are reported as too complex
 * instead of being walked. */
#define MIME_DEFAULT_MAX_DEPTH 20
#define MIME_DEFAULT_MAX_PARTS 500

/* Report-wide flags. */
enum {
    MIME_F_TOO_COMPLEX = 1 << 0,      /* depth or part limit reached: not fully seen */
    MIME_F_MISSING_CLOSE = 1 << 1,    /* a multipart ended without its close delimiter */
    MIME_F_NO_BOUNDARY = 1 << 2,      /* a multipart without boundary: read as a leaf */
    MIME_F_BAD_HEADER = 1 << 3,       /* a header line that is not a field */
    MIME_F_DUPLICATE_FIELD = 1 << 4,  /* two Content-Type/-Disposition/-Transfer-Encoding */
    MIME_F_NO_PARTS = 1 << 5,         /* a multipart without any delimiter */
    MIME_F_BAD_CONTENT_TYPE = 1 << 6, /* unparsable Content-Type: read as text/plain */
};

/* Per-part flags. */
enum {
    MIME_PF_NAME_TRUNCATED = 1 << 0, /* name longer than MIME_NAME_MAX: middle dropped */
    MIME_PF_NAME_UNDECODED = 1 << 1, /* charset unknown or bad encoding: bytes replaced */
    MIME_PF_NAME_MISMATCH = 1 << 2,  /* filename and name parameters differ */
};

struct mime_part {
    char content_type[MIME_TYPE_MAX];    /* lower-case "type/subtype" */
    char disposition[MIME_TOKEN_MAX];    /* lower-case, "" when absent */
    char encoding[MIME_TOKEN_MAX];       /* lower-case, "7bit" when absent */
    char filename[MIME_NAME_MAX];        /* Content-Disposition filename, UTF-8 */
    char name[MIME_NAME_MAX];            /* Content-Type name, UTF-8 */
    char path[MIME_PATH_MAX];            /* section number as IMAP writes it: "1", "2.1" */
    size_t offset;                       /* body start in the message */
    size_t size;                         /* body octets as transmitted (still encoded) */
    unsigned depth;                      /* 0 for a single-part message */
    unsigned flags;                      /* MIME_PF_* */
    unsigned char magic[MIME_MAGIC_LEN]; /* first decoded octets of the body */
    size_t magic_len;
};

struct mime_report {
    struct mime_part *parts; /* leaves in message order; malloc'd */
    size_t count;
    size_t multiparts; /* containers walked */
    unsigned max_depth;
    unsigned flags; /* MIME_F_* */
};

struct mime_limits {
    unsigned max_depth;
    size_t max_parts; /* leaves plus containers */
};

#define MIME_ETOOCOMPLEX (-2)

/* Walks msg (header and body, CRLF or LF line ends). Fills out (free with
 * mime_report_free, also after an error). Returns 0, MIME_ETOOCOMPLEX when a
 * limit stopped the walk (the parts seen so far are listed), or -1 when out
 * of memory. */
int mime_scan(const char *msg, size_t len, struct mime_report *out);
int mime_scan_limits(const char *msg, size_t len, const struct mime_limits *limits,
                     struct mime_report *out);
void mime_report_free(struct mime_report *r);

/* Content policy: blocked_exts is a comma list of extensions without dots
 * ("exe,js,vbs,scr,bat,cmd,com,jar"), blocked_types a comma list of media
 * types ("application/x-msdownload,application/java-archive"; "image/" and an
 * asterisk stands for every image type); either may be NULL. Checks both file names of every leaf,
 * the last extension after stripping what Windows strips (trailing dots and spaces), names with
 * NULs or controls, executable content under a harmless name (a Windows "MZ" or ELF body when "exe"
 * is blocked), and a report that is too complex to judge. Returns 1 with a reason in why when
 * blocked, 0 when not. */
int mime_blocked(const struct mime_report *r, const char *blocked_exts, const char *blocked_types,
                 char *why, size_t why_size);

/* Copies the unfolded value of the nth (0-based) field called name from the
 * message header (stops at the first empty line) into out, without leading
 * white space. Returns how many such fields the header has (out "" when
 * nth is past them), or -1 when out is too small (out then truncated). */
int mime_header_get(const char *msg, size_t len, const char *name, unsigned nth, char *out,
                    size_t out_size);

#define MIME_MAX_ADDRESSES 32
#define MIME_DOMAIN_MAX 256

struct mime_address_list {
    char domains[MIME_MAX_ADDRESSES][MIME_DOMAIN_MAX]; /* lower-case, one per mailbox */
    size_t count;
};

/* Parses an RFC 5322 address-list or mailbox-list (From:, Sender:, To:)
 * with display names, comments, quoted strings, groups and obsolete routes,
 * listing the domain of each mailbox. Returns the number of mailboxes, or
 * -1 on a syntax error (unbalanced quote, comment or bracket, a mailbox
 * without '@'). */
int mime_address_domains(const char *value, size_t len, struct mime_address_list *out);

/* The single author domain of a From value for DMARC (RFC 7489 section 6.6.1):
 * 0 with the domain in out when every mailbox has the same domain, -1 when
 * the value cannot be parsed or is empty, -2 when mailboxes name different
 * domains. */
int mime_author_domain(const char *value, size_t len, char *out, size_t out_size);

#define MIME_FROM_NONE (-1)    /* no From field */
#define MIME_FROM_INVALID (-2) /* not a mailbox-list, no mailbox, too many, an address literal */
#define MIME_FROM_SEVERAL (-3) /* more than one From field (RFC 5322 section 3.6 allows one) */

/* The Author Domains of a message for DMARC (RFC 7489 section 6.6.1): reads
 * the header of msg (up to the empty line), requires exactly one From field
 * and parses it with mime_address_domains. Returns the number of distinct
 * domains put in out (lower-case, in order; 1 = a single Author Domain), or
 * one of MIME_FROM_NONE, MIME_FROM_INVALID, MIME_FROM_SEVERAL. The one
 * place a From domain is taken from a message. */
int mime_from_domains(const char *msg, size_t len, struct mime_address_list *out);

#endif
