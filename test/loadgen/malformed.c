/* SPDX-License-Identifier: GPL-2.0 */
/*
 * malformed: chains the device cannot answer must be completed with used len
 * 0 and nothing written or done; chains with wrong lengths get INVALID; odd
 * but valid splits are served. After each case a verified PUT/GET round trip
 * shows the daemon still serves.
 */
#include "lg.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static struct lgdev D;
static int nfail, ncases;
static uint32_t PP;
static uint64_t rtver = 1;
static uint8_t *HDR, *RESP, *DATA, *TAB, *TAB2; /* in queue 0's scratch */

#define F_N VRING_DESC_F_NEXT
#define F_W VRING_DESC_F_WRITE
#define F_I VRING_DESC_F_INDIRECT

static void dsc(struct lg_desc *t, int i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	t[i].addr = addr;
	t[i].len = len;
	t[i].flags = flags;
	t[i].next = next;
}

static uint64_t g(const void *p)
{
	return gpa_of(&D, p);
}

static void prefill(void)
{
	memset(RESP, 0xee, 64);
	memset(DATA, 0xaa, 8192);
}

static int untouched(void)
{
	for (int i = 0; i < 64; i++)
		if (RESP[i] != 0xee)
			return 0;
	for (int i = 0; i < 8192; i++)
		if (DATA[i] != 0xaa)
			return 0;
	return 1;
}

