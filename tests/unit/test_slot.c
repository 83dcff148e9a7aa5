/* Unit tests for CRC16, Redis Cluster key slots, redirections and slot maps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "kefu/keys.h"
#include "kefu/slot.h"

static unsigned slot(const char *k) {
    return kf_key_slot(k, strlen(k));
}

static void test_crc16(void **state) {
    (void)state;
    assert_int_equal(kf_crc16("123456789", 9), 0x31C3);
    assert_int_equal(kf_crc16("", 0), 0);
    assert_int_equal(kf_crc16("A", 1), 0x58E5);
}

/* Bitwise reference implementation: shift each bit of each byte through poly 0x1021. */
static uint16_t crc16_ref(const unsigned char *p, size_t n) {
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static void test_crc16_matches_bitwise(void **state) {
    (void)state;
    unsigned char buf[256];
    for (int i = 0; i < 256; i++) buf[i] = (unsigned char)(i * 7 + 3);
    for (size_t n = 0; n <= sizeof(buf); n++)
        assert_int_equal(kf_crc16((const char *)buf, n), crc16_ref(buf, n));
}

static void test_known_slots(void **state) {
    (void)state;
    assert_int_equal(slot("foo"), 12182);
    assert_int_equal(slot("bar"), 5061);
    assert_int_equal(slot("hello"), 866);
    assert_int_equal(slot(""), 0);
    assert_int_equal(slot("123456789"), 0x31C3 % 16384);
}

static void test_hash_tags(void **state) {
    (void)state;
    assert_int_equal(slot("{user1000}.following"), slot("{user1000}.followers"));
    assert_int_equal(slot("{user1000}.following"), slot("user1000"));
    assert_int_equal(slot("x{user1000}y{other}"), slot("user1000"));
    /* empty tag at the first '{': the whole key is hashed */
    assert_int_equal(slot("foo{}{bar}"), kf_crc16("foo{}{bar}", 10) % 16384);
    assert_int_not_equal(slot("foo{}{bar}"), slot("bar"));
    /* the tag runs from the first '{' to the first '}' */
    assert_int_equal(slot("foo{{bar}}zap"), slot("{bar"));
    assert_int_equal(slot("foo{{bar}}zap"), kf_crc16("{bar", 4) % 16384);
    assert_int_equal(slot("foo{bar}{zap}"), slot("bar"));
    /* no closing brace or a lone '{' at the end: the whole key */
    assert_int_equal(slot("foo{bar"), kf_crc16("foo{bar", 7) % 16384);
    assert_int_equal(slot("foo{"), kf_crc16("foo{", 4) % 16384);
    assert_int_equal(slot("}foo{"), kf_crc16("}foo{", 5) % 16384);
    /* len bounds the key: a tag closed only after len does not count */
    assert_int_equal(kf_key_slot("ab{cd}", 5), kf_crc16("ab{cd", 5) % 16384);
    assert_int_equal(kf_key_slot("{a}", 3), slot("a"));
}

static void test_slot_range(void **state) {
    (void)state;
    char key[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof(key), "conv:%d", i);
        assert_true(kf_key_slot(key, (size_t)n) < KF_SLOTS);
    }
}

