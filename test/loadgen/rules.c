/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rules: each rule of ABI.md seen through the wire, one line per rule.
 * Requests rotate over all queues (each one synchronous, depth 1).
 */
#include "lg.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static struct lgdev D;
static int npass, nfail, nskip;
static unsigned rot;
static char failed_names[4096];
static char why[512];

static int qsel(void)
{
	return (int)(rot++ % (unsigned)D.nq);
}

#define EXPECT(cond, ...)                                         \
	do {                                                      \
		if (!(cond)) {                                    \
			snprintf(why, sizeof(why), __VA_ARGS__); \
			return 0;                                 \
		}                                                 \
	} while (0)

static void report(const char *name, int ok, const char *detail)
{
	if (ok) {
		npass++;
		json_out("PASS %s%s%s", name, detail && *detail ? ": " : "", detail ? detail : "");
	} else {
		nfail++;
		json_out("FAIL %s: %s", name, why);
		size_t l = strlen(failed_names);
		snprintf(failed_names + l, sizeof(failed_names) - l, "%s\"%s\"", l ? "," : "", name);
	}
}

static void skip(const char *name, const char *detail)
{
	nskip++;
	json_out("SKIP %s: %s", name, detail);
}

/* ---- request helpers ---- */
static uint64_t OID[3] = { 0x0102030405060708ull, 0x1112131415161718ull, 0x2122232425262728ull };
static uint8_t pagebuf[TMEM_PAGE_SIZE] __attribute__((aligned(64)));
static uint8_t getbuf[TMEM_PAGE_SIZE + 64] __attribute__((aligned(64)));

static struct res np(uint32_t flags, uint32_t page_size, const uint8_t *uuid)
{
	struct tmem_new_pool p = { .flags = flags, .page_size = page_size };
	if (uuid)
		memcpy(p.uuid, uuid, 16);
	return req_sync(&D, qsel(), TMEM_OP_NEW_POOL, 0, 0, NULL, 0, &p, sizeof(p), NULL, 0);
}
static struct res put(uint32_t pool, const uint64_t oid[3], uint32_t idx, uint64_t ver)
{
	fill_page(pagebuf, pool, oid, idx, ver);
	return req_sync(&D, qsel(), TMEM_OP_PUT_PAGE, 0, pool, oid, idx, pagebuf, TMEM_PAGE_SIZE, NULL, 0);
}
static struct res get(uint32_t pool, const uint64_t oid[3], uint32_t idx, uint32_t flags)
{
	return req_sync(&D, qsel(), TMEM_OP_GET_PAGE, flags, pool, oid, idx, NULL, 0, getbuf, TMEM_PAGE_SIZE);
}
static int untouched(uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (getbuf[i] != 0xaa)
			return 0;
	return 1;
}
/* GET that must hit with version ver: returns 1 or sets why */
static int get_is(uint32_t pool, const uint64_t oid[3], uint32_t idx, uint32_t flags, uint64_t ver, const char *what)
{
	struct res r = get(pool, oid, idx, flags);
	EXPECT(r.status == TMEM_S_OK && r.len == TMEM_PAGE_SIZE + 16, "%s: GET status %d len %u, expected OK len 4112", what, r.status, r.len);
	int b = check_page(getbuf, pool, oid, idx, ver);
	EXPECT(b < 0, "%s: GET data differs from version %llu at byte %d (holds v%llu)", what, (unsigned long long)ver, b * 8,
	       (unsigned long long)((uint64_t *)(void *)getbuf)[2]);
	return 1;
}
static int get_miss(uint32_t pool, const uint64_t oid[3], uint32_t idx, uint32_t flags, const char *what)
{
	struct res r = get(pool, oid, idx, flags);
	EXPECT(r.status == TMEM_S_MISS && r.len == 16, "%s: GET status %d len %u, expected MISS len 16", what, r.status, r.len);
	EXPECT(untouched(TMEM_PAGE_SIZE), "%s: GET MISS wrote into the data area", what);
	return 1;
}
static struct res simple(uint32_t op, uint32_t flags, uint32_t pool, const uint64_t oid[3], uint32_t idx)
{
	return req_sync(&D, qsel(), op, flags, pool, oid, idx, NULL, 0, NULL, 0);
}
static struct res info(struct tmem_info *out)
{
	uint8_t b[TMEM_INFO_SIZE];
	struct res r = req_sync(&D, qsel(), TMEM_OP_INFO, 0, 0, NULL, 0, NULL, 0, b, TMEM_INFO_SIZE);
	memcpy(out, b, sizeof(*out));
	return r;
}
static int reset(void)
{
	struct res r = simple(TMEM_OP_RESET, 0, 0, NULL, 0);
	EXPECT(r.status == TMEM_S_OK && r.len == 16, "RESET status %d len %u", r.status, r.len);
	return 1;
}
static int pool_of(uint32_t flags, uint32_t *id)
{
	struct res r = np(flags, TMEM_PAGE_SIZE, NULL);
	EXPECT(r.status == TMEM_S_OK && r.len == 16, "NEW_POOL flags %u: status %d len %u", flags, r.status, r.len);
	*id = (uint32_t)r.value;
	return 1;
}
#define ST_IS(r, st, what) EXPECT((r).status == (st) && (r).len == 16, "%s: status %d len %u, expected %d len 16", what, (r).status, (r).len, st)
/* a step of a rule: a helper that returns 1, or 0 with why set */
#define STEP(ok)                  \
	do {                      \
		if (!(ok))        \
			return 0; \
	} while (0)
