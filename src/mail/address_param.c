/* The MAIL FROM and RCPT TO commands with their ESMTP parameters: SIZE,
 * BODY, SMTPUTF8, RET and ENVID (RFC 3461), NOTIFY and ORCPT, each checked
 * once and against its grammar. Pure functions over the command's bytes. */
#include "mail/address.h"
#include "mail/address_int.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* RFC 1870 section 3: size-value ::= 1*20DIGIT. */
#define SMTP_SIZE_DIGITS_MAX 20
/* RFC 3461 4.4: ENVID is at most 100 characters. */
#define SMTP_ENVID_MAX 100

/* ------------------------------------------------------ ESMTP parameters */

struct esmtp_param {
    const char *key;
    size_t key_len;
    const char *value; /* NULL when the parameter has no "=value" */
    size_t value_len;
};

/* Splits the next esmtp-param (RFC 5321 4.1.2) off [*pp, end). Parameters are
 * separated by SP; several spaces are tolerated. Returns 1 with a parameter,
 * 0 at the end, or -1 on bad syntax. */
static int next_param(const unsigned char **pp, const unsigned char *end, struct esmtp_param *prm)
{
    const unsigned char *p = *pp;

    while (p < end && *p == ' ')
        p++;
    if (p == end)
        return 0;
    const unsigned char *tok = p;
    while (p < end && *p != ' ')
        p++;
    const unsigned char *tok_end = p;
    const unsigned char *eq = memchr(tok, '=', (size_t)(tok_end - tok));
    const unsigned char *key_end = eq ? eq : tok_end;

    /* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
    if (key_end == tok || *tok == '-')
        return -1;
    for (const unsigned char *k = tok; k < key_end; k++) {
        if (!addr_is_alpha(*k) && !addr_is_digit(*k) && *k != '-')
            return -1;
    }
    prm->key = (const char *)tok;
    prm->key_len = (size_t)(key_end - tok);
    prm->value = NULL;
    prm->value_len = 0;
    if (eq != NULL) {
        /* esmtp-value = 1*(%d33-60 / %d62-126), RFC 6531 adds UTF-8. */
        const unsigned char *v = eq + 1;
        if (v == tok_end)
            return -1;
        for (const unsigned char *c = v; c < tok_end; c++) {
            if (*c < 33 || *c == '=' || *c == 127)
                return -1;
        }
        if (!smtp_utf8_valid((const char *)v, (size_t)(tok_end - v)))
            return -1;
        prm->value = (const char *)v;
        prm->value_len = (size_t)(tok_end - v);
    }
    *pp = p;
    return 1;
}

static bool key_is(const struct esmtp_param *prm, const char *name)
{
    return prm->key_len == strlen(name) && strncasecmp(prm->key, name, prm->key_len) == 0;
}

static bool value_is(const char *v, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(v, word, len) == 0;
}

/* RFC 3461 4: xtext = *( xchar / hexchar ); xchar is "!".."~" except "+" and
 * "="; hexchar is "+" and two hex digits (upper case in the RFC; lower case
 * is tolerated since decoding is unambiguous). */
static bool is_xtext(const char *v, size_t len)
{
    const unsigned char *p = (const unsigned char *)v, *end = p + len;

    while (p < end) {
        if (*p == '+') {
            if (end - p < 3 || !addr_is_hex(p[1]) || !addr_is_hex(p[2]))
                return false;
            p += 3;
        } else if (*p >= 33 && *p <= 126 && *p != '=') {
            p++;
        } else {
            return false;
        }
    }
    return true;
}

static void copy_value(char *dst, const struct esmtp_param *prm)
{
    memcpy(dst, prm->value, prm->value_len);
    dst[prm->value_len] = '\0';
}

/* RFC 1870 SIZE: 1*20DIGIT. A value beyond LLONG_MAX is clamped: the client
 * is then refused for the size (552), which is the honest reply. */
static bool parse_size(const struct esmtp_param *prm, long long *size)
{
    long long v = 0;

    if (prm->value == NULL || prm->value_len > SMTP_SIZE_DIGITS_MAX)
        return false;
    for (size_t i = 0; i < prm->value_len; i++) {
        unsigned char c = (unsigned char)prm->value[i];
        if (!addr_is_digit(c))
            return false;
        int d = c - '0';
        if (v > (LLONG_MAX - d) / 10)
            v = LLONG_MAX;
        else
            v = v * 10 + d;
    }
    *size = v;
    return true;
}

enum mail_param_bit {
    MAIL_P_SIZE = 1 << 0,
    MAIL_P_BODY = 1 << 1,
    MAIL_P_SMTPUTF8 = 1 << 2,
    MAIL_P_RET = 1 << 3,
    MAIL_P_ENVID = 1 << 4,
    MAIL_P_AUTH = 1 << 5,
};

