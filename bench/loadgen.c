/* sluice-loadgen: an SMTP submission load generator for the benchmarks.
 * One thread, one epoll loop, -c client sessions in flight; each session
 * connects, optionally upgrades with STARTTLS or starts in TLS, optionally
 * authenticates with AUTH PLAIN, sends --per-connection messages and quits.
 * A message counts as accepted only on a 250 reply to the end of its data;
 * its latency runs from connect() (or from MAIL for a session's later
 * messages) to that 250, which is what a submitting application waits for. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum tls_mode { TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT };

struct options {
    const char *host;
    const char *port;
    const char *sni;
    enum tls_mode tls;
    const char *auth; /* USER:PASS, NULL for none */
    const char *cafile;
    bool insecure;
    bool resume;
    bool pipelining;
    bool json;
    int concurrency;
    long total;      /* messages to try; 0 with a duration: unbounded */
    double duration; /* seconds; 0: none */
    size_t size;
    int per_connection;
    double timeout;
    const char *from;
    const char *to;
    const char *ehlo;
};

/* What the session waits for next; each state names the reply it expects. */
enum state {
    ST_CONNECTING,
    ST_HANDSHAKE,
    ST_GREETING,
    ST_EHLO,
    ST_STARTTLS,
    ST_AUTH,
    ST_MAIL,
    ST_RCPT,
    ST_DATA,
    ST_DOT,
    ST_QUIT,
    ST_IDLE, /* slot without a session */
};

/* Failure kinds besides refusals by reply code. */
enum fail_kind {
    FAIL_CONNECT,
    FAIL_TLS,
    FAIL_TIMEOUT,
    FAIL_EOF,
    FAIL_PROTOCOL,
    FAIL_IO,
    FAIL_KINDS
};
static const char *const fail_names[FAIL_KINDS] = {"connect", "tls",      "timeout",
                                                   "eof",     "protocol", "io"};

struct session {
    int fd;
    SSL *ssl;
    enum state st;
    bool after_handshake_greeting; /* implicit TLS: the banner comes after the handshake */
    bool txn_refused;              /* pipelined MAIL/RCPT refused; DATA reply still due */
    bool in_message;               /* a claimed message is not finished yet */
    bool watching_out;
    bool read_wants_write;
    char *out;
    size_t out_len, out_off, out_cap;
    char in[8192];
    size_t in_len;
    char reply_text[512]; /* last line of the current reply, for error samples */
    bool cap_pipelining, cap_starttls;
    int msgs_done;
    long seq;          /* 1.. in claim order: the Message-ID of the message in flight */
    double t_start;    /* latency origin of the message in flight */
    double t_activity; /* for the idle timeout */
};

struct stats {
    long claimed, accepted, failed;
    long connections, handshakes, resumed;
    long by_class[6];  /* refusals at any stage by first digit: [4], [5]; others unexpected */
    long by_code[600]; /* every refusing or unexpected reply code */
    long by_kind[FAIL_KINDS];
    double *lat;
    size_t lat_len, lat_cap;
    char samples[5][200];
    int nsamples;
};

static struct options opt = {
    .host = "127.0.0.1",
    .port = "587",
    .tls = TLS_NONE,
    .concurrency = 1,
    .size = 10240,
    .per_connection = 1,
    .timeout = 30.0,
    .from = "loadgen@bench.test",
    .to = "sink@bench.test",
    .ehlo = "loadgen.bench.test",
};
static struct stats st;
static SSL_CTX *ctx;
static SSL_SESSION *saved_session;
static struct addrinfo *target;
static int epfd;
static char *body;
static size_t body_len;
static char auth_line[1024];
static double t_begin, t_deadline;
static unsigned long run_id;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sluice-loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory");
    return q;
}

static void sample(const char *what, const char *text)
{
    char buf[200];
    snprintf(buf, sizeof buf, "%s: %s", what, text);
    for (int i = 0; i < st.nsamples; i++)
        if (strcmp(st.samples[i], buf) == 0)
            return;
    if (st.nsamples < 5)
        snprintf(st.samples[st.nsamples++], sizeof st.samples[0], "%s", buf);
}