/* a reply with status st and used len 16: returns 1 or sets why */
static int status_is(struct res r, int32_t st, const char *what)
{
	ST_IS(r, st, what);
	return 1;
}
/* PUT that must succeed (OK, used len 16): returns 1 or sets why */
static int put_ok(uint32_t pool, const uint64_t oid[3], uint32_t idx, uint64_t ver, const char *what)
{
	struct res r = put(pool, oid, idx, ver);
	ST_IS(r, TMEM_S_OK, what);
	return 1;
}

/* ---- the rules ---- */

static struct tmem_info INFO0;

static int r_info(void)
{
	struct tmem_info in;
	memset(&in, 0x77, sizeof(in));
	struct res r = info(&in);
	EXPECT(r.status == TMEM_S_OK && r.len == TMEM_INFO_SIZE + 16, "INFO status %d used len %u, expected OK and 80", r.status, r.len);
	EXPECT(r.value == 0 && r.reserved == 0, "INFO value %llu reserved %u, expected 0", (unsigned long long)r.value, r.reserved);
	EXPECT(in.abi_version == TMEM_ABI_VERSION, "abi_version %u", in.abi_version);
	EXPECT(in.page_size == TMEM_PAGE_SIZE, "page_size %u", in.page_size);
	/* ABI.md: num_queues = num_vqs, the queues the front-end set up (not what the daemon could offer) */
	EXPECT(in.num_queues == (uint32_t)D.nq, "num_queues %u, the front-end set up %d (the daemon offers %u)", in.num_queues, D.nq, D.queue_num);
	EXPECT(in.max_pools >= 1, "max_pools %u", in.max_pools);
	EXPECT(in.capacity_pages > 0, "capacity_pages 0");
	if (G.maxmem_pages >= 0)
		EXPECT(in.persistent_limit_pages == (uint64_t)G.maxmem_pages, "persistent_limit_pages %llu, expected %lld (maxmem - RAM)",
		       (unsigned long long)in.persistent_limit_pages, (long long)G.maxmem_pages);
	for (int i = 0; i < 16; i++)
		EXPECT(in.reserved[i] == 0, "reserved byte %d is 0x%02x", i, in.reserved[i]);
	INFO0 = in;
	snprintf(why, sizeof(why), "abi 1, page 4096, max_pools %u, num_queues %u, capacity %llu pages, persistent limit %llu pages, used len 80",
		 in.max_pools, in.num_queues, (unsigned long long)in.capacity_pages, (unsigned long long)in.persistent_limit_pages);
	return 1;
}

static int r_reset(void)
{
	uint32_t p;
	struct res r = simple(TMEM_OP_RESET, 0, 0, NULL, 0);
	ST_IS(r, TMEM_S_OK, "first RESET");
	for (int i = 0; i < 3; i++)
		STEP(pool_of(i == 0 ? TMEM_POOL_PERSIST : 0, &p));
	STEP(put_ok(p, OID, 1, 1, "PUT"));
	r = simple(TMEM_OP_RESET, 0, 0, NULL, 0);
	ST_IS(r, TMEM_S_OK, "RESET");
	EXPECT(r.value == 3, "RESET value %llu, expected 3 pools destroyed", (unsigned long long)r.value);
	STEP(status_is(get(p, OID, 1, 0), TMEM_S_INVALID, "GET on a pool destroyed by RESET"));
	r = simple(TMEM_OP_RESET, 0, 0, NULL, 0);
	EXPECT(r.status == TMEM_S_OK && r.value == 0, "RESET of nothing: status %d value %llu", r.status, (unsigned long long)r.value);
	snprintf(why, sizeof(why), "value = pools destroyed (3, then 0), their ids INVALID afterwards");
	return 1;
}

static uint32_t PP, PE; /* persistent and ephemeral pools for the rules below */

static int r_copy(void)
{
	STEP(put_ok(PP, OID, 7, 100, "PUT"));
	/* the guest reuses its page frame: the store must hold a copy */
	memset(D.vq[0].scratch, 0x33, TMEM_PAGE_SIZE);
	for (int q = 0; q < D.nq; q++)
		memset(D.vq[q].scratch, 0x33, TMEM_PAGE_SIZE);
	STEP(get_is(PP, OID, 7, 0, 100, "GET after the source page changed"));
	STEP(get_is(PP, OID, 7, 0, 100, "second GET (persistent, not exclusive)"));
	snprintf(why, sizeof(why), "source page overwritten after PUT, GET returns the PUT data twice");
	return 1;
}

static int r_persistent(void)
{
	uint64_t oid[3] = { 77, 0, 0 };
	for (uint32_t i = 0; i < 64; i++)
		STEP(put_ok(PP, oid, i, 1000 + i, "PUT"));
	for (int pass = 0; pass < 2; pass++)
		for (uint32_t i = 0; i < 64; i++)
			STEP(get_is(PP, oid, i, 0, 1000 + i, "GET"));
	struct res r = simple(TMEM_OP_FLUSH_OBJECT, 0, PP, oid, 0);
	EXPECT(r.status == TMEM_S_OK && r.value == 64, "FLUSH_OBJECT status %d value %llu, expected 64", r.status, (unsigned long long)r.value);
	snprintf(why, sizeof(why), "64 pages PUT, each GET twice exactly, over %d queue(s)", D.nq);
	return 1;
}

