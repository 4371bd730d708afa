/* The request bodies of the HTTP submission API, parsed without I/O: the
 * native JSON of POST /v1/messages, the SendGrid v3 and Postmark shapes
 * mapped onto the same message, the envelope of POST /v1/messages/raw and
 * the batch form. Each parser checks every field and names the one it
 * refuses, so the door can answer 400/422 before any policy runs. */
#ifndef SLUICE_HTTPD_API_REQUEST_H
#define SLUICE_HTTPD_API_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define API_MAX_RECIPIENTS 1000 /* per message, to + cc + bcc */
#define API_MAX_ATTACHMENTS 100
#define API_MAX_HEADERS 100
#define API_MAX_TAGS 20
#define API_BATCH_MAX 500 /* messages in one POST /v1/messages/batch */

/* A mailbox: the address (RFC 5321 Mailbox) and an optional display name. */
struct api_addr {
    char *email;
    char *name; /* NULL without one */
};

struct api_attachment {
    char *filename;
    char *content_type; /* "application/octet-stream" when not given */
    char *content_id;   /* NULL unless inline (referenced as cid: from html) */
    unsigned char *data;
    size_t len;
};

struct api_pair {
    char *name, *value;
};

/* One message as the API describes it. Everything is allocated; release
 * with api_message_clear. */
struct api_message {
    struct api_addr from;
    struct api_addr *to, *cc, *bcc, *reply_to;
    size_t n_to, n_cc, n_bcc, n_reply_to;
    char *subject, *text, *html; /* NULL when absent */
    struct api_attachment *att;
    size_t n_att;
    struct api_pair *headers; /* extra header fields, checked names and values */
    size_t n_headers;
    char **tags;
    size_t n_tags;
    struct api_pair *metadata; /* string values */
    size_t n_metadata;
    int64_t send_at; /* unix seconds; 0 = now */
    bool smtputf8;   /* an address has non-ASCII octets */
};

/* Why a request body is refused: the HTTP status (400 for a body that is
 * not JSON, 422 for a field that breaks a rule), a stable code and the
 * field it is about. */
struct api_req_error {
    int status;
    const char *code; /* "invalid_json", "invalid_field", "missing_field", ... */
    char field[64];
    char message[256];
};

enum api_shape {
    API_SHAPE_NATIVE,   /* POST /v1/messages */
    API_SHAPE_SENDGRID, /* POST /v3/mail/send */
    API_SHAPE_POSTMARK, /* POST /email */
};

struct json_t;

/* Parses one message from a JSON text. Returns 0, or -1 with err filled
 * (out is then cleared). */
int api_message_parse(const char *body, size_t len, enum api_shape shape, struct api_message *out,
                      struct api_req_error *err);

/* The same from an already parsed JSON object (one element of a batch). */
int api_message_from_json(const struct json_t *obj, enum api_shape shape, struct api_message *out,
                          struct api_req_error *err);

void api_message_clear(struct api_message *m);

/* Every recipient, to then cc then bcc, as bare addresses (pointers into m). */
size_t api_message_rcpts(const struct api_message *m, const char **out, size_t cap);

/* Parses the batch form {"messages": [ {...}, ... ]}: 1..API_BATCH_MAX
 * objects. Returns the array (a new reference, json_decref) or NULL with
 * err filled. The elements are parsed one by one with api_message_from_json,
 * so one bad message does not refuse the others. */
struct json_t *api_batch_parse(const char *body, size_t len, struct api_req_error *err);

/* The envelope of POST /v1/messages/raw. */
struct api_raw {
    struct api_addr from;
    char **to;
    size_t n_to;
    char *raw; /* the message (from the JSON form; NULL for message/rfc822) */
    size_t raw_len;
    bool smtputf8;
};

/* From the query string "from=a@b&to=c@d&to=e@f" (to may also be a comma
 * list). */
int api_raw_from_query(const char *query, struct api_raw *out, struct api_req_error *err);
/* From the JSON form {"from": "...", "to": ["..."], "raw": "..."}. */
int api_raw_from_json(const char *body, size_t len, struct api_raw *out, struct api_req_error *err);
void api_raw_clear(struct api_raw *r);

/* One address in any of the accepted forms: "a@b.example",
 * "Name <a@b.example>" (the display name may be quoted). Allocates into out.
 * Returns 0 or -1 when it is not a valid mailbox. */
int api_addr_parse(const char *s, struct api_addr *out, bool *utf8);

#endif