/* A new message may start while the count and the duration allow it. */
static bool claim(void)
{
    if (opt.total > 0 && st.claimed >= opt.total)
        return false;
    if (opt.duration > 0 && now() >= t_deadline)
        return false;
    st.claimed++;
    return true;
}

static bool claim_for(struct session *s)
{
    if (!claim())
        return false;
    s->seq = st.claimed;
    s->in_message = true;
    return true;
}

static void message_failed(struct session *s)
{
    if (s->in_message) {
        s->in_message = false;
        st.failed++;
    }
}

/* ---- the message: a header block per message, one body for all ---- */

static int format_header(char *buf, size_t cap, long seq)
{
    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    /* fixed-width fields, so every header block has the length build_body measured */
    return snprintf(buf, cap,
                    "From: Load Generator <%s>\r\nTo: <%s>\r\nSubject: load test message %010ld\r\n"
                    "Date: %s\r\nMessage-ID: <loadgen.%08lx.%010ld@bench.test>\r\n"
                    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
                    opt.from, opt.to, seq, date, run_id, seq);
}

/* Text lines that never start with '.', so no dot-stuffing is needed and
 * --size is the exact size of the message (header block included). */
static void build_body(void)
{
    static const char line[] = "The quick brown fox jumps over the lazy dog, a pangram for "
                               "load testing 0123.\r\n";
    char hdr[1200];
    size_t hlen = (size_t)format_header(hdr, sizeof hdr, 0);
    size_t want = opt.size > hlen + 2 ? opt.size - hlen : 2;
    body = xrealloc(NULL, want + sizeof line);
    body_len = 0;
    while (body_len + sizeof line - 1 <= want) {
        memcpy(body + body_len, line, sizeof line - 1);
        body_len += sizeof line - 1;
    }
    if (want >= body_len + 2) {
        size_t pad = want - body_len - 2;
        memset(body + body_len, 'x', pad);
        body_len += pad;
        memcpy(body + body_len, "\r\n", 2);
        body_len += 2;
    }
}

/* ---- output ---- */

static void out_append(struct session *s, const char *p, size_t n)
{
    if (s->out_len + n > s->out_cap) {
        s->out_cap = (s->out_len + n) * 2;
        s->out = xrealloc(s->out, s->out_cap);
    }
    memcpy(s->out + s->out_len, p, n);
    s->out_len += n;
}

__attribute__((format(printf, 2, 3))) static void out_printf(struct session *s, const char *fmt,
                                                             ...)
{
    char buf[1200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    out_append(s, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static void append_message(struct session *s)
{
    char hdr[1200];
    int n = format_header(hdr, sizeof hdr, s->seq);
    out_append(s, hdr, (size_t)n < sizeof hdr ? (size_t)n : sizeof hdr - 1);
    out_append(s, body, body_len);
    out_append(s, ".\r\n", 3);
}

/* ---- session life ---- */

static void watch(struct session *s, bool out)
{
    if (out == s->watching_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = s};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev) == 0)
        s->watching_out = out;
}

static void session_close(struct session *s)
{
    if (s->ssl) {
        if (s->st == ST_QUIT)
            SSL_shutdown(s->ssl); /* one close_notify, not waited for */
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
    }
    s->fd = -1;
    s->st = ST_IDLE;
    s->in_len = s->out_len = s->out_off = 0;
}

static void session_fail(struct session *s, enum fail_kind k, const char *text)
{
    st.by_kind[k]++;
    sample(fail_names[k], text);
    message_failed(s);
    session_close(s);
}

/* A refusal (or an unexpected reply) ends the transaction: the message is
 * counted as failed by its reply code and the session quits. */
static void refused(struct session *s, int code)
{
    st.by_class[code / 100 < 6 ? code / 100 : 0]++;
    st.by_code[code]++;
    sample("reply", s->reply_text);
    message_failed(s);
    if (code == 421) {
        session_close(s);
        return;
    }
    s->st = ST_QUIT;
    out_printf(s, "QUIT\r\n");
}

static bool session_start(struct session *s)
{
    if (!claim_for(s))
        return false;
    s->msgs_done = 0;
    s->cap_pipelining = s->cap_starttls = false;
    s->txn_refused = false;
    s->read_wants_write = false;
    s->t_start = s->t_activity = now();
    st.connections++;
    s->fd = socket(target->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        session_fail(s, FAIL_CONNECT, strerror(errno));
        return true;
    }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->st = ST_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = s};
    s->watching_out = true;
    epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ev);
    if (connect(s->fd, target->ai_addr, target->ai_addrlen) < 0 && errno != EINPROGRESS)
        session_fail(s, FAIL_CONNECT, strerror(errno));
    return true;
}