static int r_eph_exclusive(void)
{
	struct res r;
	STEP(put_ok(PE, OID, 3, 200, "PUT ephemeral"));
	r = get(PE, OID, 3, 0);
	if (r.status == TMEM_S_OK) {
		EXPECT(r.len == 4112, "GET hit len %u", r.len);
		int b = check_page(getbuf, PE, OID, 3, 200);
		EXPECT(b < 0, "GET data differs at byte %d", b * 8);
	} else
		ST_IS(r, TMEM_S_MISS, "first GET");
	int hit = r.status == TMEM_S_OK;
	STEP(get_miss(PE, OID, 3, 0, "second GET of a private ephemeral page"));
	snprintf(why, sizeof(why), "first GET %s, second GET MISS", hit ? "hit with the PUT data" : "missed (allowed)");
	return 1;
}

static int r_exclusive_flag(void)
{
	struct res r;
	STEP(put_ok(PP, OID, 4, 300, "PUT"));
	STEP(get_is(PP, OID, 4, 0, 300, "GET without EXCLUSIVE"));
	STEP(get_is(PP, OID, 4, TMEM_REQF_EXCLUSIVE, 300, "GET with EXCLUSIVE"));
	STEP(get_miss(PP, OID, 4, 0, "GET after an exclusive GET"));
	STEP(put_ok(PE, OID, 4, 301, "PUT ephemeral"));
	r = get(PE, OID, 4, TMEM_REQF_EXCLUSIVE);
	EXPECT(r.status == TMEM_S_OK || r.status == TMEM_S_MISS, "ephemeral GET with EXCLUSIVE: status %d", r.status);
	STEP(get_miss(PE, OID, 4, 0, "ephemeral GET after GET"));
	snprintf(why, sizeof(why), "persistent: plain GET keeps the page, EXCLUSIVE GET removes it");
	return 1;
}

static int r_put_put_get(void)
{
	struct res r;
	STEP(put_ok(PP, OID, 5, 400, "PUT D1"));
	STEP(put_ok(PP, OID, 5, 401, "PUT D2"));
	STEP(get_is(PP, OID, 5, 0, 401, "persistent GET after PUT D1, PUT D2"));
	STEP(put_ok(PE, OID, 5, 402, "ephemeral PUT D1"));
	STEP(put_ok(PE, OID, 5, 403, "ephemeral PUT D2"));
	r = get(PE, OID, 5, 0);
	if (r.status == TMEM_S_OK) {
		int b = check_page(getbuf, PE, OID, 5, 403);
		EXPECT(b < 0, "ephemeral GET after PUT D1, PUT D2 returned %s", check_page(getbuf, PE, OID, 5, 402) < 0 ? "D1" : "other data");
	} else
		ST_IS(r, TMEM_S_MISS, "ephemeral GET");
	snprintf(why, sizeof(why), "GET returns D2, never D1 (persistent and ephemeral)");
	return 1;
}

static int r_failed_put(void)
{
	struct res r;
	STEP(put_ok(PP, OID, 6, 500, "PUT D1"));
	fill_page(pagebuf, PP, OID, 6, 501);
	r = req_sync(&D, qsel(), TMEM_OP_PUT_PAGE, 0, PP, OID, 6, pagebuf, TMEM_PAGE_SIZE - 1, NULL, 0);
	ST_IS(r, TMEM_S_INVALID, "PUT with a 4095-byte data area");
	STEP(get_miss(PP, OID, 6, 0, "GET after a PUT that failed with INVALID lengths"));
	STEP(put_ok(PP, OID, 6, 502, "PUT again"));
	r = req_sync(&D, qsel(), TMEM_OP_PUT_PAGE, TMEM_REQF_EXCLUSIVE, PP, OID, 6, pagebuf, TMEM_PAGE_SIZE, NULL, 0);
	ST_IS(r, TMEM_S_INVALID, "PUT with flags=EXCLUSIVE (a GET-only flag)");
	STEP(get_miss(PP, OID, 6, 0, "GET after a PUT that failed with INVALID flags"));
	STEP(put_ok(PE, OID, 6, 503, "ephemeral PUT"));
	r = req_sync(&D, qsel(), TMEM_OP_PUT_PAGE, 0, PE, OID, 6, pagebuf, TMEM_PAGE_SIZE + 1, NULL, 0);
	ST_IS(r, TMEM_S_INVALID, "ephemeral PUT with 4097 bytes");
	STEP(get_miss(PE, OID, 6, 0, "ephemeral GET after a failed PUT"));
	snprintf(why, sizeof(why), "a failed PUT (INVALID length or flags) leaves the handle empty");
	return 1;
}

static int r_get_get(void)
{
	uint64_t oid[3] = { 999, 1, 2 };
	if (!get_miss(PP, oid, 1, 0, "persistent GET of an absent page") || !get_miss(PP, oid, 1, 0, "persistent second GET"))
		return 0;
	if (!get_miss(PE, oid, 1, 0, "ephemeral GET of an absent page") || !get_miss(PE, oid, 1, 0, "ephemeral second GET"))
		return 0;
	struct res r;
	STEP(put_ok(PE, oid, 2, 600, "ephemeral PUT"));
	for (int i = 0; i < 2; i++)
		STEP(get_miss(PE, oid, 3, 0, "ephemeral GET of a neighbour"));
	r = get(PE, oid, 2, 0);
	EXPECT(r.status == TMEM_S_OK || r.status == TMEM_S_MISS, "ephemeral GET status %d", r.status);
	if (!get_miss(PE, oid, 2, 0, "GET after a GET") || !get_miss(PE, oid, 2, 0, "GET after a missed GET"))
		return 0;
	snprintf(why, sizeof(why), "a missed GET is followed by misses until a PUT");
	return 1;
}

