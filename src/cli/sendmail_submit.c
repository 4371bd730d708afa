/* The one-shot submission client of `sluice sendmail` and `sluice send`: a
 * small blocking SMTP client on one socket with OpenSSL, one transaction
 * per connection. The daemon's event-driven client (deliver/client.c) is
 * built for pools and pipelining inside the loop; a command that sends one
 * message and exits is clearer as straight-line code with socket timeouts.
 * STARTTLS is used whenever offered and then the daemon's own certificate
 * is pinned; without STARTTLS only a loopback peer is spoken to. */
#include "cli/sendmail.h"

#include "core/base64.h"
#include "core/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

void sm_message_free(struct sm_message *m)
{
    free(m->from);
    for (size_t i = 0; i < m->nrcpts; i++)
        free(m->rcpts[i]);
    free(m->rcpts);
    free(m->data);
    memset(m, 0, sizeof *m);
}

/* ---- the credential ---- */

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    size_t k = strspn(s, " \t");
    memmove(s, s + k, strlen(s + k) + 1);
}

/* "user = NAME" and "password = SECRET" lines; '#' starts a comment line. */
static int read_credential(struct sm_submit_conf *c, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "[sendmail] credential_file %s: %s", path, strerror(errno));
        return errno == EACCES ? SM_EX_NOPERM : SM_EX_CONFIG;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "[sendmail] credential_file %s: not a regular file", path);
        close(fd);
        return SM_EX_CONFIG;
    }
    if (st.st_uid != geteuid() || (st.st_mode & 077)) {
        snprintf(err, errlen,
                 "[sendmail] credential_file %s: it must belong to you (uid %u; it has %u) and "
                 "have mode 0600 (it has %04o): chmod 600 %s",
                 path, (unsigned)geteuid(), (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
                 path);
        close(fd);
        return SM_EX_NOPERM;
    }
    FILE *f = fdopen(fd, "r");
    char line[1024];
    int n = 0, rc = SM_EX_OK;
    while (f && fgets(line, sizeof line, f)) {
        n++;
        trim(line);
        if (!line[0] || line[0] == '#')
            continue;
        char *eq = strchr(line, '=');
        if (!eq) {
            snprintf(err, errlen, "%s line %d: expected 'user = NAME' or 'password = SECRET'", path,
                     n);
            rc = SM_EX_CONFIG;
            break;
        }
        *eq = '\0';
        char *v = eq + 1;
        trim(line);
        trim(v);
        if (strcmp(line, "user") == 0 && strlen(v) < sizeof c->user) {
            strcpy(c->user, v);
        } else if (strcmp(line, "password") == 0 && strlen(v) < sizeof c->password) {
            strcpy(c->password, v);
        } else {
            snprintf(err, errlen, "%s line %d: unknown key '%s' or value too long", path, n, line);
            rc = SM_EX_CONFIG;
            break;
        }
    }
    OPENSSL_cleanse(line, sizeof line);
    if (f)
        fclose(f);
    else
        close(fd);
    if (rc == SM_EX_OK && (!c->user[0] || !c->password[0])) {
        snprintf(err, errlen, "%s: needs both a 'user = ' and a 'password = ' line", path);
        rc = SM_EX_CONFIG;
    }
    return rc;
}