static void tls_begin(struct session *s, bool greeting_next)
{
    s->ssl = SSL_new(ctx);
    if (!s->ssl) {
        session_fail(s, FAIL_TLS, "SSL_new failed");
        return;
    }
    SSL_set_fd(s->ssl, s->fd);
    const char *name = opt.sni ? opt.sni : opt.host;
    struct in6_addr a;
    if (inet_pton(AF_INET, name, &a) != 1 && inet_pton(AF_INET6, name, &a) != 1)
        SSL_set_tlsext_host_name(s->ssl, name);
    if (opt.cafile)
        SSL_set1_host(s->ssl, name);
    if (opt.resume && saved_session)
        SSL_set_session(s->ssl, saved_session);
    SSL_set_connect_state(s->ssl);
    s->st = ST_HANDSHAKE;
    s->after_handshake_greeting = greeting_next;
    st.handshakes++;
}

static void send_ehlo(struct session *s)
{
    s->cap_pipelining = s->cap_starttls = false;
    s->st = ST_EHLO;
    out_printf(s, "EHLO %s\r\n", opt.ehlo);
}

static void send_transaction(struct session *s)
{
    s->txn_refused = false;
    out_printf(s, "MAIL FROM:<%s>\r\n", opt.from);
    if (opt.pipelining && s->cap_pipelining)
        out_printf(s, "RCPT TO:<%s>\r\nDATA\r\n", opt.to); /* RFC 2920: one write */
    s->st = ST_MAIL;
}

/* After the capabilities: TLS, then AUTH, then the first message. */
static void after_ehlo(struct session *s)
{
    if (opt.tls == TLS_STARTTLS && !s->ssl) {
        if (!s->cap_starttls) {
            session_fail(s, FAIL_PROTOCOL, "STARTTLS not offered");
            return;
        }
        s->st = ST_STARTTLS;
        out_printf(s, "STARTTLS\r\n");
    } else if (opt.auth) {
        s->st = ST_AUTH;
        out_append(s, auth_line, strlen(auth_line));
    } else {
        send_transaction(s);
    }
}

static void next_message_or_quit(struct session *s)
{
    if (s->msgs_done < opt.per_connection && claim_for(s)) {
        s->t_start = now();
        send_transaction(s);
    } else {
        s->st = ST_QUIT;
        out_printf(s, "QUIT\r\n");
    }
}