static int r_flush_page(void)
{
	struct res r;
	STEP(put_ok(PP, OID, 8, 700, "PUT"));
	r = simple(TMEM_OP_FLUSH_PAGE, 0, PP, OID, 8);
	ST_IS(r, TMEM_S_OK, "FLUSH_PAGE");
	EXPECT(r.value == 0, "FLUSH_PAGE value %llu", (unsigned long long)r.value);
	STEP(get_miss(PP, OID, 8, 0, "GET after FLUSH_PAGE"));
	STEP(status_is(simple(TMEM_OP_FLUSH_PAGE, 0, PP, OID, 8), TMEM_S_OK, "FLUSH_PAGE of an absent page"));
	STEP(put_ok(PE, OID, 8, 701, "ephemeral PUT"));
	STEP(status_is(simple(TMEM_OP_FLUSH_PAGE, 0, PE, OID, 8), TMEM_S_OK, "ephemeral FLUSH_PAGE"));
	STEP(get_miss(PE, OID, 8, 0, "ephemeral GET after FLUSH_PAGE"));
	snprintf(why, sizeof(why), "GET misses after FLUSH_PAGE; flushing an absent page succeeds");
	return 1;
}

static int r_flush_object(void)
{
	uint64_t a[3] = { 0xa, 0, 0 }, b[3] = { 0xb, 0, 0 };
	struct res r;
	for (uint32_t i = 0; i < 5; i++)
		STEP(put_ok(PP, a, i * 1000, 800 + i, "PUT"));
	STEP(put_ok(PP, b, 0, 810, "PUT other object"));
	r = simple(TMEM_OP_FLUSH_OBJECT, 0, PP, a, 12345);
	ST_IS(r, TMEM_S_OK, "FLUSH_OBJECT");
	EXPECT(r.value == 5, "FLUSH_OBJECT value %llu, expected 5 pages flushed", (unsigned long long)r.value);
	for (uint32_t i = 0; i < 5; i++)
		STEP(get_miss(PP, a, i * 1000, 0, "GET after FLUSH_OBJECT"));
	STEP(get_is(PP, b, 0, 0, 810, "GET of another object"));
	r = simple(TMEM_OP_FLUSH_OBJECT, 0, PP, a, 0);
	EXPECT(r.status == TMEM_S_OK && r.len == 16 && r.value == 0, "FLUSH_OBJECT of an absent object: status %d len %u value %llu", r.status,
	       r.len, (unsigned long long)r.value);
	snprintf(why, sizeof(why), "value 5 = pages flushed, other objects kept, absent object -> OK 0");
	return 1;
}

static int r_oid_192(void)
{
	uint64_t a[3] = { 1, 2, 3 }, b[3] = { 1, 2, 3 | (1ull << 63) }, c[3] = { 1, 2 | (1ull << 63), 3 };
	STEP(put_ok(PP, a, 0xffffffffu, 900, "PUT a"));
	STEP(put_ok(PP, b, 0xffffffffu, 901, "PUT b"));
	STEP(put_ok(PP, c, 0xffffffffu, 902, "PUT c"));
	if (!get_is(PP, a, 0xffffffffu, 0, 900, "GET a") || !get_is(PP, b, 0xffffffffu, 0, 901, "GET b") ||
	    !get_is(PP, c, 0xffffffffu, 0, 902, "GET c"))
		return 0;
	snprintf(why, sizeof(why), "handles differing only in oid[1] or oid[2] bit 63 are distinct; index 0xffffffff works");
	return 1;
}

static int r_destroy(void)
{
	uint32_t p;
	STEP(pool_of(TMEM_POOL_PERSIST, &p));
	STEP(put_ok(p, OID, 1, 1000, "PUT"));
	STEP(status_is(simple(TMEM_OP_DESTROY_POOL, 0, p, NULL, 0), TMEM_S_OK, "DESTROY_POOL"));
	STEP(status_is(get(p, OID, 1, 0), TMEM_S_INVALID, "GET on the destroyed pool"));
	EXPECT(untouched(TMEM_PAGE_SIZE), "GET INVALID wrote into the data area");
	STEP(status_is(put(p, OID, 1, 1001), TMEM_S_INVALID, "PUT on the destroyed pool"));
	STEP(status_is(simple(TMEM_OP_DESTROY_POOL, 0, p, NULL, 0), TMEM_S_INVALID, "second DESTROY_POOL"));
	snprintf(why, sizeof(why), "OK, then the id is unknown (INVALID) for GET, PUT and DESTROY");
	return 1;
}

static int r_used_len(void)
{
	struct res r = put(PP, OID, 9, 1100);
	EXPECT(r.status == 0 && r.len == 16, "PUT OK: len %u", r.len);
	r = get(PP, OID, 9, 0);
	EXPECT(r.status == 0 && r.len == 4112, "GET hit: len %u", r.len);
	r = get(PP, OID, 10, 0);
	EXPECT(r.status == TMEM_S_MISS && r.len == 16 && untouched(4096), "GET MISS: status %d len %u, data untouched %d", r.status, r.len,
	       untouched(4096));
	r = get(0xdead, OID, 9, 0);
	EXPECT(r.status == TMEM_S_INVALID && r.len == 16 && untouched(4096), "GET unknown pool: status %d len %u, data untouched %d", r.status,
	       r.len, untouched(4096));
	r = req_sync(&D, qsel(), TMEM_OP_GET_PAGE, 0, PP, OID, 9, NULL, 0, getbuf, TMEM_PAGE_SIZE + 8);
	EXPECT(r.status == TMEM_S_INVALID && r.len == 16 && untouched(4104), "GET with 4104 writable: status %d len %u, data untouched %d",
	       r.status, r.len, untouched(4104));
	struct tmem_info in;
	r = info(&in);
	EXPECT(r.status == 0 && r.len == 80, "INFO: len %u", r.len);
	r = np(0, 4096, NULL);
	EXPECT(r.status == 0 && r.len == 16, "NEW_POOL: status %d len %u", r.status, r.len);
	uint32_t p = (uint32_t)r.value;
	r = simple(TMEM_OP_DESTROY_POOL, 0, p, NULL, 0);
	EXPECT(r.status == 0 && r.len == 16, "DESTROY_POOL: len %u", r.len);
	r = simple(99, 0, 0, NULL, 0);
	EXPECT(r.status == TMEM_S_UNSUPPORTED && r.len == 16, "unknown op: status %d len %u", r.status, r.len);
	snprintf(why, sizeof(why), "16 for PUT/NEW_POOL/DESTROY/MISS/errors, 4112 for a hit, 80 for INFO; MISS and errors write no data");
	return 1;
}

