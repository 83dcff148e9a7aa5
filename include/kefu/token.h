/* JWT HS256 tokens: verification against several secrets (rotation) and minting. */
#ifndef KEFU_TOKEN_H
#define KEFU_TOKEN_H

#include <stddef.h>

#include "kefu/ticket.h"

typedef enum {
    KF_ROLE_NONE = 0,
    KF_ROLE_CUSTOMER,
    KF_ROLE_AGENT,
    KF_ROLE_SUPERVISOR,
    KF_ROLE_ADMIN,
} kf_role;

#define KF_SUB_MAX 128    /* bytes of a user id */
#define KF_NAME_MAX 128   /* bytes of a display name */
#define KF_SKILLS_MAX 255 /* bytes of the comma-joined skill list */

/** Claims kefu reads from a token. Strings are NUL-terminated UTF-8. */
typedef struct kf_claims {
    char sub[KF_SUB_MAX + 1];              /* required: user id, 1..128 bytes, no control chars */
    kf_role role;                          /* required */
    long long exp;                         /* required: expiry, unix seconds */
    char name[KF_NAME_MAX + 1];            /* optional display name ("" when absent) */
    char channel[KF_CHANNEL_MAX + 1];      /* optional customer channel ("" when absent) */
    int level;                             /* optional customer tier 0..100, higher = more VIP */
    char skills[KF_SKILLS_MAX + 1];        /* optional agent groups, comma-joined ("" when absent) */
    int max_chats;                         /* optional agent capacity 1..1000 (0 when absent) */
} kf_claims;

typedef enum {
    KF_TOKEN_OK = 0,
    KF_TOKEN_MALFORMED,      /* not three base64url parts of JSON objects */
    KF_TOKEN_BAD_ALG,        /* header alg is not HS256 */
    KF_TOKEN_BAD_SIGNATURE,  /* no configured secret produces the signature */
    KF_TOKEN_EXPIRED,        /* exp (plus leeway) is in the past */
    KF_TOKEN_NOT_YET_VALID,  /* nbf (minus leeway) is in the future */
    KF_TOKEN_BAD_CLAIMS,     /* a required claim is missing or a claim has a wrong type/value */
} kf_token_result;

/** Stable short name of a result, e.g. "expired", "bad_signature". */
const char *kf_token_result_str(kf_token_result r);

/** "customer", "agent", "supervisor", "admin"; "none" for KF_ROLE_NONE. */
const char *kf_role_name(kf_role r);
/** Parses a role name; KF_ROLE_NONE when unknown. */
kf_role kf_role_parse(const char *s);

/** Verifies an HS256 JWT of len bytes (need not be NUL-terminated) with each of the nsecrets
 * secrets in turn (constant-time comparison), then checks exp/nbf against now (unix seconds)
 * allowing leeway seconds, then fills *out. On any result but KF_TOKEN_OK, *out is zeroed.
 * NULL or empty secrets never match. */
kf_token_result kf_token_verify(const char *token, size_t len, const char *const *secrets,
                                size_t nsecrets, long long now, long long leeway, kf_claims *out);

/** Mints an HS256 JWT carrying the claims in c (optional ones only when set) signed with
 * secret. Returns a malloc'd NUL-terminated string the caller frees, or NULL when c is invalid
 * (empty sub, KF_ROLE_NONE, or any claim kf_token_verify would reject) or secret is empty. */
char *kf_token_mint(const char *secret, const kf_claims *c);

#endif