static void on_reply(struct session *s, int code)
{
    switch (s->st) {
    case ST_GREETING:
        if (code != 220)
            return refused(s, code);
        return send_ehlo(s);
    case ST_EHLO:
        if (code != 250)
            return refused(s, code);
        return after_ehlo(s);
    case ST_STARTTLS:
        if (code != 220)
            return refused(s, code);
        if (s->in_len > 0) /* bytes sent before the handshake would be injected */
            return session_fail(s, FAIL_PROTOCOL, "data after the 220 to STARTTLS");
        return tls_begin(s, false);
    case ST_AUTH:
        if (code != 235)
            return refused(s, code);
        return send_transaction(s);
    case ST_MAIL:
        if (code != 250) {
            if (!(opt.pipelining && s->cap_pipelining))
                return refused(s, code);
            s->txn_refused = true;
            st.by_class[code / 100]++;
            st.by_code[code]++;
            sample("reply", s->reply_text);
        }
        if (!(opt.pipelining && s->cap_pipelining))
            out_printf(s, "RCPT TO:<%s>\r\n", opt.to);
        s->st = ST_RCPT;
        return;
    case ST_RCPT:
        if (code != 250 && code != 251) {
            if (!(opt.pipelining && s->cap_pipelining))
                return refused(s, code);
            if (!s->txn_refused) {
                st.by_class[code / 100]++;
                st.by_code[code]++;
                sample("reply", s->reply_text);
            }
            s->txn_refused = true;
        }
        if (!(opt.pipelining && s->cap_pipelining))
            out_printf(s, "DATA\r\n");
        s->st = ST_DATA;
        return;
    case ST_DATA:
        if (s->txn_refused) {
            /* already counted; a 354 despite the refusal needs a lone dot (RFC 2920 3.1) */
            message_failed(s);
            if (code == 354) {
                out_printf(s, ".\r\n");
                s->st = ST_DOT;
            } else {
                s->st = ST_QUIT;
                out_printf(s, "QUIT\r\n");
            }
            return;
        }
        if (code != 354)
            return refused(s, code);
        append_message(s);
        s->st = ST_DOT;
        return;
    case ST_DOT:
        if (!s->in_message) { /* the lone dot after a refused pipelined transaction */
            s->st = ST_QUIT;
            out_printf(s, "QUIT\r\n");
            return;
        }
        if (code != 250)
            return refused(s, code);
        s->in_message = false;
        s->msgs_done++;
        st.accepted++;
        if (st.lat_len == st.lat_cap) {
            st.lat_cap = st.lat_cap ? st.lat_cap * 2 : 4096;
            st.lat = xrealloc(st.lat, st.lat_cap * sizeof *st.lat);
        }
        st.lat[st.lat_len++] = now() - s->t_start;
        return next_message_or_quit(s);
    case ST_QUIT:
        return session_close(s);
    default:
        return session_fail(s, FAIL_PROTOCOL, "reply in an unexpected state");
    }
}

static void ehlo_line(struct session *s, const char *kw)
{
    if (strncasecmp(kw, "PIPELINING", 10) == 0)
        s->cap_pipelining = true;
    else if (strncasecmp(kw, "STARTTLS", 8) == 0)
        s->cap_starttls = true;
}

/* Splits the input into reply lines; a line "ddd-" continues, "ddd " ends. */
static void parse_replies(struct session *s)
{
    size_t off = 0;
    while (s->fd >= 0 && s->st != ST_HANDSHAKE) {
        char *nl = memchr(s->in + off, '\n', s->in_len - off);
        if (!nl)
            break;
        char *line = s->in + off;
        size_t len = (size_t)(nl - line);
        off += len + 1;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (len < 3 || line[0] < '1' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
            line[2] < '0' || line[2] > '9' || (len > 3 && line[3] != ' ' && line[3] != '-')) {
            session_fail(s, FAIL_PROTOCOL, "malformed reply line");
            return;
        }
        snprintf(s->reply_text, sizeof s->reply_text, "%.*s", (int)len, line);
        if (s->st == ST_EHLO && len > 4) {
            line[len] = '\0';
            ehlo_line(s, line + 4);
        }
        if (len > 3 && line[3] == '-')
            continue;
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        /* on_reply may start TLS: what follows must not be read as plaintext */
        size_t rest = s->in_len - off;
        memmove(s->in, s->in + off, rest);
        s->in_len = rest;
        off = 0;
        on_reply(s, code);
    }
    if (s->fd >= 0 && off > 0) {
        memmove(s->in, s->in + off, s->in_len - off);
        s->in_len -= off;
    }
    if (s->fd >= 0 && s->in_len == sizeof s->in)
        session_fail(s, FAIL_PROTOCOL, "reply line too long");
}

static const char *tls_error_text(void)
{
    static char buf[160];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return e ? buf : "handshake failed";
}