static int r_unsupported(void)
{
	static const uint32_t ops[] = { 0, 9, 99, 0x80000000u, 0xffffffffu };
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		struct res r = simple(ops[i], 0, PP, OID, 0);
		EXPECT(r.status == TMEM_S_UNSUPPORTED && r.len == 16, "op %u: status %d len %u, expected UNSUPPORTED", ops[i], r.status, r.len);
	}
	/* UNSUPPORTED wins over bad lengths, bad flags and unknown pools */
	uint8_t junk[100];
	memset(junk, 1, sizeof(junk));
	struct res r = req_sync(&D, qsel(), 42, 0xff, 0xdead, OID, 0, junk, sizeof(junk), NULL, 0);
	EXPECT(r.status == TMEM_S_UNSUPPORTED && r.len == 16, "op 42 with 100 extra readable bytes, flags 0xff, unknown pool: status %d len %u", r.status,
	       r.len);
	r = req_sync(&D, qsel(), 0, 0, 0xdead, OID, 0, NULL, 0, getbuf, 4096);
	EXPECT(r.status == TMEM_S_UNSUPPORTED && r.len == 16, "op 0 with 4096 writable bytes: status %d len %u", r.status, r.len);
	snprintf(why, sizeof(why), "ops 0, 9, 99, 2^31, 2^32-1 -> UNSUPPORTED, also with bad lengths, flags and pool");
	return 1;
}

static int r_invalid_lengths(void)
{
	struct {
		uint32_t op, rd, wr;
		const char *what;
	} c[] = {
		{ TMEM_OP_PUT_PAGE, 4095, 0, "PUT 4095" },	   { TMEM_OP_PUT_PAGE, 4097, 0, "PUT 4097" },
		{ TMEM_OP_PUT_PAGE, 0, 0, "PUT without data" },	   { TMEM_OP_PUT_PAGE, 4096, 8, "PUT with 8 writable extra" },
		{ TMEM_OP_GET_PAGE, 0, 4095, "GET 4095" },	   { TMEM_OP_GET_PAGE, 0, 4097, "GET 4097" },
		{ TMEM_OP_GET_PAGE, 0, 0, "GET without data" },	   { TMEM_OP_GET_PAGE, 8, 4096, "GET with 8 readable extra" },
		{ TMEM_OP_FLUSH_PAGE, 8, 0, "FLUSH_PAGE +8 rd" },  { TMEM_OP_FLUSH_PAGE, 0, 8, "FLUSH_PAGE +8 wr" },
		{ TMEM_OP_FLUSH_OBJECT, 1, 0, "FLUSH_OBJECT +1" }, { TMEM_OP_DESTROY_POOL, 0, 4, "DESTROY_POOL +4 wr" },
		{ TMEM_OP_INFO, 0, 63, "INFO 63" },		   { TMEM_OP_INFO, 0, 65, "INFO 65" },
		{ TMEM_OP_INFO, 0, 0, "INFO without data" },	   { TMEM_OP_NEW_POOL, 23, 0, "NEW_POOL 23" },
		{ TMEM_OP_NEW_POOL, 25, 0, "NEW_POOL 25" },	   { TMEM_OP_NEW_POOL, 24, 8, "NEW_POOL +8 wr" },
		{ TMEM_OP_RESET, 8, 0, "RESET +8 rd" },		   { TMEM_OP_RESET, 0, 8, "RESET +8 wr" },
	};
	uint8_t rd[4200];
	struct tmem_new_pool npl = { .flags = TMEM_POOL_PERSIST, .page_size = 4096 };
	memset(rd, 0, sizeof(rd));
	memcpy(rd, &npl, sizeof(npl));
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct res r = req_sync(&D, qsel(), c[i].op, 0, PP, OID, 11, rd, c[i].rd, getbuf, c[i].wr);
		EXPECT(r.status == TMEM_S_INVALID && r.len == 16, "%s: status %d len %u, expected INVALID len 16", c[i].what, r.status, r.len);
		EXPECT(untouched(c[i].wr), "%s: the data area was written", c[i].what);
	}
	/* the pool survived the malformed RESET/DESTROY */
	STEP(put_ok(PP, OID, 11, 1200, "PUT after the malformed requests"));
	/* a 40-byte header */
	struct vq *q = &D.vq[0];
	struct slot *s = &q->slots[0];
	put_hdr(s->hdr, TMEM_OP_FLUSH_PAGE, 0, PP, OID, 11, 0);
	memset(s->resp, 0xee, 16);
	struct seg sg[2] = { { gpa_of(&D, s->hdr), 40, 0 }, { gpa_of(&D, s->resp), 16, 1 } };
	STEP(status_is(chain_sync(&D, 0, sg, 2, D.indirect, s->resp), TMEM_S_INVALID, "FLUSH_PAGE with a 40-byte header"));
	STEP(get_is(PP, OID, 11, 0, 1200, "GET after the malformed FLUSH_PAGE"));
	snprintf(why, sizeof(why), "%zu wrong-length requests and a short header -> INVALID, len 16, nothing written", sizeof(c) / sizeof(c[0]));
	return 1;
}

