/* Keyword matching for bot rules: one Aho-Corasick automaton over the normalized UTF-8 bytes of
 * every keyword of a rule set, so a message is scanned once whatever the number of rules. UTF-8
 * is self-synchronizing, so a byte match of a valid keyword in valid text always starts and ends
 * on character boundaries: Chinese needs no word splitting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bot_internal.h"
#include "kefu/alloc.h"
#include "kefu/bot.h"

#define KW_MAX 256 /* bytes of one keyword */

typedef struct edge {
    uint8_t c;
    uint32_t to;
} edge;

typedef struct node {
    uint32_t edges, nedges, cap; /* before build: cap of the node's own array in tmp */
    uint32_t fail;
    uint32_t out;  /* 1 + first pattern ending here, 0 = none */
    uint32_t dict; /* nearest proper suffix node with out, 0 = none (the root never has out) */
} node;

typedef struct pat {
    uint32_t slot;  /* entry */
    uint32_t next;  /* 1 + next pattern ending at the same node */
    uint16_t len, nchars;
    uint8_t list, lb, rb;
} pat;

typedef struct ent {
    uint32_t owner, entry;
    uint16_t n_any, n_all;
    uint16_t c_any, c_all, c_none;
    uint32_t score, gen;
} ent;

struct kf_match {
    node *nodes;
    size_t nnodes, cap_nodes;
    edge **tmp;          /* per node edge arrays until build */
    edge *edges;         /* flattened, sorted per node after build */
    uint32_t root[256];  /* dense root transitions */
    pat *pats;
    size_t npats, cap_pats;
    ent *ents;
    size_t nents, cap_ents;
    uint32_t *seen;      /* per pattern: gen of its last hit */
    uint32_t *touched;   /* entries touched by the current scan */
    uint32_t *noneonly;  /* entries with only "none" keywords */
    size_t nnoneonly;
    uint32_t gen;
    int built;
    char *buf;           /* normalization scratch */
    size_t bufcap;
};