int sm_submit_conf_load(struct sm_submit_conf *c, const struct config *cfg, char *err,
                        size_t errlen)
{
    memset(c, 0, sizeof *c);
    const char *addr = *cfg->sendmail_server ? cfg->sendmail_server : cfg->listen_submission;
    if (!addr || !*addr) {
        snprintf(err, errlen,
                 "no submission address: set [sendmail] server (the submission listener is "
                 "disabled)");
        return SM_EX_CONFIG;
    }
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t hl = colon ? (size_t)(colon - addr) : 0;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (!colon || hl == 0 || hl >= sizeof c->host || strlen(colon + 1) >= sizeof c->port) {
        snprintf(err, errlen, "submission address '%s' is not host:port", addr);
        return SM_EX_CONFIG;
    }
    memcpy(c->host, h, hl);
    c->host[hl] = '\0';
    strcpy(c->port, colon + 1);
    if (strcmp(c->host, "0.0.0.0") == 0)
        strcpy(c->host, "127.0.0.1");
    else if (strcmp(c->host, "::") == 0)
        strcpy(c->host, "::1");
    c->trust_cert = cfg->tls_cert;
    c->helo = cfg->hostname && *cfg->hostname ? cfg->hostname : "localhost";
    c->timeout = cfg->sendmail_timeout > 0 ? cfg->sendmail_timeout : 60;
    if (*cfg->sendmail_credential_file)
        return read_credential(c, cfg->sendmail_credential_file, err, errlen);
    const char *u = getenv("SLUICE_SENDMAIL_USER"), *p = getenv("SLUICE_SENDMAIL_PASSWORD");
    if (u && *u) {
        if (!p || !*p || strlen(u) >= sizeof c->user || strlen(p) >= sizeof c->password) {
            snprintf(err, errlen, "SLUICE_SENDMAIL_USER needs SLUICE_SENDMAIL_PASSWORD");
            return SM_EX_CONFIG;
        }
        strcpy(c->user, u);
        strcpy(c->password, p);
    }
    return SM_EX_OK;
}

void sm_submit_conf_wipe(struct sm_submit_conf *c)
{
    OPENSSL_cleanse(c->password, sizeof c->password);
}

/* ---- the connection ---- */

struct conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    bool loopback;
    char in[8192];
    size_t have, off;
    char *reply; /* 512 octets: the last reply, one line per line of it */
};

static int conn_write(struct conn *k, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w;
        if (k->ssl) {
            size_t done = 0;
            w = SSL_write_ex(k->ssl, s, n, &done) == 1 ? (ssize_t)done : -1;
        } else {
            w = send(k->fd, s, n, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
        }
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int conn_fill(struct conn *k)
{
    if (k->off > 0) {
        memmove(k->in, k->in + k->off, k->have - k->off);
        k->have -= k->off;
        k->off = 0;
    }
    if (k->have == sizeof k->in)
        return -1;
    ssize_t r;
    if (k->ssl) {
        size_t got = 0;
        r = SSL_read_ex(k->ssl, k->in + k->have, sizeof k->in - k->have, &got) == 1 ? (ssize_t)got
                                                                                    : -1;
    } else {
        do
            r = recv(k->fd, k->in + k->have, sizeof k->in - k->have, 0);
        while (r < 0 && errno == EINTR);
    }
    if (r <= 0)
        return -1;
    k->have += (size_t)r;
    return 0;
}

/* Reads one whole reply; returns its code, or -1 (connection lost, timeout,
 * garbage). Keeps the reply text in k->reply. */
static int read_reply(struct conn *k, bool *starttls, bool *auth_plain)
{
    size_t rlen = 0;
    k->reply[0] = '\0';
    for (;;) {
        char *nl;
        while (!(nl = memchr(k->in + k->off, '\n', k->have - k->off)))
            if (conn_fill(k) < 0) {
                snprintf(k->reply, 512, "connection lost or timed out waiting for a reply");
                return -1;
            }
        char *line = k->in + k->off;
        size_t n = (size_t)(nl - line);
        k->off += n + 1;
        if (n && line[n - 1] == '\r')
            n--;
        if (n < 3 || line[0] < '2' || line[0] > '5' || (n > 3 && line[3] != ' ' && line[3] != '-'))
            return snprintf(k->reply, 512, "malformed reply '%.100s'", line), -1;
        if (starttls && n >= 12 && strncasecmp(line + 4, "STARTTLS", 8) == 0)
            *starttls = true;
        if (auth_plain && n > 9 && strncasecmp(line + 4, "AUTH", 4) == 0) {
            for (size_t i = 8; i + 5 <= n; i++)
                if (strncasecmp(line + i, "PLAIN", 5) == 0 &&
                    (line[i - 1] == ' ' || line[i - 1] == '='))
                    *auth_plain = true;
        }
        if (rlen + n + 2 < 512) {
            if (rlen)
                k->reply[rlen++] = ' ';
            memcpy(k->reply + rlen, line, n);
            rlen += n;
            k->reply[rlen] = '\0';
        }
        if (n == 3 || line[3] == ' ')
            return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    }
}

__attribute__((format(printf, 2, 3))) static int command(struct conn *k, const char *fmt, ...)
{
    char buf[1100];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n + 2 >= sizeof buf)
        return -1;
    memcpy(buf + n, "\r\n", 2);
    int rc = conn_write(k, buf, (size_t)n + 2);
    OPENSSL_cleanse(buf, sizeof buf);
    if (rc < 0) {
        snprintf(k->reply, 512, "connection lost while sending a command");
        return -1;
    }
    return read_reply(k, NULL, NULL);
}

static int open_socket(struct conn *k, const struct sm_submit_conf *c)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG}, *res = NULL;
    int g = getaddrinfo(c->host, c->port, &hints, &res);
    if (g != 0) {
        snprintf(k->reply, 512, "cannot resolve %s: %s", c->host, gai_strerror(g));
        return -1;
    }
    struct timeval tv = {.tv_sec = c->timeout};
    int err = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            k->fd = fd;
            if (a->ai_family == AF_INET)
                k->loopback =
                    (ntohl(((struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr) >> 24) == 127;
            else if (a->ai_family == AF_INET6)
                k->loopback = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr);
            freeaddrinfo(res);
            return 0;
        }
        err = errno;
        close(fd);
    }
    freeaddrinfo(res);
    snprintf(k->reply, 512, "cannot connect to %s port %s: %s", c->host, c->port,
             strerror(err ? err : ECONNREFUSED));
    return -1;
}