static int r_invalid_flags(void)
{
	struct res r;
	r = req_sync(&D, qsel(), TMEM_OP_GET_PAGE, 2, PP, OID, 1, NULL, 0, getbuf, 4096);
	ST_IS(r, TMEM_S_INVALID, "GET flags 2");
	r = req_sync(&D, qsel(), TMEM_OP_GET_PAGE, 0x80000000u, PP, OID, 1, NULL, 0, getbuf, 4096);
	ST_IS(r, TMEM_S_INVALID, "GET flags 1<<31");
	static const uint32_t ops[] = { TMEM_OP_FLUSH_PAGE, TMEM_OP_FLUSH_OBJECT, TMEM_OP_INFO, TMEM_OP_RESET, TMEM_OP_DESTROY_POOL };
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		uint32_t wr = ops[i] == TMEM_OP_INFO ? 64 : 0;
		r = req_sync(&D, qsel(), ops[i], 1, PP, OID, 1, NULL, 0, getbuf, wr);
		EXPECT(r.status == TMEM_S_INVALID && r.len == 16, "op %u with request flags 1: status %d len %u", ops[i], r.status, r.len);
	}
	struct tmem_new_pool npl = { .flags = TMEM_POOL_PERSIST, .page_size = 4096 };
	r = req_sync(&D, qsel(), TMEM_OP_NEW_POOL, 1, 0, NULL, 0, &npl, sizeof(npl), NULL, 0);
	ST_IS(r, TMEM_S_INVALID, "NEW_POOL with request flags 1");
	STEP(status_is(np(4, 4096, NULL), TMEM_S_INVALID, "NEW_POOL pool flags 4"));
	STEP(status_is(np(TMEM_POOL_PERSIST | TMEM_POOL_SHARED, 4096, NULL), TMEM_S_INVALID, "NEW_POOL PERSIST|SHARED"));
	STEP(status_is(np(TMEM_POOL_PERSIST, 8192, NULL), TMEM_S_INVALID, "NEW_POOL page_size 8192"));
	STEP(status_is(np(0, 0, NULL), TMEM_S_INVALID, "NEW_POOL page_size 0"));
	/* flags are checked before the pool: INVALID either way, and bad flags on an unknown pool is not DENIED or MISS */
	r = req_sync(&D, qsel(), TMEM_OP_GET_PAGE, 4, 0xdead, OID, 1, NULL, 0, getbuf, 4096);
	ST_IS(r, TMEM_S_INVALID, "GET flags 4 on an unknown pool");
	snprintf(why, sizeof(why), "undefined request flags, pool flags 4, PERSIST|SHARED, page size 8192/0 -> INVALID");
	return 1;
}

static int r_unknown_pool(void)
{
	static const uint32_t bad[] = { 0xdead, 0xffffffffu, 4096 };
	for (size_t i = 0; i < 3; i++) {
		uint32_t p = bad[i];
		struct res r = put(p, OID, 0, 1);
		ST_IS(r, TMEM_S_INVALID, "PUT on an unknown pool");
		STEP(status_is(get(p, OID, 0, 0), TMEM_S_INVALID, "GET on an unknown pool"));
		STEP(status_is(simple(TMEM_OP_FLUSH_PAGE, 0, p, OID, 0), TMEM_S_INVALID, "FLUSH_PAGE on an unknown pool"));
		STEP(status_is(simple(TMEM_OP_FLUSH_OBJECT, 0, p, OID, 0), TMEM_S_INVALID, "FLUSH_OBJECT on an unknown pool"));
		STEP(status_is(simple(TMEM_OP_DESTROY_POOL, 0, p, OID, 0), TMEM_S_INVALID, "DESTROY_POOL of an unknown pool"));
	}
	snprintf(why, sizeof(why), "PUT/GET/FLUSH/FLUSH_OBJECT/DESTROY on unknown ids -> INVALID");
	return 1;
}