static void do_handshake(struct session *s)
{
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        if (SSL_session_reused(s->ssl))
            st.resumed++;
        if (s->after_handshake_greeting)
            s->st = ST_GREETING;
        else
            send_ehlo(s);
        return;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        watch(s, e == SSL_ERROR_WANT_WRITE);
        return;
    }
    session_fail(s, e == SSL_ERROR_SYSCALL && r == 0 ? FAIL_EOF : FAIL_TLS, tls_error_text());
}

/* Returns false when the session ended. */
static bool flush(struct session *s)
{
    while (s->out_off < s->out_len) {
        size_t n = s->out_len - s->out_off;
        ssize_t w;
        if (s->ssl) {
            int r = SSL_write(s->ssl, s->out + s->out_off, n > INT_MAX ? INT_MAX : (int)n);
            if (r <= 0) {
                int e = SSL_get_error(s->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                    return true;
                session_fail(s, FAIL_IO, tls_error_text());
                return false;
            }
            w = r;
        } else {
            w = send(s->fd, s->out + s->out_off, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return true;
                session_fail(s, errno == EPIPE || errno == ECONNRESET ? FAIL_EOF : FAIL_IO,
                             strerror(errno));
                return false;
            }
        }
        s->out_off += (size_t)w;
        s->t_activity = now();
    }
    s->out_off = s->out_len = 0;
    return true;
}

/* Reads what is there; returns false when the session ended. */
static bool fill(struct session *s)
{
    s->read_wants_write = false;
    for (;;) {
        size_t room = sizeof s->in - s->in_len;
        if (room == 0)
            return true;
        ssize_t r;
        if (s->ssl) {
            int n = SSL_read(s->ssl, s->in + s->in_len, (int)room);
            if (n <= 0) {
                int e = SSL_get_error(s->ssl, n);
                if (e == SSL_ERROR_WANT_READ)
                    return true;
                if (e == SSL_ERROR_WANT_WRITE) {
                    s->read_wants_write = true;
                    return true;
                }
                if (s->st == ST_QUIT) {
                    session_close(s);
                    return false;
                }
                session_fail(
                    s, e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL ? FAIL_EOF : FAIL_TLS,
                    e == SSL_ERROR_SSL ? tls_error_text() : "connection closed");
                return false;
            }
            r = n;
        } else {
            r = recv(s->fd, s->in + s->in_len, room, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                return true;
            if (r <= 0) {
                if (s->st == ST_QUIT) {
                    session_close(s);
                    return false;
                }
                session_fail(s, r == 0 ? FAIL_EOF : FAIL_IO,
                             r == 0 ? "connection closed" : strerror(errno));
                return false;
            }
        }
        s->in_len += (size_t)r;
        s->t_activity = now();
        parse_replies(s);
        if (s->fd < 0 || s->st == ST_HANDSHAKE)
            return s->fd >= 0;
    }
}

static void on_event(struct session *s, uint32_t ev)
{
    if (s->st == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0)
            return session_fail(s, FAIL_CONNECT, strerror(err));
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        s->t_activity = now();
        if (opt.tls == TLS_IMPLICIT)
            tls_begin(s, true);
        else
            s->st = ST_GREETING;
    }
    /* a pass over handshake, writes and reads until none makes progress */
    for (int round = 0; round < 4 && s->fd >= 0; round++) {
        enum state before = s->st;
        if (s->st == ST_HANDSHAKE) {
            do_handshake(s);
            if (s->fd < 0 || s->st == ST_HANDSHAKE)
                return;
        }
        if (!flush(s) || !fill(s))
            return;
        if (!flush(s))
            return;
        if (s->st == before && s->out_len == 0)
            break;
    }
    if (s->fd >= 0)
        watch(s, s->out_len > 0 || s->read_wants_write);
}

/* ---- TLS context ---- */

static int keep_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (saved_session)
        SSL_SESSION_free(saved_session);
    saved_session = sess;
    return 1; /* the reference is ours */
}