/* The first certificate of the daemon's certificate file, or NULL. */
static X509 *pinned_cert(const char *path)
{
    FILE *f = path && *path ? fopen(path, "r") : NULL;
    if (!f)
        return NULL;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    return x;
}

static int start_tls(struct conn *k, const struct sm_submit_conf *c)
{
    X509 *pin = pinned_cert(c->trust_cert);
    k->ctx = SSL_CTX_new(TLS_client_method());
    if (!k->ctx) {
        X509_free(pin);
        return snprintf(k->reply, 512, "TLS: out of memory"), -1;
    }
    SSL_CTX_set_min_proto_version(k->ctx, TLS1_2_VERSION);
    if (pin) {
        /* the exact certificate is the trust anchor: compared after the
         * handshake, whatever issued it and whatever name it carries */
        SSL_CTX_set_verify(k->ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(k->ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_default_verify_paths(k->ctx);
    }
    k->ssl = SSL_new(k->ctx);
    if (!k->ssl || SSL_set_fd(k->ssl, k->fd) != 1) {
        X509_free(pin);
        return snprintf(k->reply, 512, "TLS: cannot set up the connection"), -1;
    }
    SSL_set_tlsext_host_name(k->ssl, c->helo);
    if (!pin)
        SSL_set1_host(k->ssl, c->helo);
    if (SSL_connect(k->ssl) != 1) {
        unsigned long e = ERR_get_error();
        snprintf(k->reply, 512, "TLS handshake with %s failed: %s%s", c->host,
                 e ? ERR_reason_error_string(e) : "connection closed",
                 pin ? ""
                     : " (no readable [tls] cert to pin; system CAs and the name in [server] "
                       "hostname were used)");
        X509_free(pin);
        SSL_free(k->ssl);
        k->ssl = NULL;
        return -1;
    }
    if (pin) {
        X509 *peer = SSL_get1_peer_certificate(k->ssl);
        bool same = peer && X509_cmp(peer, pin) == 0;
        X509_free(peer);
        X509_free(pin);
        if (!same) {
            snprintf(k->reply, 512,
                     "TLS: %s presented a certificate other than %s ([tls] cert): refusing to "
                     "send",
                     c->host, c->trust_cert);
            return -1;
        }
    }
    return 0;
}

static void conn_close(struct conn *k)
{
    if (k->ssl) {
        SSL_shutdown(k->ssl);
        SSL_free(k->ssl);
    }
    SSL_CTX_free(k->ctx);
    if (k->fd >= 0)
        close(k->fd);
}

/* Writes the message dot-stuffed (RFC 5321 4.5.2) and the final ".". */
static int send_data(struct conn *k, const char *d, size_t len)
{
    char buf[16384];
    size_t n = 0;
    bool bol = true;
    for (size_t i = 0; i < len; i++) {
        if (n + 4 > sizeof buf) {
            if (conn_write(k, buf, n) < 0)
                return -1;
            n = 0;
        }
        if (bol && d[i] == '.')
            buf[n++] = '.';
        buf[n++] = d[i];
        bol = d[i] == '\n';
    }
    if (!bol) {
        buf[n++] = '\r';
        buf[n++] = '\n';
    }
    if (n + 3 > sizeof buf) {
        if (conn_write(k, buf, n) < 0)
            return -1;
        n = 0;
    }
    memcpy(buf + n, ".\r\n", 3);
    return conn_write(k, buf, n + 3);
}

static bool eight_bit(const char *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)d[i] >= 0x80)
            return true;
    return false;
}

