/* SCRAM (RFC 5802) for SMTP AUTH: the server side as a pure state machine fed
 * with the decoded client messages, a client side for delivery and tests, and
 * the derivation of the stored verifier from a password. SCRAM-SHA-256
 * (RFC 7677) is the mechanism offered; SCRAM-SHA-1 exists for old clients. */
#ifndef SLUICE_MAIL_SCRAM_H
#define SLUICE_MAIL_SCRAM_H

#include <stdbool.h>
#include <stddef.h>

enum scram_mech {
    SCRAM_SHA_256 = 0, /* RFC 7677 */
    SCRAM_SHA_1 = 1,   /* RFC 5802 */
};

/* Largest hash output (SHA-256) and the limits on what a verifier may hold. */
#define SCRAM_KEY_MAX 32
#define SCRAM_SALT_MAX 64
/* RFC 7677 section 4: the iteration count SHOULD be at least 4096. */
#define SCRAM_MIN_ITERATIONS 4096
/* A client refuses a server asking for more (it costs the client CPU). */
#define SCRAM_MAX_ITERATIONS 10000000u
/* Longest client message accepted; real ones are well under 512 octets. */
#define SCRAM_MESSAGE_MAX 4096
/* Longest decoded user name (authcid / authzid). */
#define SCRAM_NAME_MAX 255

/* What the server stores per user instead of the password. */
struct scram_credential {
    unsigned char salt[SCRAM_SALT_MAX];
    size_t salt_len;
    unsigned iterations;
    unsigned char stored_key[SCRAM_KEY_MAX]; /* H(ClientKey) */
    unsigned char server_key[SCRAM_KEY_MAX]; /* HMAC(SaltedPassword, "Server Key") */
};

/* Looks up the verifier of authcid (UTF-8, saslname already decoded).
 * Returns 0 and fills out when the user exists, 1 when it does not, negative
 * on a temporary failure (store unreachable). */
typedef int (*scram_lookup_fn)(void *arg, const char *authcid, struct scram_credential *out);

/* Fills buf with len unpredictable octets (RAND_bytes in the daemon, a fixed
 * sequence in tests). Returns 0 or negative. */
typedef int (*scram_random_fn)(void *arg, unsigned char *buf, size_t len);

enum scram_status {
    SCRAM_CONTINUE = 0, /* send *server_msg_out as a 334 challenge, read the next response */
    SCRAM_SUCCESS = 1,  /* authenticated (235) */
    SCRAM_FAILURE = 2,  /* refused: see scram_server_error() */
};

/* Why an exchange failed. Wrong password and unknown user both give
 * SCRAM_ERR_INVALID_PROOF so that nothing the client sees tells them apart. */
enum scram_error {
    SCRAM_ERR_NONE = 0,
    SCRAM_ERR_MALFORMED,         /* message does not follow the RFC 5802 section 7 grammar */
    SCRAM_ERR_CHANNEL_BINDING,   /* client asked for channel binding ("p="): no -PLUS offered */
    SCRAM_ERR_EXTENSION,         /* mandatory extension "m=" */
    SCRAM_ERR_USERNAME_ENCODING, /* bad saslname escape, not UTF-8, too long */
    SCRAM_ERR_AUTHZID,           /* authzid differs from authcid */
    SCRAM_ERR_CHANNEL_MISMATCH,  /* c= does not repeat the GS2 header */
    SCRAM_ERR_NONCE,             /* r= is not the nonce this exchange issued */
    SCRAM_ERR_INVALID_PROOF,     /* wrong password, or no such user */
    SCRAM_ERR_TEMPORARY,         /* lookup or random source failed: answer 454 */
    SCRAM_ERR_STATE,             /* message after the exchange ended (replay, extra data) */
};

struct scram_server_config {
    enum scram_mech mech;
    scram_random_fn random;
    void *random_arg;
    /* Secret from which verifiers for unknown users are derived, so the salt
     * and iteration count the server answers with are stable per name. */
    const unsigned char *secret;
    size_t secret_len;
    unsigned fake_iterations; /* iteration count shown for unknown users; 0: 4096 */
    size_t nonce_len;         /* characters of server nonce; 0: 24 */
};