static addr_err apply_mail_param(const struct esmtp_param *prm, unsigned *seen,
                                 struct smtp_mail_params *params)
{
    unsigned bit;
    const char *v = prm->value;
    size_t vl = prm->value_len;

    if (key_is(prm, "SIZE"))
        bit = MAIL_P_SIZE;
    else if (key_is(prm, "BODY"))
        bit = MAIL_P_BODY;
    else if (key_is(prm, "SMTPUTF8"))
        bit = MAIL_P_SMTPUTF8;
    else if (key_is(prm, "RET"))
        bit = MAIL_P_RET;
    else if (key_is(prm, "ENVID"))
        bit = MAIL_P_ENVID;
    else if (key_is(prm, "AUTH"))
        bit = MAIL_P_AUTH;
    else
        return SMTP_ADDR_BAD_PARAM;
    /* A repeated SMTPUTF8 carries no conflicting value; common clients
     * (Python's smtplib) send it twice, so it is tolerated. */
    if ((*seen & bit) && !(bit == MAIL_P_SMTPUTF8 && v == NULL))
        return SMTP_ADDR_DUP_PARAM;
    *seen |= bit;

    switch (bit) {
    case MAIL_P_SIZE:
        return parse_size(prm, &params->size) ? SMTP_ADDR_OK : SMTP_ADDR_BAD_PARAM;
    case MAIL_P_BODY:
        /* RFC 6152 (8BITMIME), RFC 3030 (BINARYMIME) */
        if (v != NULL && value_is(v, vl, "7BIT"))
            params->body = SMTP_BODY_7BIT;
        else if (v != NULL && value_is(v, vl, "8BITMIME"))
            params->body = SMTP_BODY_8BITMIME;
        else if (v != NULL && value_is(v, vl, "BINARYMIME"))
            params->body = SMTP_BODY_BINARYMIME;
        else
            return SMTP_ADDR_BAD_PARAM;
        return SMTP_ADDR_OK;
    case MAIL_P_SMTPUTF8:
        /* RFC 6531 3.4: the parameter takes no value. */
        if (v != NULL)
            return SMTP_ADDR_BAD_PARAM;
        params->smtputf8 = true;
        return SMTP_ADDR_OK;
    case MAIL_P_RET:
        /* RFC 3461 4.3 */
        if (v != NULL && value_is(v, vl, "FULL"))
            memcpy(params->ret, "FULL", 5);
        else if (v != NULL && value_is(v, vl, "HDRS"))
            memcpy(params->ret, "HDRS", 5);
        else
            return SMTP_ADDR_BAD_PARAM;
        return SMTP_ADDR_OK;
    case MAIL_P_ENVID:
        /* RFC 3461 4.4 */
        if (v == NULL || vl > SMTP_ENVID_MAX || !is_xtext(v, vl))
            return SMTP_ADDR_BAD_PARAM;
        copy_value(params->envid, prm);
        return SMTP_ADDR_OK;
    default:
        /* RFC 4954 5: AUTH=<> or AUTH=xtext; the value is only trusted from
         * trusted peers, so it is checked for syntax and then ignored. */
        if (v == NULL || !is_xtext(v, vl))
            return SMTP_ADDR_BAD_PARAM;
        params->has_auth = true;
        return SMTP_ADDR_OK;
    }
}

/* RFC 3461 4.1: NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE, DELAY. */
static bool parse_notify(const char *v, size_t vl, unsigned *notify)
{
    unsigned bits = 0;
    size_t i = 0;

    if (v == NULL)
        return false;
    while (i <= vl) {
        size_t j = i;
        while (j < vl && v[j] != ',')
            j++;
        const char *word = v + i;
        size_t wl = j - i;
        if (value_is(word, wl, "NEVER"))
            bits |= SMTP_NOTIFY_NEVER;
        else if (value_is(word, wl, "SUCCESS"))
            bits |= SMTP_NOTIFY_SUCCESS;
        else if (value_is(word, wl, "FAILURE"))
            bits |= SMTP_NOTIFY_FAILURE;
        else if (value_is(word, wl, "DELAY"))
            bits |= SMTP_NOTIFY_DELAY;
        else
            return false;
        i = j + 1;
    }
    if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER)
        return false;
    *notify = bits;
    return true;
}

/* RFC 3461 4.2: ORCPT=addr-type ";" xtext. With SMTPUTF8 the "utf-8"
 * address type of RFC 6533 3 may carry raw UTF-8 (checked by next_param). */
static bool parse_orcpt(const struct esmtp_param *prm, bool smtputf8,
                        struct smtp_rcpt_params *params)
{
    const char *v = prm->value;
    size_t vl = prm->value_len;