static enum sm_result classify(int code)
{
    return code >= 500 ? SM_REFUSED : SM_TEMPORARY;
}

static int add_ptr(char ***v, size_t *n, char *p)
{
    char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv)
        return -1;
    nv[(*n)++] = p;
    *v = nv;
    return 0;
}

/* EHLO and its extensions. Returns the reply code or -1. */
static int ehlo(struct conn *k, const struct sm_submit_conf *c, bool *starttls, bool *auth_plain)
{
    char buf[300];
    int n = snprintf(buf, sizeof buf, "EHLO %s\r\n", c->helo);
    if (n < 0 || (size_t)n >= sizeof buf || conn_write(k, buf, (size_t)n) < 0)
        return snprintf(k->reply, 512, "connection lost while sending EHLO"), -1;
    *starttls = *auth_plain = false;
    return read_reply(k, starttls, auth_plain);
}

static enum sm_result auth(struct conn *k, const struct sm_submit_conf *c, bool offered)
{
    if (!offered) {
        snprintf(k->reply, 512, "the relay does not offer AUTH PLAIN%s",
                 k->ssl ? "" : " without TLS");
        return SM_TEMPORARY;
    }
    /* RFC 4616: authzid NUL authcid NUL passwd */
    size_t ul = strlen(c->user), pl = strlen(c->password);
    unsigned char raw[sizeof c->user + sizeof c->password + 2];
    raw[0] = '\0';
    memcpy(raw + 1, c->user, ul);
    raw[1 + ul] = '\0';
    memcpy(raw + 2 + ul, c->password, pl);
    char b64[BASE64_ENCODED_SIZE(sizeof raw)];
    base64_encode(raw, ul + pl + 2, b64);
    int code = command(k, "AUTH PLAIN %s", b64);
    OPENSSL_cleanse(raw, sizeof raw);
    OPENSSL_cleanse(b64, sizeof b64);
    if (code == 235)
        return SM_SENT;
    /* 4xx (454) is the relay's trouble: try later; 5xx is this credential */
    return code >= 500 ? SM_AUTH : SM_TEMPORARY;
}