static int is_alnum(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

size_t kf_bot_normalize(const char *in, size_t len, char *out) {
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, i = 0;
    int pending_space = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t adv = 1;
        int ch = -1; /* an ASCII byte to emit, or -1 to copy bytes as they are */
        if (c < 0x80) {
            ch = (c >= 'A' && c <= 'Z') ? (int)(c + 32) : (int)c;
        } else if (c == 0xEF && i + 2 < len && (s[i + 1] == 0xBC || s[i + 1] == 0xBD)) {
            /* U+FF01..U+FF5E full-width ASCII forms are U+0021..U+007E shifted by 0xFEE0 */
            unsigned cp = ((c & 0x0F) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
            if (cp >= 0xFF01 && cp <= 0xFF5E && (s[i + 2] & 0xC0) == 0x80) {
                unsigned a = cp - 0xFEE0;
                ch = (a >= 'A' && a <= 'Z') ? (int)(a + 32) : (int)a;
                adv = 3;
            }
        } else if (c == 0xE3 && i + 2 < len && s[i + 1] == 0x80 && s[i + 2] == 0x80) {
            ch = ' '; /* U+3000 ideographic space */
            adv = 3;
        }
        if (ch >= 0 && is_space((unsigned char)ch)) {
            pending_space = o > 0;
            i += adv;
            continue;
        }
        if (pending_space) out[o++] = ' ';
        pending_space = 0;
        if (ch >= 0) {
            out[o++] = (char)ch;
        } else {
            memcpy(out + o, s + i, adv);
            o += adv;
        }
        i += adv;
    }
    out[o] = '\0';
    return o;
}

static size_t utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

kf_match *kf_match_new(void) {
    kf_match *m = kf_calloc(1, sizeof(*m));
    m->cap_nodes = 64;
    m->nodes = kf_calloc(m->cap_nodes, sizeof(node));
    m->tmp = kf_calloc(m->cap_nodes, sizeof(edge *));
    m->nnodes = 1; /* the root */
    return m;
}

void kf_match_free(kf_match *m) {
    if (!m) return;
    if (m->tmp) {
        for (size_t i = 0; i < m->nnodes; i++) kf_free(m->tmp[i]);
        kf_free(m->tmp);
    }
    kf_free(m->nodes);
    kf_free(m->edges);
    kf_free(m->pats);
    kf_free(m->ents);
    kf_free(m->seen);
    kf_free(m->touched);
    kf_free(m->noneonly);
    kf_free(m->buf);
    kf_free(m);
}

static uint32_t child_add(kf_match *m, uint32_t n, uint8_t c) {
    node *nd = &m->nodes[n];
    for (uint32_t i = 0; i < nd->nedges; i++)
        if (m->tmp[n][i].c == c) return m->tmp[n][i].to;
    if (m->nnodes == m->cap_nodes) {
        m->cap_nodes *= 2;
        m->nodes = kf_realloc(m->nodes, m->cap_nodes * sizeof(node));
        m->tmp = kf_realloc(m->tmp, m->cap_nodes * sizeof(edge *));
        memset(m->nodes + m->nnodes, 0, (m->cap_nodes - m->nnodes) * sizeof(node));
        memset(m->tmp + m->nnodes, 0, (m->cap_nodes - m->nnodes) * sizeof(edge *));
        nd = &m->nodes[n];
    }
    uint32_t to = (uint32_t)m->nnodes++;
    if (nd->nedges == nd->cap) {
        nd->cap = nd->cap ? nd->cap * 2 : 2;
        m->tmp[n] = kf_realloc(m->tmp[n], nd->cap * sizeof(edge));
    }
    m->tmp[n][nd->nedges++] = (edge){c, to};
    return to;
}

int kf_match_add(kf_match *m, const char *kw, size_t len, uint32_t owner, uint32_t entry, int list,
                 char *err, size_t errlen) {
    if (m->built) {
        snprintf(err, errlen, "keywords cannot be added after the rules are loaded");
        return -1;
    }
    int lb = 1, rb = 1;
    if (len && kw[0] == '*') kw++, len--, lb = 0;
    if (len && kw[len - 1] == '*') len--, rb = 0;
    if (len > KW_MAX) {
        snprintf(err, errlen, "keyword longer than %d bytes", KW_MAX);
        return -1;
    }
    char norm[KW_MAX + 1];
    size_t n = kf_bot_normalize(kw, len, norm);
    if (n == 0) {
        snprintf(err, errlen, "empty keyword");
        return -1;
    }
    /* entry slot: a new one unless it continues the last entry */
    if (!m->nents || m->ents[m->nents - 1].owner != owner || m->ents[m->nents - 1].entry != entry) {
        if (m->nents == m->cap_ents) {
            m->cap_ents = m->cap_ents ? m->cap_ents * 2 : 16;
            m->ents = kf_realloc(m->ents, m->cap_ents * sizeof(ent));
        }
        m->ents[m->nents++] = (ent){.owner = owner, .entry = entry};
    }
    uint32_t slot = (uint32_t)m->nents - 1;
    uint32_t nd = 0;
    for (size_t i = 0; i < n; i++) nd = child_add(m, nd, (uint8_t)norm[i]);
    /* the same keyword twice in one list of one entry counts once */
    for (uint32_t p = m->nodes[nd].out; p; p = m->pats[p - 1].next) {
        const pat *q = &m->pats[p - 1];
        if (q->slot == slot && q->list == list && q->lb == (lb && is_alnum((unsigned char)norm[0])) &&
            q->rb == (rb && is_alnum((unsigned char)norm[n - 1])))
            return 0;
    }
    if (m->npats == m->cap_pats) {
        m->cap_pats = m->cap_pats ? m->cap_pats * 2 : 32;
        m->pats = kf_realloc(m->pats, m->cap_pats * sizeof(pat));
    }
    pat *p = &m->pats[m->npats];
    p->slot = slot;
    p->len = (uint16_t)n;
    p->nchars = (uint16_t)utf8_chars(norm, n);
    p->list = (uint8_t)list;
    p->lb = (uint8_t)(lb && is_alnum((unsigned char)norm[0]));
    p->rb = (uint8_t)(rb && is_alnum((unsigned char)norm[n - 1]));
    p->next = m->nodes[nd].out;
    m->nodes[nd].out = (uint32_t)++m->npats;
    ent *e = &m->ents[slot];
    if (list == KF_MATCH_ANY) e->n_any++;
    if (list == KF_MATCH_ALL) e->n_all++;
    return 0;
}

static int edge_cmp(const void *a, const void *b) {
    return (int)((const edge *)a)->c - (int)((const edge *)b)->c;
}

void kf_match_build(kf_match *m) {
    if (m->built) return;
    m->built = 1;
    size_t total = 0;
    for (size_t i = 0; i < m->nnodes; i++) total += m->nodes[i].nedges;
    m->edges = kf_malloc((total ? total : 1) * sizeof(edge));
    size_t off = 0;
    for (size_t i = 0; i < m->nnodes; i++) {
        node *nd = &m->nodes[i];
        if (nd->nedges) {
            qsort(m->tmp[i], nd->nedges, sizeof(edge), edge_cmp);
            memcpy(m->edges + off, m->tmp[i], nd->nedges * sizeof(edge));
        }
        kf_free(m->tmp[i]);
        nd->edges = (uint32_t)off;
        off += nd->nedges;
    }
    kf_free(m->tmp);
    m->tmp = NULL;
    /* breadth-first: failure links and dictionary links */
    uint32_t *queue = kf_malloc(m->nnodes * sizeof(uint32_t));
    size_t qh = 0, qt = 0;
    memset(m->root, 0, sizeof(m->root));
    for (uint32_t k = 0; k < m->nodes[0].nedges; k++) {
        edge e = m->edges[m->nodes[0].edges + k];
        m->root[e.c] = e.to;
        m->nodes[e.to].fail = 0;
        m->nodes[e.to].dict = 0;
        queue[qt++] = e.to;
    }
    while (qh < qt) {
        uint32_t u = queue[qh++];
        for (uint32_t k = 0; k < m->nodes[u].nedges; k++) {
            edge e = m->edges[m->nodes[u].edges + k];
            /* fail(v) = goto(fail(u)..., c) */
            uint32_t f = m->nodes[u].fail, to = 0;
            for (;;) {
                if (f == 0) {
                    to = m->root[e.c];
                    break;
                }
                const node *fn = &m->nodes[f];
                const edge *lo = m->edges + fn->edges;
                size_t a = 0, b = fn->nedges;
                while (a < b) {
                    size_t mid = (a + b) / 2;
                    if (lo[mid].c < e.c) a = mid + 1;
                    else b = mid;
                }
                if (a < fn->nedges && lo[a].c == e.c) {
                    to = lo[a].to;
                    break;
                }
                f = fn->fail;
            }
            if (to == e.to) to = 0;
            m->nodes[e.to].fail = to;
            m->nodes[e.to].dict = m->nodes[to].out ? to : m->nodes[to].dict;
            queue[qt++] = e.to;
        }
    }
    kf_free(queue);
    m->seen = kf_calloc(m->npats ? m->npats : 1, sizeof(uint32_t));
    m->touched = kf_calloc(m->nents ? m->nents : 1, sizeof(uint32_t));
    m->noneonly = kf_calloc(m->nents ? m->nents : 1, sizeof(uint32_t));
    for (size_t i = 0; i < m->nents; i++)
        if (!m->ents[i].n_any && !m->ents[i].n_all) m->noneonly[m->nnoneonly++] = (uint32_t)i;
}

size_t kf_match_npatterns(const kf_match *m) { return m->npats; }

static inline uint32_t step(const kf_match *m, uint32_t n, uint8_t c) {
    for (;;) {
        if (n == 0) return m->root[c];
        const node *nd = &m->nodes[n];
        const edge *lo = m->edges + nd->edges;
        size_t a = 0, b = nd->nedges;
        while (a < b) {
            size_t mid = (a + b) / 2;
            if (lo[mid].c < c) a = mid + 1;
            else b = mid;
        }
        if (a < nd->nedges && lo[a].c == c) return lo[a].to;
        n = nd->fail;
    }
}

static int slot_cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

size_t kf_match_scan(kf_match *m, const char *norm, size_t len, kf_match_hit *hits, size_t max) {
    if (!m->built) kf_match_build(m);
    const unsigned char *t = (const unsigned char *)norm;
    if (++m->gen == 0) { /* wrapped: forget every old mark */
        memset(m->seen, 0, m->npats * sizeof(uint32_t));
        for (size_t i = 0; i < m->nents; i++) m->ents[i].gen = 0;
        m->gen = 1;
    }
    uint32_t gen = m->gen;
    size_t ntouched = 0;
    uint32_t n = 0;
    for (size_t i = 0; i < len; i++) {
        n = step(m, n, t[i]);
        uint32_t o = m->nodes[n].out ? n : m->nodes[n].dict;
        for (; o; o = m->nodes[o].dict) {
            for (uint32_t pi = m->nodes[o].out; pi; pi = m->pats[pi - 1].next) {
                const pat *p = &m->pats[pi - 1];
                if (m->seen[pi - 1] == gen) continue;
                size_t end = i + 1, start = end - p->len;
                if (p->lb && start > 0 && is_alnum(t[start - 1])) continue;
                if (p->rb && end < len && is_alnum(t[end])) continue;
                m->seen[pi - 1] = gen;
                ent *e = &m->ents[p->slot];
                if (e->gen != gen) {
                    e->gen = gen;
                    e->c_any = e->c_all = e->c_none = 0;
                    e->score = 0;
                    m->touched[ntouched++] = p->slot;
                }
                if (p->list == KF_MATCH_ANY) e->c_any++;
                else if (p->list == KF_MATCH_ALL) e->c_all++;
                else e->c_none++;
                if (p->list != KF_MATCH_NONE && p->nchars > e->score) e->score = p->nchars;
            }
        }
    }
    /* entries with only "none" keywords hold unless one of them was seen */
    for (size_t i = 0; i < m->nnoneonly; i++) {
        ent *e = &m->ents[m->noneonly[i]];
        if (e->gen != gen) {
            e->gen = gen;
            e->c_any = e->c_all = e->c_none = 0;
            e->score = 0;
            m->touched[ntouched++] = m->noneonly[i];
        }
    }
    if (ntouched > 1) qsort(m->touched, ntouched, sizeof(uint32_t), slot_cmp);
    size_t nh = 0;
    for (size_t i = 0; i < ntouched && nh < max; i++) {
        const ent *e = &m->ents[m->touched[i]];
        if ((e->n_any && !e->c_any) || e->c_all < e->n_all || e->c_none) continue;
        hits[nh++] = (kf_match_hit){e->owner, e->entry, e->score};
    }
    return nh;
}

int kf_match_contains(const char *text, size_t tlen, const char *kw, size_t klen) {
    int lb = 1, rb = 1;
    if (klen && kw[0] == '*') kw++, klen--, lb = 0;
    if (klen && kw[klen - 1] == '*') klen--, rb = 0;
    char *nt = kf_malloc(tlen + 1), *nk = kf_malloc(klen + 1);
    size_t lt = kf_bot_normalize(text, tlen, nt), lk = kf_bot_normalize(kw, klen, nk);
    int found = 0;
    if (lk > 0) {
        lb = lb && is_alnum((unsigned char)nk[0]);
        rb = rb && is_alnum((unsigned char)nk[lk - 1]);
        const char *p = nt, *end = nt + lt;
        while (!found && p + lk <= end) {
            const char *q = memmem(p, (size_t)(end - p), nk, lk);
            if (!q) break;
            size_t s = (size_t)(q - nt), e = s + lk;
            found = !(lb && s > 0 && is_alnum((unsigned char)nt[s - 1])) &&
                    !(rb && e < lt && is_alnum((unsigned char)nt[e]));
            p = q + 1;
        }
    }
    kf_free(nt);
    kf_free(nk);
    return found;
}