    if (v == NULL || vl >= sizeof(params->orcpt))
        return false;
    const char *semi = memchr(v, ';', vl);
    if (semi == NULL || semi == v || semi + 1 == v + vl)
        return false;
    for (const char *c = v; c < semi; c++) {
        if (!addr_is_atext((unsigned char)*c))
            return false;
    }
    const char *addr = semi + 1;
    size_t al = (size_t)(v + vl - addr);
    bool ascii = true;
    for (size_t i = 0; i < al; i++) {
        if ((unsigned char)addr[i] >= 0x80)
            ascii = false;
    }
    if (!ascii) {
        if (!smtputf8 || !value_is(v, (size_t)(semi - v), "utf-8"))
            return false;
    } else if (!is_xtext(addr, al)) {
        return false;
    }
    copy_value(params->orcpt, prm);
    return true;
}

enum rcpt_param_bit {
    RCPT_P_NOTIFY = 1 << 0,
    RCPT_P_ORCPT = 1 << 1,
};

static addr_err apply_rcpt_param(const struct esmtp_param *prm, bool smtputf8, unsigned *seen,
                                 struct smtp_rcpt_params *params)
{
    unsigned bit;

    if (key_is(prm, "NOTIFY"))
        bit = RCPT_P_NOTIFY;
    else if (key_is(prm, "ORCPT"))
        bit = RCPT_P_ORCPT;
    else
        return SMTP_ADDR_BAD_PARAM;
    if (*seen & bit)
        return SMTP_ADDR_DUP_PARAM;
    *seen |= bit;
    if (bit == RCPT_P_NOTIFY)
        return parse_notify(prm->value, prm->value_len, &params->notify) ? SMTP_ADDR_OK
                                                                         : SMTP_ADDR_BAD_PARAM;
    return parse_orcpt(prm, smtputf8, params) ? SMTP_ADDR_OK : SMTP_ADDR_BAD_PARAM;
}

/* After the path: nothing, or at least one SP and then parameters. */
static bool params_start(const unsigned char *p, const unsigned char *end)
{
    return p == end || *p == ' ';
}

enum smtp_addr_error smtp_parse_mail(const char *arg, size_t len, struct smtp_path *path,
                                     struct smtp_mail_params *params)
{
    const unsigned char *p = (const unsigned char *)arg, *end = p + len;
    struct esmtp_param prm;
    unsigned seen = 0;
    addr_err err;
    int r;

    addr_path_reset(path);
    memset(params, 0, sizeof(*params));
    params->size = -1;

    if ((err = addr_parse_prefix(&p, end, "FROM:")) != SMTP_ADDR_OK)
        return err;
    /* The address may be UTF-8 only if SMTPUTF8 follows among the
     * parameters, so it is parsed permissively and judged afterwards. */
    if ((err = addr_parse_path(&p, end, true, true, path)) != SMTP_ADDR_OK)
        goto fail;
    if (!params_start(p, end)) {
        err = SMTP_ADDR_SYNTAX;
        goto fail;
    }
    while ((r = next_param(&p, end, &prm)) > 0) {
        if ((err = apply_mail_param(&prm, &seen, params)) != SMTP_ADDR_OK)
            goto fail;
    }
    if (r < 0) {
        err = SMTP_ADDR_BAD_PARAM;
        goto fail;
    }
    if (path->is_utf8 && !params->smtputf8) {
        err = SMTP_ADDR_UTF8_NO_SMTPUTF8;
        goto fail;
    }
    return SMTP_ADDR_OK;
fail:
    addr_path_reset(path);
    return err;
}

enum smtp_addr_error smtp_parse_rcpt(const char *arg, size_t len, bool smtputf8,
                                     struct smtp_path *path, struct smtp_rcpt_params *params)
{
    const unsigned char *p = (const unsigned char *)arg, *end = p + len;
    struct esmtp_param prm;
    unsigned seen = 0;
    addr_err err;
    int r;

    addr_path_reset(path);
    memset(params, 0, sizeof(*params));

    if ((err = addr_parse_prefix(&p, end, "TO:")) != SMTP_ADDR_OK)
        return err;
    if ((err = addr_parse_path(&p, end, false, smtputf8, path)) != SMTP_ADDR_OK)
        goto fail;
    if (!params_start(p, end)) {
        err = SMTP_ADDR_SYNTAX;
        goto fail;
    }
    while ((r = next_param(&p, end, &prm)) > 0) {
        if ((err = apply_rcpt_param(&prm, smtputf8, &seen, params)) != SMTP_ADDR_OK)
            goto fail;
    }
    if (r < 0) {
        err = SMTP_ADDR_BAD_PARAM;
        goto fail;
    }
    return SMTP_ADDR_OK;
fail:
    addr_path_reset(path);
    return err;
}