static void test_redirects(void **state) {
    (void)state;
    unsigned slot = 0;
    char host[64];
    int port = 0;
#define PARSE(text) kf_redirect_parse(text, strlen(text), &slot, host, sizeof(host), &port)
    assert_int_equal(PARSE("MOVED 3999 127.0.0.1:6381"), KF_REDIR_MOVED);
    assert_int_equal(slot, 3999);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6381);
    assert_int_equal(PARSE("ASK 16383 10.1.2.3:7000"), KF_REDIR_ASK);
    assert_int_equal(slot, 16383);
    assert_string_equal(host, "10.1.2.3");
    assert_int_equal(port, 7000);
    /* IPv6: the port follows the last ':'; a node that does not know its address says ":port" */
    assert_int_equal(PARSE("MOVED 1 ::1:7002"), KF_REDIR_MOVED);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7002);
    assert_int_equal(PARSE("MOVED 1 :7002"), KF_REDIR_MOVED);
    assert_string_equal(host, "");
    assert_int_equal(PARSE("TRYAGAIN Multiple keys request during rehashing of slot"),
                     KF_REDIR_TRYAGAIN);
    assert_int_equal(PARSE("CLUSTERDOWN The cluster is down"), KF_REDIR_CLUSTERDOWN);
    assert_int_equal(PARSE("CLUSTERDOWN"), KF_REDIR_CLUSTERDOWN);
    /* anything else, and malformed redirections, go to the caller as they are */
    assert_int_equal(PARSE("ERR unknown command"), KF_REDIR_NONE);
    assert_int_equal(PARSE("MOVEDX 1 a:1"), KF_REDIR_NONE);
    assert_int_equal(PARSE("MOVED 16384 a:1"), KF_REDIR_NONE);
    assert_int_equal(PARSE("MOVED x a:1"), KF_REDIR_NONE);
    assert_int_equal(PARSE("MOVED 1 a"), KF_REDIR_NONE);
    assert_int_equal(PARSE("MOVED 1 a:"), KF_REDIR_NONE);
    assert_int_equal(PARSE("MOVED 1 a:0"), KF_REDIR_NONE);
    assert_int_equal(PARSE("MOVED 1 a:65536"), KF_REDIR_NONE);
    assert_int_equal(PARSE("MOVED 1 a:12x"), KF_REDIR_NONE);
    assert_int_equal(PARSE("MOVED 1"), KF_REDIR_NONE);
    assert_int_equal(PARSE("ASK"), KF_REDIR_NONE);
    assert_int_equal(PARSE(""), KF_REDIR_NONE);
    /* a host longer than the caller's buffer is refused, not cut */
    char longer[400];
    snprintf(longer, sizeof(longer), "MOVED 5 %0100d:1", 0);
    assert_int_equal(PARSE(longer), KF_REDIR_NONE);
    /* len bounds the text */
    assert_int_equal(kf_redirect_parse("MOVED 7 h:12345", 12, &slot, host, sizeof(host), &port),
                     KF_REDIR_MOVED);
    assert_int_equal(port, 12);
    assert_int_equal(kf_redirect_parse(NULL, 0, &slot, host, sizeof(host), &port), KF_REDIR_NONE);
#undef PARSE
}

/* A reply as hiredis builds it from the bytes a server sends. */
static redisReply *resp(const char *wire) {
    redisReader *rd = redisReaderCreate();
    assert_int_equal(redisReaderFeed(rd, wire, strlen(wire)), REDIS_OK);
    void *reply = NULL;
    assert_int_equal(redisReaderGetReply(rd, &reply), REDIS_OK);
    assert_non_null(reply);
    redisReaderFree(rd);
    return reply;
}

static void test_cluster_slots(void **state) {
    (void)state;
    kf_slot_range r[8];
    /* two ranges; the second master has a replica; node ids and extra fields are ignored */
    redisReply *rp = resp("*2\r\n"
                          "*3\r\n:0\r\n:8191\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n"
                          "*4\r\n:8192\r\n:16383\r\n*2\r\n$9\r\n127.0.0.2\r\n:7001\r\n"
                          "*2\r\n$9\r\n127.0.0.3\r\n:7004\r\n");
    assert_int_equal(kf_cluster_slots_parse(rp, r, 8), 2);
    assert_int_equal(r[0].first, 0);
    assert_int_equal(r[0].last, 8191);
    assert_string_equal(r[0].host, "127.0.0.1");
    assert_int_equal(r[0].port, 7000);
    assert_int_equal(r[1].first, 8192);
    assert_int_equal(r[1].last, 16383);
    assert_string_equal(r[1].host, "127.0.0.2");
    assert_int_equal(r[1].port, 7001);
    /* more ranges than room */
    assert_int_equal(kf_cluster_slots_parse(rp, r, 1), -1);
    freeReplyObject(rp);
    /* "?" and "" stand for the node asked */
    rp = resp("*2\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\n?\r\n:7000\r\n"
              "*3\r\n:2\r\n:3\r\n*2\r\n$0\r\n\r\n:7001\r\n");
    assert_int_equal(kf_cluster_slots_parse(rp, r, 8), 2);
    assert_string_equal(r[0].host, "");
    assert_string_equal(r[1].host, "");
    freeReplyObject(rp);
    /* an empty map (a node not yet in a cluster) */
    rp = resp("*0\r\n");
    assert_int_equal(kf_cluster_slots_parse(rp, r, 8), 0);
    freeReplyObject(rp);
    /* not a slot map */
    static const char *const bad[] = {
        "-ERR This instance has cluster support disabled\r\n",
        "*1\r\n*2\r\n:0\r\n:1\r\n",                                  /* no master */
        "*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\na\r\n:1\r\n",           /* last < first */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n",       /* past the last slot */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:0\r\n",           /* port 0 */
        "*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\na\r\n",                 /* no port */
        "*1\r\n*3\r\n$1\r\n0\r\n:1\r\n*2\r\n$1\r\na\r\n:1\r\n",      /* slot as a string */
        "*1\r\n:1\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rp = resp(bad[i]);
        assert_int_equal(kf_cluster_slots_parse(rp, r, 8), -1);
        freeReplyObject(rp);
    }
    assert_int_equal(kf_cluster_slots_parse(NULL, r, 8), -1);
}