static int r_shared(void)
{
	uint8_t uuid[16] = { 0x74, 0x6d, 0x65, 0x6d, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
	struct res r;
	if (!D.shared) {
		STEP(status_is(np(TMEM_POOL_SHARED, 4096, uuid), TMEM_S_INVALID, "NEW_POOL SHARED without TMEM_F_SHARED negotiated"));
		snprintf(why, sizeof(why), "shared pool without TMEM_F_SHARED negotiated -> INVALID");
		return 1;
	}
	/* INVALID outranks DENIED */
	STEP(status_is(np(TMEM_POOL_SHARED | TMEM_POOL_PERSIST, 4096, uuid), TMEM_S_INVALID, "NEW_POOL SHARED|PERSIST"));
	STEP(status_is(np(TMEM_POOL_SHARED | 8, 4096, uuid), TMEM_S_INVALID, "NEW_POOL SHARED|8"));
	STEP(status_is(np(TMEM_POOL_SHARED, 512, uuid), TMEM_S_INVALID, "NEW_POOL SHARED page size 512"));
	if (!strcmp(G.shared_expect, "denied")) {
		STEP(status_is(np(TMEM_POOL_SHARED, 4096, uuid), TMEM_S_DENIED, "NEW_POOL SHARED for a VM without a share group"));
		snprintf(why, sizeof(why), "no share group -> DENIED; SHARED|PERSIST, SHARED|8, bad page size -> INVALID first");
		return 1;
	}
	r = np(TMEM_POOL_SHARED, 4096, uuid);
	ST_IS(r, TMEM_S_OK, "NEW_POOL SHARED");
	uint32_t a = (uint32_t)r.value;
	r = np(TMEM_POOL_SHARED, 4096, uuid);
	ST_IS(r, TMEM_S_OK, "NEW_POOL SHARED again");
	uint32_t b = (uint32_t)r.value;
	EXPECT(a != b, "the same uuid twice gave the same pool id %u", a);
	STEP(put_ok(a, OID, 1, 1300, "PUT through the first id"));
	/* the page is named by pool a in its content; GET through b returns those bytes */
	r = get(b, OID, 1, 0);
	EXPECT(r.status == 0 && r.len == 4112 && check_page(getbuf, a, OID, 1, 1300) < 0, "GET through the second id: status %d", r.status);
	r = get(a, OID, 1, 0);
	EXPECT(r.status == 0 && check_page(getbuf, a, OID, 1, 1300) < 0, "shared GET removed the page (status %d)", r.status);
	r = get(a, OID, 1, TMEM_REQF_EXCLUSIVE);
	EXPECT(r.status == 0 || r.status == TMEM_S_MISS || r.status == TMEM_S_INVALID, "shared exclusive GET status %d", r.status);
	STEP(status_is(simple(TMEM_OP_DESTROY_POOL, 0, a, NULL, 0), TMEM_S_OK, "DESTROY the first id"));
	STEP(status_is(get(a, OID, 1, 0), TMEM_S_INVALID, "GET through the destroyed id"));
	STEP(status_is(simple(TMEM_OP_DESTROY_POOL, 0, b, NULL, 0), TMEM_S_OK, "DESTROY the second id"));
	snprintf(why, sizeof(why), "same uuid -> two ids of one pool, GET never removes, DESTROY drops one reference");
	return 1;
}

static int r_pool_limit(void)
{
	if (!reset())
		return 0;
	struct tmem_info in;
	struct res r = info(&in);
	EXPECT(r.status == TMEM_S_OK && r.len == 80, "INFO: status %d len %u", r.status, r.len);
	uint32_t n = 0;
	for (;;) {
		r = np(n % 2 ? TMEM_POOL_PERSIST : 0, 4096, NULL);
		if (r.status != TMEM_S_OK)
			break;
		EXPECT(++n <= in.max_pools, "NEW_POOL succeeded %u times, max_pools is %u", n, in.max_pools);
	}
	ST_IS(r, TMEM_S_NOSPACE, "NEW_POOL beyond max_pools");
	EXPECT(n == in.max_pools, "%u pools created, max_pools is %u", n, in.max_pools);
	/* INVALID outranks NOSPACE */
	STEP(status_is(np(4, 4096, NULL), TMEM_S_INVALID, "NEW_POOL with bad flags at the pool limit"));
	r = simple(TMEM_OP_RESET, 0, 0, NULL, 0);
	EXPECT(r.status == 0 && r.value == n, "RESET: status %d value %llu, expected %u", r.status, (unsigned long long)r.value, n);
	snprintf(why, sizeof(why), "%u pools, then NOSPACE; bad flags still INVALID; RESET destroyed %u", n, n);
	return 1;
}

static int r_info_counts(void)
{
	if (!reset())
		return 0;
	uint32_t p, e;
	if (!pool_of(TMEM_POOL_PERSIST, &p) || !pool_of(0, &e))
		return 0;
	for (uint32_t i = 0; i < 3; i++)
		STEP(put_ok(p, OID, i, 1, "PUT persistent"));
	for (uint32_t i = 0; i < 2; i++) {
		STEP(put_ok(e, OID, i, 1, "PUT ephemeral"));
	}
	struct tmem_info in;
	info(&in);
	EXPECT(in.persistent_pages == 3 && in.ephemeral_pages <= 2, "INFO persistent_pages %llu ephemeral_pages %llu, expected 3 and <= 2",
	       (unsigned long long)in.persistent_pages, (unsigned long long)in.ephemeral_pages);
	struct res r = simple(TMEM_OP_FLUSH_PAGE, 0, p, OID, 0);
	ST_IS(r, TMEM_S_OK, "FLUSH_PAGE");
	info(&in);
	EXPECT(in.persistent_pages == 2, "INFO persistent_pages %llu after a flush, expected 2", (unsigned long long)in.persistent_pages);
	if (!reset())
		return 0;
	info(&in);
	EXPECT(in.persistent_pages == 0 && in.ephemeral_pages == 0, "after RESET: persistent %llu ephemeral %llu",
	       (unsigned long long)in.persistent_pages, (unsigned long long)in.ephemeral_pages);
	snprintf(why, sizeof(why), "persistent_pages/ephemeral_pages follow PUT, FLUSH and RESET");
	return 1;
}

static int r_maxmem(void)
{
	uint64_t lim = INFO0.persistent_limit_pages;
	if (!reset())
		return 0;
	uint32_t p, e;
	if (!pool_of(TMEM_POOL_PERSIST, &p) || !pool_of(0, &e))
		return 0;
	uint64_t oid[3] = { 0x3a3a, 0, 0 };
	struct res r;
	for (uint64_t i = 0; i < lim; i++) {
		r = put(p, oid, (uint32_t)i, 1);
		EXPECT(r.status == TMEM_S_OK && r.len == 16, "PUT %llu of %llu (limit): status %d", (unsigned long long)i + 1, (unsigned long long)lim,
		       r.status);
	}
	STEP(status_is(put(p, oid, (uint32_t)lim, 1), TMEM_S_NOSPACE, "PUT beyond persistent_limit_pages"));
	STEP(get_miss(p, oid, (uint32_t)lim, 0, "GET of the refused page"));
	r = req_sync(&D, qsel(), TMEM_OP_PUT_PAGE, 0, p, oid, (uint32_t)lim, pagebuf, 100, NULL, 0);
	ST_IS(r, TMEM_S_INVALID, "PUT with bad length at the limit (INVALID outranks NOSPACE)");
	STEP(status_is(put(0xdead, oid, 0, 1), TMEM_S_INVALID, "PUT on an unknown pool at the limit"));
	r = put(e, oid, 0, 2);
	EXPECT(r.status == TMEM_S_OK || r.status == TMEM_S_NOSPACE, "ephemeral PUT at the persistent limit: status %d", r.status);
	struct tmem_info in;
	info(&in);
	EXPECT(in.persistent_pages == lim, "INFO persistent_pages %llu, expected %llu", (unsigned long long)in.persistent_pages,
	       (unsigned long long)lim);
	if (lim > 0) {
		/* replacing a page at the limit: fails (handle empty) or succeeds, never keeps the old data */
		r = put(p, oid, 0, 2);
		if (r.status == TMEM_S_OK) {
			STEP(get_is(p, oid, 0, 0, 2, "GET of a page replaced at the limit"));
		} else {
			ST_IS(r, TMEM_S_NOSPACE, "PUT replacing a page at the limit");
			STEP(get_miss(p, oid, 0, 0, "GET after a refused replacement"));
		}
		STEP(status_is(simple(TMEM_OP_FLUSH_PAGE, 0, p, oid, 1), TMEM_S_OK, "FLUSH_PAGE"));
		STEP(put_ok(p, oid, (uint32_t)lim, 3, "PUT after a flush made room"));
		STEP(get_is(p, oid, (uint32_t)lim, 0, 3, "GET of it"));
	}
	if (!reset())
		return 0;
	snprintf(why, sizeof(why), "%llu persistent pages (maxmem - RAM), then NOSPACE with the handle empty; INVALID outranks NOSPACE; a flush makes room",
		 (unsigned long long)lim);
	return 1;
}

static void run(const char *name, int (*fn)(void))
{
	why[0] = 0;
	int ok = fn();
	report(name, ok, ok ? why : NULL);
}

int mode_rules(void)
{
	/* connection 1: TMEM_F_SHARED negotiated */
	int want_shared = 1;
	G.shared = want_shared;
	dev_open(&D, G.queues);
	run("info", r_info);
	run("reset", r_reset);
	if (!reset() || !pool_of(TMEM_POOL_PERSIST, &PP) || !pool_of(0, &PE)) {
		json_out("FAIL setup: %s", why);
		lg_die(EXIT_MISMATCH, "cannot create the pools for the rules");
	}
	run("copy-not-move", r_copy);
	run("persistent-guarantee", r_persistent);
	run("private-ephemeral-get-exclusive", r_eph_exclusive);
	run("exclusive-flag", r_exclusive_flag);
	run("put-put-get", r_put_put_get);
	run("failed-put-leaves-handle-empty", r_failed_put);
	run("get-get", r_get_get);
	run("flush-page", r_flush_page);
	run("flush-object", r_flush_object);
	run("oid-192-bit", r_oid_192);
	run("destroy-pool", r_destroy);
	run("used-len", r_used_len);
	run("status-unsupported-op", r_unsupported);
	run("status-invalid-lengths", r_invalid_lengths);
	run("status-invalid-flags", r_invalid_flags);
	run("status-unknown-pool-invalid", r_unknown_pool);
	run(!strcmp(G.shared_expect, "denied") ? "status-shared-denied" : "shared-pool", r_shared);
	run("status-nospace-pool-limit", r_pool_limit);
	run("info-counts", r_info_counts);
	if (INFO0.persistent_limit_pages <= 65536)
		run("status-nospace-maxmem", r_maxmem);
	else
		skip("status-nospace-maxmem", "persistent_limit_pages too large to fill; run the daemon with maxmem = RAM + a few MiB");
	uint32_t old_pool = PP;
	struct res r0 = put(PP, OID, 1, 1);
	(void)r0;
	dev_close(&D);

	/* connection 2: a new guest, TMEM_F_SHARED not negotiated */
	G.shared = 0;
	dev_open(&D, G.queues);
	why[0] = 0;
	{
		struct res r = get(old_pool, OID, 1, 0);
		int ok = r.status == TMEM_S_INVALID && r.len == 16;
		if (!ok)
			snprintf(why, sizeof(why), "GET on the previous connection's pool %u: status %d len %u, expected INVALID (a new guest has no pools)",
				 old_pool, r.status, r.len);
		report("reconnect-is-a-new-guest", ok, "the previous connection's pools are gone");
	}
	run("status-shared-not-negotiated", r_shared);
	dev_close(&D);
	G.shared = want_shared;
	json_out("{\"mode\":\"rules\",\"ok\":%s,\"pass\":%d,\"fail\":%d,\"skip\":%d,\"failed\":[%s]}", nfail ? "false" : "true", npass, nfail, nskip,
		 failed_names);
	return nfail ? EXIT_MISMATCH : 0;
}
