/* Trend keywords: with none configured no hook is registered, so msg.send pays nothing. With
 * some, each stored customer message is searched for each keyword (a byte scan, ASCII letters
 * without case); a match sends the worker one lifecycle event `keyword` per conversation and
 * keyword. "Once" is remembered per process in a small table of hashes: a conversation that
 * falls out of it, or that a customer continues on another gateway, may send the event again,
 * which costs a stream entry but no count, since the worker counts customers, not events. */
#include "keywords.h"

#include <stdint.h>
#include <string.h>

#include "gateway.h"
#include "kefu/alloc.h"
#include "kefu/hash.h"
#include "kefu/log.h"
#include "kefu/service.h"
#include "kefu/token.h"
#include "request.h"

#define SEEN_SLOTS 8192 /* (conversation, keyword) pairs remembered, direct-mapped */

static struct {
    char *spec; /* as published; NULL: none */
    char kw[KF_KEYWORDS_MAX][KF_KEYWORD_MAX + 1];
    size_t len[KF_KEYWORDS_MAX];
    int n;
    uint64_t *seen;
    int registered;
} K;

static void on_message(const gw_conn *from, const char *conv, const char *text, size_t len) {
    if (from->ident.role != KF_ROLE_CUSTOMER) return;
    for (int i = 0; i < K.n; i++) {
        if (!kf_keyword_in(text, len, K.kw[i], K.len[i])) continue;
        uint64_t h = kf_hash_more(kf_hash(conv, strlen(conv) + 1), K.kw[i], K.len[i]);
        h |= 1; /* 0 marks an empty slot */
        uint64_t *slot = &K.seen[(h >> 1) % SEEN_SLOTS];
        if (*slot == h) continue;
        *slot = h;
        gw_lifecycle("keyword", conv, from, "keyword", K.kw[i], NULL, NULL);
    }
}

static const gw_hooks keyword_hooks = {.message_stored = on_message};

void gw_keywords_set(const char *spec) {
    if (!spec) spec = "";
    if (K.spec && !strcmp(K.spec, spec)) return;
    char e[160];
    int n = kf_keywords_parse(spec, K.kw, KF_KEYWORDS_MAX, e, sizeof(e));
    if (n < 0) {
        /* the worker refuses such a value: only a worker of another version could publish it */
        kf_warn("published trend_keywords ignored: %s", e);
        n = 0;
    }
    kf_free(K.spec);
    K.spec = kf_strdup(spec);
    K.n = n;
    for (int i = 0; i < n; i++) K.len[i] = strlen(K.kw[i]);
    if (n && !K.seen) K.seen = kf_calloc(SEEN_SLOTS, sizeof(*K.seen));
    if (n && !K.registered) gw_hooks_register(&keyword_hooks);
    if (!n && K.registered) gw_hooks_unregister(&keyword_hooks);
    K.registered = n > 0;
    kf_info("trend keywords: %d", n);
}

void gw_keywords_stop(void) {
    if (K.registered) gw_hooks_unregister(&keyword_hooks);
    kf_free(K.spec);
    kf_free(K.seen);
    memset(&K, 0, sizeof(K));
}