struct scram_server;

/* Allocates a server for one exchange; NULL on allocation failure or when
 * cfg has no random source or no secret. */
struct scram_server *scram_server_new(const struct scram_server_config *cfg);
/* Wipes the keys and frees. Accepts NULL. */
void scram_server_free(struct scram_server *s);

/* Feeds one decoded client message (the session has removed the base64).
 * First call: client-first-message. Second: client-final-message; when the
 * proof holds the result is CONTINUE with "v=..." to send as a 334 challenge
 * (RFC 4954 has no success-with-data), and the third call takes the empty
 * response and returns SUCCESS. On FAILURE, *server_msg_out may hold an
 * "e=..." server-error for logs; SMTP answers 535 (or 454 for TEMPORARY).
 * *server_msg_out is malloc'd (caller frees) or NULL. */
enum scram_status scram_server_step(struct scram_server *s, const char *client_msg, size_t len,
                                    scram_lookup_fn lookup, void *lookup_arg,
                                    char **server_msg_out);

enum scram_error scram_server_error(const struct scram_server *s);
/* A short English reason for logs ("client proof does not verify"). */
const char *scram_server_reason(const struct scram_server *s);
/* The authenticated (or claimed) user name; "" before the first message. */
const char *scram_server_authcid(const struct scram_server *s);
/* True once the client proof verified (server-final sent or to be sent). */
bool scram_server_proof_ok(const struct scram_server *s);
/* For logs only: whether the lookup found the user. Never shown to a client. */
bool scram_server_user_known(const struct scram_server *s);

/* Mechanism name as on the wire: "SCRAM-SHA-256" / "SCRAM-SHA-1". */
const char *scram_mech_name(enum scram_mech mech);
/* Digest size of the mechanism's hash (32 or 20). */
size_t scram_key_len(enum scram_mech mech);

/* Derives StoredKey and ServerKey (RFC 5802 section 3) from a password that
 * is already normalised (SASLprep is the caller's: ASCII passwords need none).
 * Both outputs hold scram_key_len(mech) octets. Returns 0 or -1. */
int scram_derive(enum scram_mech mech, const char *password, size_t password_len,
                 const unsigned char *salt, size_t salt_len, unsigned iterations,
                 unsigned char *stored_key, unsigned char *server_key);

/* The verifier as one storable line, in the format PostgreSQL uses:
 * "SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>".
 * Returns the length or -1 when out is too small. */
int scram_credential_format(enum scram_mech mech, const struct scram_credential *c, char *out,
                            size_t out_size);
/* Parses that line back. Returns 0, or -1 when malformed or for another mech. */
int scram_credential_parse(enum scram_mech mech, const char *line, size_t len,
                           struct scram_credential *out);

struct scram_client;

/* A client for one exchange; authzid may be NULL or "". Names are sent as
 * saslnames (',' and '=' escaped). NULL on allocation failure. */
struct scram_client *scram_client_new(enum scram_mech mech, const char *authcid,
                                      const char *authzid, const char *password,
                                      scram_random_fn random, void *random_arg);
void scram_client_free(struct scram_client *c);
/* Characters of client nonce (default 24); for reproducing published examples. */
void scram_client_set_nonce_len(struct scram_client *c, size_t len);
/* client-first-message ("n,,n=user,r=..."); *out malloc'd. Returns 0 or -1. */
int scram_client_first(struct scram_client *c, char **out);
/* Takes server-first, answers client-final; *out malloc'd. Returns 0, or -1
 * when the server message is malformed, alters the client nonce or asks for
 * an iteration count outside [SCRAM_MIN_ITERATIONS, SCRAM_MAX_ITERATIONS]. */
int scram_client_final(struct scram_client *c, const char *server_first, size_t len, char **out);
/* Checks server-final ("v=..."). Returns 0 when the server proved it knows
 * the verifier, -1 otherwise (including "e=..."). */
int scram_client_verify(struct scram_client *c, const char *server_final, size_t len);

#endif