static void tls_setup(void)
{
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die("cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (opt.cafile) {
        if (SSL_CTX_load_verify_locations(ctx, opt.cafile, NULL) != 1)
            die("cannot load CA file %s: %s", opt.cafile, tls_error_text());
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (opt.resume) {
        SSL_CTX_set_session_cache_mode(ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, keep_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_num_tickets(ctx, 0);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
}

static void auth_setup(void)
{
    const char *colon = strchr(opt.auth, ':');
    if (!colon || colon == opt.auth)
        die("--auth wants USER:PASS");
    char raw[600];
    size_t ul = (size_t)(colon - opt.auth), pl = strlen(colon + 1);
    if (ul + pl + 2 > sizeof raw)
        die("--auth is too long");
    /* RFC 4616: authzid (empty) NUL authcid NUL passwd */
    raw[0] = '\0';
    memcpy(raw + 1, opt.auth, ul);
    raw[1 + ul] = '\0';
    memcpy(raw + 2 + ul, colon + 1, pl);
    char b64[820];
    int n = EVP_EncodeBlock((unsigned char *)b64, (unsigned char *)raw, (int)(ul + pl + 2));
    snprintf(auth_line, sizeof auth_line, "AUTH PLAIN %.*s\r\n", n, b64);
}

/* ---- report ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p% of samples at or below it. */
static double pct(double p)
{
    if (st.lat_len == 0)
        return 0;
    size_t rank = (size_t)((p / 100.0) * (double)st.lat_len + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > st.lat_len)
        rank = st.lat_len;
    return st.lat[rank - 1] * 1000.0;
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void report(double wall)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double cs = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    qsort(st.lat, st.lat_len, sizeof *st.lat, cmp_double);
    double mps = wall > 0 ? (double)st.accepted / wall : 0;
    double mx = st.lat_len ? st.lat[st.lat_len - 1] * 1000.0 : 0;
    static const char *const tls_names[] = {"none", "starttls", "implicit"};
    if (opt.json) {
        printf("{\"tried\":%ld,\"accepted\":%ld,\"failed\":%ld,\"wall_s\":%.4f,\"msg_per_s\":%.2f,",
               st.claimed, st.accepted, st.failed, wall, mps);
        printf("\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f},", pct(50),
               pct(90), pct(99), mx);
        printf("\"connections\":%ld,\"tls_handshakes\":%ld,\"tls_resumed\":%ld,", st.connections,
               st.handshakes, st.resumed);
        printf("\"errors\":{\"4xx\":%ld,\"5xx\":%ld,\"other_reply\":%ld", st.by_class[4],
               st.by_class[5], st.by_class[0] + st.by_class[1] + st.by_class[2] + st.by_class[3]);
        for (int k = 0; k < FAIL_KINDS; k++)
            printf(",\"%s\":%ld", fail_names[k], st.by_kind[k]);
        printf("},\"reply_codes\":{");
        const char *sep = "";
        for (int c = 0; c < 600; c++)
            if (st.by_code[c]) {
                printf("%s\"%d\":%ld", sep, c, st.by_code[c]);
                sep = ",";
            }
        printf("},\"error_samples\":[");
        for (int i = 0; i < st.nsamples; i++) {
            if (i)
                putchar(',');
            json_string(st.samples[i]);
        }
        printf("],\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"cpu_s\":%.3f,\"cpu_share\":%.3f,", cu,
               cs, cu + cs, wall > 0 ? (cu + cs) / wall : 0);
        printf("\"config\":{\"concurrency\":%d,\"size\":%zu,\"per_connection\":%d,\"tls\":\"%s\","
               "\"auth\":%s,\"resume\":%s,\"pipelining\":%s}}\n",
               opt.concurrency, opt.size, opt.per_connection, tls_names[opt.tls],
               opt.auth ? "true" : "false", opt.resume ? "true" : "false",
               opt.pipelining ? "true" : "false");
        return;
    }
    printf("messages: %ld tried, %ld accepted, %ld failed in %.3f s: %.1f msg/s\n", st.claimed,
           st.accepted, st.failed, wall, mps);
    printf("latency ms (connect to the 250 after the final dot): p50 %.2f  p90 %.2f  p99 %.2f  "
           "max %.2f\n",
           pct(50), pct(90), pct(99), mx);
    printf("connections: %ld; TLS handshakes %ld, resumed %ld\n", st.connections, st.handshakes,
           st.resumed);
    printf("errors: 4xx %ld, 5xx %ld, other replies %ld", st.by_class[4], st.by_class[5],
           st.by_class[0] + st.by_class[1] + st.by_class[2] + st.by_class[3]);
    for (int k = 0; k < FAIL_KINDS; k++)
        printf(", %s %ld", fail_names[k], st.by_kind[k]);
    printf("\n");
    for (int i = 0; i < st.nsamples; i++)
        printf("  e.g. %s\n", st.samples[i]);
    printf("generator CPU: %.3f s user + %.3f s sys = %.0f%% of one core, %.0f us/message\n", cu,
           cs, wall > 0 ? 100.0 * (cu + cs) / wall : 0,
           st.accepted ? 1e6 * (cu + cs) / (double)st.accepted : 0);
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fputs("usage: sluice-loadgen [--host H] [--port P] [--tls none|starttls|implicit]\n"
          "         [--cafile FILE | --insecure] [--sni NAME] [--resume] [--auth USER:PASS]\n"
          "         [-c CONCURRENCY] [-n MESSAGES | -d SECONDS] [--size BYTES]\n"
          "         [--per-connection N] [--pipelining] [--from ADDR] [--to ADDR]\n"
          "         [--ehlo NAME] [--timeout SECONDS] [--json]\n",
          f);
}

static long parse_num(const char *s, const char *what, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end == 'k' || *end == 'K') {
        v *= 1024;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1024 * 1024;
        end++;
    }
    if (errno || end == s || *end || v < lo || v > hi)
        die("%s: expected a number from %ld to %ld, got '%s'", what, lo, hi, s);
    return v;
}

static void parse_args(int argc, char **argv)
{
    enum {
        O_HOST = 256,
        O_PORT,
        O_TLS,
        O_AUTH,
        O_CAFILE,
        O_INSECURE,
        O_SIZE,
        O_PERCONN,
        O_FROM,
        O_TO,
        O_RESUME,
        O_JSON,
        O_PIPE,
        O_SNI,
        O_EHLO,
        O_TIMEOUT
    };
    static const struct option longs[] = {
        {"host", 1, 0, O_HOST},       {"port", 1, 0, O_PORT},
        {"tls", 1, 0, O_TLS},         {"auth", 1, 0, O_AUTH},
        {"cafile", 1, 0, O_CAFILE},   {"insecure", 0, 0, O_INSECURE},
        {"size", 1, 0, O_SIZE},       {"per-connection", 1, 0, O_PERCONN},
        {"from", 1, 0, O_FROM},       {"to", 1, 0, O_TO},
        {"resume", 0, 0, O_RESUME},   {"json", 0, 0, O_JSON},
        {"pipelining", 0, 0, O_PIPE}, {"sni", 1, 0, O_SNI},
        {"ehlo", 1, 0, O_EHLO},       {"timeout", 1, 0, O_TIMEOUT},
        {"help", 0, 0, 'h'},          {0, 0, 0, 0},
    };
    bool have_n = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:n:d:h", longs, NULL)) != -1) {
        switch (c) {
        case O_HOST:
            opt.host = optarg;
            break;
        case O_PORT:
            opt.port = optarg;
            break;
        case O_TLS:
            if (strcmp(optarg, "none") == 0)
                opt.tls = TLS_NONE;
            else if (strcmp(optarg, "starttls") == 0)
                opt.tls = TLS_STARTTLS;
            else if (strcmp(optarg, "implicit") == 0)
                opt.tls = TLS_IMPLICIT;
            else
                die("--tls: expected none, starttls or implicit, got '%s'", optarg);
            break;
        case O_AUTH:
            opt.auth = optarg;
            break;
        case O_CAFILE:
            opt.cafile = optarg;
            break;
        case O_INSECURE:
            opt.insecure = true;
            break;
        case O_SIZE:
            opt.size = (size_t)parse_num(optarg, "--size", 1, 64L * 1024 * 1024);
            break;
        case O_PERCONN:
            opt.per_connection = (int)parse_num(optarg, "--per-connection", 1, 1000000);
            break;
        case O_FROM:
            opt.from = optarg;
            break;
        case O_TO:
            opt.to = optarg;
            break;
        case O_RESUME:
            opt.resume = true;
            break;
        case O_JSON:
            opt.json = true;
            break;
        case O_PIPE:
            opt.pipelining = true;
            break;
        case O_SNI:
            opt.sni = optarg;
            break;
        case O_EHLO:
            opt.ehlo = optarg;
            break;
        case O_TIMEOUT:
            opt.timeout = (double)parse_num(optarg, "--timeout", 1, 3600);
            break;
        case 'c':
            opt.concurrency = (int)parse_num(optarg, "-c", 1, 100000);
            break;
        case 'n':
            opt.total = parse_num(optarg, "-n", 1, LONG_MAX / 2);
            have_n = true;
            break;
        case 'd':
            opt.duration = (double)parse_num(optarg, "-d", 1, 86400);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind < argc)
        die("unexpected argument '%s'", argv[optind]);
    if (!have_n && opt.duration == 0)
        opt.total = 1000;
    if (opt.tls != TLS_NONE && !opt.cafile && !opt.insecure)
        die("TLS needs --cafile FILE (verify the relay) or --insecure (do not)");
    if (opt.cafile && opt.insecure)
        die("--cafile and --insecure exclude each other");
    if (opt.resume && opt.tls == TLS_NONE)
        die("--resume needs --tls starttls or implicit");
    if (strpbrk(opt.from, "<>\r\n ") || strpbrk(opt.to, "<>\r\n ") || strpbrk(opt.ehlo, "\r\n "))
        die("--from, --to and --ehlo take a bare address or name");
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(opt.host, opt.port, &hints, &target);
    if (gai != 0)
        die("%s port %s: %s", opt.host, opt.port, gai_strerror(gai));
    if (opt.tls != TLS_NONE)
        tls_setup();
    if (opt.auth)
        auth_setup();
    build_body();
    unsigned char rnd[4];
    FILE *ur = fopen("/dev/urandom", "rb");
    if (ur && fread(rnd, 1, sizeof rnd, ur) == sizeof rnd)
        run_id = (unsigned long)rnd[0] << 24 | (unsigned long)rnd[1] << 16 | rnd[2] << 8 | rnd[3];
    if (ur)
        fclose(ur);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1: %s", strerror(errno));

    struct session *slots = calloc((size_t)opt.concurrency, sizeof *slots);
    if (!slots)
        die("out of memory");
    t_begin = now();
    t_deadline = t_begin + opt.duration;
    int active = 0;
    for (int i = 0; i < opt.concurrency; i++) {
        slots[i].fd = -1;
        slots[i].st = ST_IDLE;
        if (session_start(&slots[i]))
            active++;
    }
    struct epoll_event evs[256];
    double last_scan = now();
    while (active > 0) {
        int n = epoll_wait(epfd, evs, 256, 100);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            struct session *s = evs[i].data.ptr;
            if (s->fd >= 0)
                on_event(s, evs[i].events);
        }
        double t = now();
        bool scan = t - last_scan >= 0.1;
        if (scan)
            last_scan = t;
        active = 0;
        for (int i = 0; i < opt.concurrency; i++) {
            struct session *s = &slots[i];
            if (s->fd >= 0 && scan && t - s->t_activity > opt.timeout)
                session_fail(s, FAIL_TIMEOUT, "no progress within the timeout");
            if (s->fd < 0)
                session_start(s);
            if (s->fd >= 0)
                active++;
        }
    }
    report(now() - t_begin);
    fflush(stdout);
    for (int i = 0; i < opt.concurrency; i++)
        free(slots[i].out);
    free(slots);
    free(st.lat);
    free(body);
    if (saved_session)
        SSL_SESSION_free(saved_session);
    SSL_CTX_free(ctx);
    freeaddrinfo(target);
    close(epfd);
    return st.failed > 0 || st.accepted == 0 ? 1 : 0;
}