static void fail(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(const char *name, const char *fmt, ...)
{
	nfail++;
	char m[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	json_out("FAIL %s: %s", name, m);
}

/* The daemon still serves: a verified PUT and GET on every queue. */
static int still_serving(const char *name)
{
	for (int qi = 0; qi < D.nq; qi++) {
		uint64_t oid[3] = { 0x5e, (uint64_t)qi, 0 };
		uint8_t page[TMEM_PAGE_SIZE] __attribute__((aligned(8)));
		uint64_t v = rtver++;
		fill_page(page, PP, oid, 1, v);
		struct res r = req_sync(&D, qi, TMEM_OP_PUT_PAGE, 0, PP, oid, 1, page, TMEM_PAGE_SIZE, NULL, 0);
		if (r.status != TMEM_S_OK || r.len != 16) {
			fail(name, "afterwards a valid PUT got status %d len %u", (int)r.status, r.len);
			return 0;
		}
		r = req_sync(&D, qi, TMEM_OP_GET_PAGE, 0, PP, oid, 1, NULL, 0, page, TMEM_PAGE_SIZE);
		if (r.status != TMEM_S_OK || r.len != 4112 || check_page(page, PP, oid, 1, v) >= 0) {
			fail(name, "afterwards a valid GET got status %d len %u (or wrong data)", (int)r.status, r.len);
			return 0;
		}
	}
	return 1;
}

/* Runs the chain whose head is descriptor 0 of queue 0; checks used len and, for len 0, that nothing was written. */
static void expect_len0(const char *name)
{
	ncases++;
	uint32_t len = raw_sync(&D, 0, 0, name);
	if (len != 0) {
		int32_t st;
		memcpy(&st, RESP, 4);
		fail(name, "used len %u (status in the response area %d), expected 0: the chain is unanswerable", len, (int)st);
		return;
	}
	if (!untouched()) {
		fail(name, "used len 0 but the device wrote into the chain's buffers");
		return;
	}
	if (still_serving(name))
		json_out("PASS %s: used len 0, nothing written, still serving", name);
}

static void expect_status(const char *name, int32_t st, uint32_t want_len, const uint8_t *resp)
{
	ncases++;
	uint32_t len = raw_sync(&D, 0, 0, name);
	struct tmem_resp r;
	memcpy(&r, resp, sizeof(r));
	if (len != want_len || (int32_t)r.status != st) {
		nfail++;
		json_out("FAIL %s: used len %u status %d, expected len %u status %d", name, len, (int32_t)r.status, want_len, st);
		return;
	}
	if (still_serving(name))
		json_out("PASS %s: status %d, used len %u, still serving", name, st, len);
}

/* one descriptor of a hand-made chain: entry i of table t (the ring's, or an indirect table) */
struct chain_desc {
	struct lg_desc *t;
	int i;
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

/* CHAIN({ t, i, addr, len, flags, next }, ...): the descriptors, ended by one without a table */
#define CHAIN(...) ((const struct chain_desc[]){ __VA_ARGS__, { .t = NULL } })

/* Fresh buffers, then the chain written (its head is descriptor 0 of queue 0). */
static void put_chain(const struct chain_desc *c)
{
	prefill();
	for (; c->t; c++)
		dsc(c->t, c->i, c->addr, c->len, c->flags, c->next);
}

/* A chain the device cannot answer: used len 0 and nothing written. */
static void len0_case(const char *name, const struct chain_desc *c)
{
	put_chain(c);
	expect_len0(name);
}

/* A chain answered with status st (16 bytes of response at resp). */
static void status_case(const char *name, int32_t st, const uint8_t *resp, const struct chain_desc *c)
{
	put_chain(c);
	expect_status(name, st, 16, resp);
}

/* After a case: a GET of (oid, idx) on queue 0 returns the page at version ver; pass ends the PASS line. */
static void expect_page(const char *name, const uint64_t oid[3], uint32_t idx, uint64_t ver, const char *pass)
{
	uint8_t page[TMEM_PAGE_SIZE] __attribute__((aligned(8)));
	struct res m;

	ncases++;
	m = req_sync(&D, 0, TMEM_OP_GET_PAGE, 0, PP, oid, idx, NULL, 0, page, TMEM_PAGE_SIZE);
	if (m.status != TMEM_S_OK || check_page(page, PP, oid, idx, ver) >= 0)
		fail(name, "GET afterwards: status %d len %u, expected the page", (int)m.status, m.len);
	else
		json_out("PASS %s%s", name, pass);
}

static void hdr(uint32_t op, uint32_t flags, const uint64_t oid[3], uint32_t idx)
{
	put_hdr(HDR, op, flags, PP, oid, idx, 0xbad);
}

int mode_malformed(void)
{
	dev_open(&D, G.queues);
	struct vq *q = &D.vq[0];
	struct lg_desc *T = q->desc;
	uint16_t N = q->num;
	/* scratch of queue 0: [32K, 64K) is ours (req_sync uses [0, 32K)) */
	HDR = q->scratch + 32768;
	RESP = HDR + 64;
	TAB = HDR + 4096;	      /* up to (N+1) entries for N <= 256 */
	TAB2 = HDR + 4096 + 8192;      /* a second table */
	DATA = ram_alloc(&D, 8192, 4096); /* 2 pages, prefilled 0xaa */
	if ((size_t)(N + 1) * 16 > 8192)
		lg_die(EXIT_ERROR, "malformed: --qsize at most 511");
	struct lg_desc *I = (struct lg_desc *)(void *)TAB, *I2 = (struct lg_desc *)(void *)TAB2;
	struct res r = req_sync(&D, 0, TMEM_OP_RESET, 0, 0, NULL, 0, NULL, 0, NULL, 0);
	struct tmem_new_pool npl = { .flags = TMEM_POOL_PERSIST, .page_size = TMEM_PAGE_SIZE };
	r = req_sync(&D, 0, TMEM_OP_NEW_POOL, 0, 0, NULL, 0, &npl, sizeof(npl), NULL, 0);
	if (r.status != TMEM_S_OK)
		lg_die(EXIT_MISMATCH, "NEW_POOL: status %d", r.status);
	PP = (uint32_t)r.value;
	uint64_t oid[3] = { 0x6d616c66, 0, 0 };
	uint64_t end = gpa_end(&D), hole = 0;
	int has_hole = gpa_hole(&D, &hole);
	uint64_t below = D.reg[0].gpa; /* first byte of RAM */

	/* ---- addresses ---- */
	hdr(TMEM_OP_FLUSH_PAGE, 0, oid, 0);
	len0_case("header-outside-ram",
		  CHAIN({ T, 0, end, 48, F_N, 1 },
			{ T, 1, g(RESP), 16, F_W, 0 }));

	len0_case("response-outside-ram",
		  CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			{ T, 1, end + 0x100000, 16, F_W, 0 }));

	if (below >= 4096) {
		len0_case("header-below-ram",
			  CHAIN({ T, 0, below - 4096, 48, F_N, 1 },
				{ T, 1, g(RESP), 16, F_W, 0 }));
		len0_case("header-straddles-start-of-ram",
			  CHAIN({ T, 0, below - 16, 48, F_N, 1 },
				{ T, 1, g(RESP), 16, F_W, 0 }));
	}
	if (has_hole) {
		len0_case("header-in-the-hole-between-regions",
			  CHAIN({ T, 0, hole + 4096, 48, F_N, 1 },
				{ T, 1, g(RESP), 16, F_W, 0 }));
		len0_case("header-straddles-the-hole",
			  CHAIN({ T, 0, hole - 16, 48, F_N, 1 },
				{ T, 1, g(RESP), 16, F_W, 0 }));
	}

	hdr(TMEM_OP_PUT_PAGE, 0, oid, 1);
	len0_case("put-data-straddles-end-of-ram",
		  CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			{ T, 1, end - 100, 4096, F_N, 2 },
			{ T, 2, g(RESP), 16, F_W, 0 }));
	{
		/* nothing was stored */
		uint8_t page[4096];
		ncases++;
		struct res m = req_sync(&D, 1 % D.nq, TMEM_OP_GET_PAGE, 0, PP, oid, 1, NULL, 0, page, 4096);
		if (m.status != TMEM_S_MISS)
			fail("refused-put-stores-nothing", "GET after the refused PUT: status %d len %u, expected MISS", (int)m.status, m.len);
		else
			json_out("PASS refused-put-stores-nothing: GET misses");
	}

	hdr(TMEM_OP_FLUSH_PAGE, 0, oid, 0);
	len0_case("range-wraps-around-2^64",
		  CHAIN({ T, 0, 0xfffffffffffff000ull, 0x2000, F_N, 1 },
			{ T, 1, g(RESP), 16, F_W, 0 }));

	len0_case("response-range-wraps",
		  CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			{ T, 1, 0xfffffffffffffff8ull, 16, F_W, 0 }));

	{
		/* a GET whose data area is outside RAM must not remove the page (EXCLUSIVE) */
		uint8_t page[4096] __attribute__((aligned(8)));
		fill_page(page, PP, oid, 2, 77);
		req_sync(&D, 0, TMEM_OP_PUT_PAGE, 0, PP, oid, 2, page, 4096, NULL, 0);
		hdr(TMEM_OP_GET_PAGE, TMEM_REQF_EXCLUSIVE, oid, 2);
		len0_case("get-data-outside-ram",
			  CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
				{ T, 1, end - 2048, 4096, F_N | F_W, 2 },
				{ T, 2, g(RESP), 16, F_W, 0 }));
		expect_page("refused-exclusive-get-keeps-page", oid, 2, 77, ": the page is still there");
	}

	/* ---- chain structure ---- */
	hdr(TMEM_OP_FLUSH_PAGE, 0, oid, 0);
	len0_case("descriptor-loop",
		  CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			{ T, 1, g(RESP), 16, F_W | F_N, 0 }));

	len0_case("descriptor-self-loop",
		  CHAIN({ T, 0, g(HDR), 48, F_N, 0 }));

	len0_case("descriptor-loop-further-down",
		  CHAIN({ T, 0, g(HDR), 16, F_N, 1 },
			{ T, 1, g(HDR) + 16, 16, F_N, 2 },
			{ T, 2, g(HDR) + 32, 16, F_N, 1 }));

	len0_case("next-index-beyond-queue-size",
		  CHAIN({ T, 0, g(HDR), 48, F_N, N }));

	len0_case("readable-after-writable",
		  CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			{ T, 1, g(RESP), 16, F_W | F_N, 2 },
			{ T, 2, g(DATA), 16, 0, 0 }));

	len0_case("no-writable-descriptor",
		  CHAIN({ T, 0, g(HDR), 48, 0, 0 }));

	len0_case("response-buffer-15-bytes",
		  CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			{ T, 1, g(RESP), 15, F_W, 0 }));

	len0_case("response-buffer-8+7-bytes",
		  CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			{ T, 1, g(RESP), 8, F_W | F_N, 2 },
			{ T, 2, g(RESP) + 8, 7, F_W, 0 }));

	len0_case("writable-zero-length-only",
		  CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			{ T, 1, g(RESP), 0, F_W, 0 }));

	/* ---- indirect tables ---- */
	if (D.features & (1ull << VIRTIO_RING_F_INDIRECT_DESC)) {
		prefill();
		for (int i = 0; i <= N; i++) /* N + 1 entries: 48 one-byte-or-empty readable pieces, then the response */
			dsc(I, i, g(HDR) + (i < 48 ? (uint64_t)i : 48), i < 48 ? 1 : 0, F_N, (uint16_t)(i + 1));
		dsc(I, N, g(RESP), 16, F_W, 0);
		dsc(T, 0, g(TAB), (uint32_t)(N + 1) * 16, F_I, 0);
		expect_len0("indirect-chain-longer-than-queue-size");

		len0_case("indirect-loop",
			  CHAIN({ I, 0, g(HDR), 48, F_N, 1 },
				{ I, 1, g(RESP), 16, F_W | F_N, 0 },
				{ T, 0, g(TAB), 32, F_I, 0 }));

		len0_case("indirect-next-beyond-table",
			  CHAIN({ I, 0, g(HDR), 48, F_N, 5 },
				{ I, 1, g(RESP), 16, F_W, 0 },
				{ T, 0, g(TAB), 32, F_I, 0 }));

		len0_case("nested-indirect",
			  CHAIN({ I2, 0, g(HDR), 48, F_N, 1 },
				{ I2, 1, g(RESP), 16, F_W, 0 },
				{ I, 0, g(TAB2), 32, F_I, 0 },
				{ T, 0, g(TAB), 16, F_I, 0 }));

		len0_case("indirect-descriptor-inside-a-table-chain",
			  CHAIN({ I, 0, g(HDR), 48, F_N, 1 },
				{ I, 1, g(TAB2), 32, F_I, 0 },
				{ T, 0, g(TAB), 32, F_I, 0 }));

		len0_case("empty-indirect-table",
			  CHAIN({ T, 0, g(TAB), 0, F_I, 0 }));

		len0_case("indirect-length-not-multiple-of-16",
			  CHAIN({ I, 0, g(HDR), 48, F_N, 1 },
				{ I, 1, g(RESP), 16, F_W, 0 },
				{ T, 0, g(TAB), 40, F_I, 0 }));

		len0_case("indirect-table-outside-ram",
			  CHAIN({ T, 0, end + 4096, 32, F_I, 0 }));

		len0_case("indirect-table-wraps",
			  CHAIN({ T, 0, 0xfffffffffffffff0ull, 32, F_I, 0 }));

		/* An indirect descriptor after direct ones: virtio does not forbid it (rust-vmm and QEMU
		 * follow it); the device may refuse the chain or serve it, but must answer correctly. */
		prefill();
		hdr(TMEM_OP_FLUSH_PAGE, 0, oid, 0);
		dsc(I, 0, g(RESP), 16, F_W, 0);
		dsc(T, 0, g(HDR), 48, F_N, 1);
		dsc(T, 1, g(TAB), 16, F_I, 0);
		{
			ncases++;
			uint32_t len = raw_sync(&D, 0, 0, "indirect-after-a-direct-descriptor");
			struct tmem_resp rr;
			memcpy(&rr, RESP, 16);
			if (len == 0 ? !untouched() : (len != 16 || (int32_t)rr.status != TMEM_S_OK))
				fail("indirect-after-a-direct-descriptor", "used len %u status %d: expected refused (len 0, nothing written) or served (OK, 16)",
				     len, (int)(int32_t)rr.status);
			else if (still_serving("indirect-after-a-direct-descriptor"))
				json_out("PASS indirect-after-a-direct-descriptor: %s", len ? "served (OK, 16)" : "refused (len 0)");
		}

		/* a valid table: the head plus N - 1 entries is N descriptors, the queue size */
		prefill();
		hdr(TMEM_OP_FLUSH_PAGE, 0, oid, 0);
		for (int i = 0; i < N - 1; i++)
			dsc(I, i, g(HDR) + (i < 48 ? (uint64_t)i : 48), i < 48 ? 1 : 0, F_N, (uint16_t)(i + 1));
		dsc(I, N - 2, g(RESP), 16, F_W, 0);
		dsc(T, 0, g(TAB), (uint32_t)(N - 1) * 16, F_I, 0);
		expect_status("indirect-table-of-queue-size-minus-1 (valid)", TMEM_S_OK, 16, RESP);
	} else {
		json_out("PASS indirect: INDIRECT_DESC not negotiated (run with --indirect for the indirect cases)");
	}

	/* ---- answered: wrong lengths get INVALID, odd splits are valid ---- */
	hdr(TMEM_OP_PUT_PAGE, 0, oid, 3);
	status_case("put-data-4000-bytes", TMEM_S_INVALID, RESP,
		    CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			  { T, 1, g(DATA), 4000, F_N, 2 },
			  { T, 2, g(RESP), 16, F_W, 0 }));

	hdr(TMEM_OP_GET_PAGE, 0, oid, 2);
	status_case("get-data-4000-bytes", TMEM_S_INVALID, RESP,
		    CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			  { T, 1, g(DATA), 4000, F_N | F_W, 2 },
			  { T, 2, g(RESP), 16, F_W, 0 }));

	status_case("get-without-data-area", TMEM_S_INVALID, RESP,
		    CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			  { T, 1, g(RESP), 16, F_W, 0 }));

	hdr(TMEM_OP_FLUSH_PAGE, 0, oid, 0);
	status_case("header-32-bytes", TMEM_S_INVALID, RESP,
		    CHAIN({ T, 0, g(HDR), 32, F_N, 1 },
			  { T, 1, g(RESP), 16, F_W, 0 }));

	status_case("flush-with-32-writable-bytes", TMEM_S_INVALID, RESP + 16,
		    CHAIN({ T, 0, g(HDR), 48, F_N, 1 },
			  { T, 1, g(RESP), 32, F_W, 0 }));

	{
		/* PUT with every part split, zero-length descriptors between */
		uint64_t oid2[3] = { 0x5b17, 0, 0 };
		uint8_t *pg = DATA;
		prefill();
		fill_page(pg, PP, oid2, 9, 4242);
		put_hdr(HDR, TMEM_OP_PUT_PAGE, 0, PP, oid2, 9, 1);
		dsc(T, 0, g(HDR), 20, F_N, 1);
		dsc(T, 1, g(HDR) + 20, 0, F_N, 2);
		dsc(T, 2, g(HDR) + 20, 28, F_N, 3);
		dsc(T, 3, g(pg), 1000, F_N, 4);
		dsc(T, 4, g(pg) + 1000, 3096, F_N, 5);
		dsc(T, 5, g(RESP), 8, F_W | F_N, 6);
		dsc(T, 6, g(RESP) + 8, 0, F_W | F_N, 7);
		dsc(T, 7, g(RESP) + 8, 8, F_W, 0);
		expect_status("put-split-over-8-descriptors (valid)", TMEM_S_OK, 16, RESP);
		/* header and data in one readable descriptor, GET data + response in one 4112-byte writable one */
		uint8_t *buf = ram_alloc(&D, 8192 + 64, 4096);
		put_hdr(buf, TMEM_OP_GET_PAGE, 0, PP, oid2, 9, 2);
		memset(buf + 4096, 0xaa, 4096 + 16);
		dsc(T, 0, g(buf), 48, F_N, 1);
		dsc(T, 1, g(buf) + 4096, 4096 + 16, F_W, 0);
		ncases++;
		uint32_t len = raw_sync(&D, 0, 0, "get-into-one-4112-byte-descriptor");
		struct tmem_resp rr;
		memcpy(&rr, buf + 4096 + 4096, 16);
		if (len != 4112 || (int32_t)rr.status != TMEM_S_OK || check_page(buf + 4096, PP, oid2, 9, 4242) >= 0)
			fail("get-into-one-4112-byte-descriptor (valid)", "used len %u status %d (or wrong data), expected 4112 OK", len,
			     (int)(int32_t)rr.status);
		else
			json_out("PASS get-into-one-4112-byte-descriptor (valid): the response is the last 16 writable bytes");
		/* the response straddling two descriptors: data 4100 + 12 */
		memset(buf + 4096, 0xaa, 4096 + 16);
		dsc(T, 0, g(buf), 48, F_N, 1);
		dsc(T, 1, g(buf) + 4096, 4100, F_W | F_N, 2);
		dsc(T, 2, g(buf) + 4096 + 4100, 12, F_W, 0);
		ncases++;
		len = raw_sync(&D, 0, 0, "get-response-split-4+12");
		memcpy(&rr, buf + 4096 + 4096, 16);
		if (len != 4112 || (int32_t)rr.status != TMEM_S_OK || check_page(buf + 4096, PP, oid2, 9, 4242) >= 0)
			fail("get-response-straddles-descriptors (valid)", "used len %u status %d (or wrong data), expected 4112 OK", len,
			     (int)(int32_t)rr.status);
		else
			json_out("PASS get-response-straddles-descriptors (valid): data 4100 + 12 bytes");
		/* header + PUT data in one 4144-byte readable descriptor */
		uint8_t *one = ram_alloc(&D, 48 + 4096, 64);
		put_hdr(one, TMEM_OP_PUT_PAGE, 0, PP, oid2, 10, 3);
		fill_page(DATA, PP, oid2, 10, 4343);
		memcpy(one + 48, DATA, 4096);
		status_case("put-header-and-data-in-one-descriptor (valid)", TMEM_S_OK, RESP,
			    CHAIN({ T, 0, g(one), 48 + 4096, F_N, 1 },
				  { T, 1, g(RESP), 16, F_W, 0 }));
		expect_page("put-header-and-data-in-one-descriptor (read back)", oid2, 10, 4343, "");
	}
	if (!D.indirect) {
		/* a direct chain of exactly N descriptors is valid */
		prefill();
		hdr(TMEM_OP_FLUSH_PAGE, 0, oid, 0);
		for (int i = 0; i < N; i++)
			dsc(T, i, g(HDR) + (i < 48 ? (uint64_t)i : 48), i < 48 ? 1 : 0, F_N, (uint16_t)(i + 1));
		dsc(T, N - 1, g(RESP), 16, F_W, 0);
		expect_status("direct-chain-of-exactly-queue-size (valid)", TMEM_S_OK, 16, RESP);
	}
	r = req_sync(&D, 0, TMEM_OP_RESET, 0, 0, NULL, 0, NULL, 0, NULL, 0);
	dev_close(&D);
	json_out("{\"mode\":\"malformed\",\"ok\":%s,\"cases\":%d,\"fail\":%d}", nfail ? "false" : "true", ncases, nfail);
	return nfail ? EXIT_MISMATCH : 0;
}