static enum sm_result transaction(struct conn *k, const struct sm_submit_conf *c,
                                  const struct sm_message *m, char ***deferred, size_t *ndeferred,
                                  char ***rejected, size_t *nrejected)
{
    int code = read_reply(k, NULL, NULL);
    if (code != 220)
        return code < 0 ? SM_TEMPORARY : classify(code);
    bool starttls, plain;
    code = ehlo(k, c, &starttls, &plain);
    if (code != 250)
        return code < 0 ? SM_TEMPORARY : classify(code);
    bool smtputf8 = strcasestr(k->reply, "SMTPUTF8") != NULL;
    if (starttls) {
        code = command(k, "STARTTLS");
        if (code != 220)
            return SM_TEMPORARY;
        if (k->have > k->off) {
            /* bytes after the 220 were sent in plaintext and would be read
             * as if they came over TLS (RFC 3207 5, the STARTTLS injection) */
            snprintf(k->reply, 512, "%s sent data after its STARTTLS reply: refusing", c->host);
            return SM_TEMPORARY;
        }
        k->have = k->off = 0;
        if (start_tls(k, c) < 0)
            return SM_TEMPORARY;
        code = ehlo(k, c, &starttls, &plain);
        if (code != 250)
            return code < 0 ? SM_TEMPORARY : classify(code);
        smtputf8 = strcasestr(k->reply, "SMTPUTF8") != NULL;
    } else if (!k->loopback) {
        snprintf(k->reply, 512,
                 "%s does not offer STARTTLS and is not on loopback: refusing to send in "
                 "plaintext",
                 c->host);
        return SM_TEMPORARY;
    }
    if (c->user[0]) {
        enum sm_result r = auth(k, c, plain);
        if (r != SM_SENT)
            return r;
    }
    bool eight = eight_bit(m->data, m->len), utf8 = eight_bit(m->from, strlen(m->from));
    for (size_t i = 0; i < m->nrcpts && !utf8; i++)
        utf8 = eight_bit(m->rcpts[i], strlen(m->rcpts[i]));
    /* RFC 6531: a non-ASCII address needs SMTPUTF8, which the relay offers or not */
    code = command(k, "MAIL FROM:<%s>%s%s", m->from, eight ? " BODY=8BITMIME" : "",
                   utf8 && smtputf8 ? " SMTPUTF8" : "");
    if (code != 250)
        return code < 0 ? SM_TEMPORARY : classify(code);
    size_t accepted = 0, refused = 0;
    char lastrej[512] = "";
    for (size_t i = 0; i < m->nrcpts; i++) {
        code = command(k, "RCPT TO:<%s>", m->rcpts[i]);
        if (code < 0)
            return SM_TEMPORARY;
        if (code == 250 || code == 251) {
            accepted++;
        } else if (code >= 500) {
            refused++;
            snprintf(lastrej, sizeof lastrej, "%s", k->reply);
            char *r = NULL;
            if (asprintf(&r, "%s: %s", m->rcpts[i], k->reply) < 0 ||
                add_ptr(rejected, nrejected, r) < 0) {
                free(r);
                return SM_TEMPORARY;
            }
        } else if (add_ptr(deferred, ndeferred, m->rcpts[i]) < 0) {
            return SM_TEMPORARY;
        }
    }
    if (accepted == 0) {
        command(k, "RSET");
        if (refused == m->nrcpts) {
            snprintf(k->reply, 512, "%s", lastrej);
            return SM_NO_RCPT;
        }
        return SM_TEMPORARY; /* every one deferred or refused, some deferred */
    }
    code = command(k, "DATA");
    if (code != 354)
        return code < 0 ? SM_TEMPORARY : classify(code);
    if (send_data(k, m->data, m->len) < 0) {
        snprintf(k->reply, 512, "connection lost while sending the message");
        return SM_TEMPORARY;
    }
    code = read_reply(k, NULL, NULL);
    if (code != 250)
        return code < 0 ? SM_TEMPORARY : classify(code);
    command(k, "QUIT");
    return SM_SENT;
}

enum sm_result sm_submit(const struct sm_submit_conf *c, const struct sm_message *m,
                         char reply[512], char ***deferred, size_t *ndeferred, char ***rejected,
                         size_t *nrejected)
{
    struct conn k = {.fd = -1, .reply = reply};
    *deferred = *rejected = NULL;
    *ndeferred = *nrejected = 0;
    reply[0] = '\0';
    enum sm_result r = SM_TEMPORARY;
    if (open_socket(&k, c) == 0)
        r = transaction(&k, c, m, deferred, ndeferred, rejected, nrejected);
    if (r != SM_SENT) {
        /* a failed transaction keeps every recipient: none of them got it */
        free(*deferred);
        *deferred = NULL;
        *ndeferred = 0;
        if (r != SM_NO_RCPT) { /* the others give no per-recipient refusals */
            for (size_t i = 0; i < *nrejected; i++)
                free((*rejected)[i]);
            free(*rejected);
            *rejected = NULL;
            *nrejected = 0;
        }
    }
    conn_close(&k);
    return r;
}