/* The partition tags of include/kefu/keys.h: partition k's slot lies in the k-th sixteenth of
 * the slot range, so contiguous splits (redis-cli --cluster create) spread them evenly; the
 * usual 3-master split gives each master 5 or 6 partitions of each kind. */
static void test_partition_tags(void **state) {
    (void)state;
    const unsigned share = KF_SLOTS / KF_PARTS;
    const unsigned split[3] = {5460, 10922, 16383}; /* last slot of each of 3 masters */
    unsigned per_master[2][3] = {{0}};
    char k[KF_KEY_MAX];
    for (unsigned p = 0; p < KF_PARTS; p++) {
        kf_key_lifecycle(k, p);
        unsigned ev = slot(k);
        kf_key_sla(k, p, "timers");
        unsigned sla = slot(k);
        char k2[KF_KEY_MAX];
        kf_key_sla(k2, p, "firing");
        assert_int_equal(slot(k2), sla); /* one claim script runs on both */
        kf_key_sla(k2, p, "breaches");
        assert_int_equal(slot(k2), sla);
        assert_true(ev >= p * share && ev < (p + 1) * share);
        assert_true(sla >= p * share && sla < (p + 1) * share);
        for (int m = 0; m < 3; m++)
            if (ev <= split[m]) { per_master[0][m]++; break; }
        for (int m = 0; m < 3; m++)
            if (sla <= split[m]) { per_master[1][m]++; break; }
    }
    for (int kind = 0; kind < 2; kind++)
        for (int m = 0; m < 3; m++)
            assert_true(per_master[kind][m] == 5 || per_master[kind][m] == 6);
    /* the old single stream is a slot of its own, not one of the partitions' */
    kf_key_lifecycle(k, 0);
    assert_string_equal(k, "kefu:{ev:0-ca}:lifecycle");
    assert_int_not_equal(slot(KF_KEY_LIFECYCLE_OLD), slot(k));
}

/* A conversation's partition is stable (gateways and workers of any version agree) and the
 * hash spreads ids over every partition. */
static void test_partition_of(void **state) {
    (void)state;
    /* fixed values: tests/integration/kefu_harness.py's part_of() must give the same */
    assert_int_equal(kf_part_of("c1"), 14);
    assert_int_equal(kf_part_of("abc"), 2);
    assert_int_equal(kf_part_of("agent7"), 5);
    unsigned seen[KF_PARTS] = {0};
    char id[32];
    for (int i = 0; i < 1600; i++) {
        snprintf(id, sizeof(id), "conv-%d", i);
        unsigned p = kf_part_of(id);
        assert_true(p < KF_PARTS);
        seen[p]++;
    }
    for (unsigned p = 0; p < KF_PARTS; p++) assert_true(seen[p] > 50 && seen[p] < 150);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16),
        cmocka_unit_test(test_crc16_matches_bitwise),
        cmocka_unit_test(test_known_slots),
        cmocka_unit_test(test_hash_tags),
        cmocka_unit_test(test_slot_range),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_cluster_slots),
        cmocka_unit_test(test_partition_tags),
        cmocka_unit_test(test_partition_of),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
