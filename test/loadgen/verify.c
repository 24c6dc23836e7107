/* SPDX-License-Identifier: GPL-2.0 */
/*
 * verify: mixed PUT/GET/FLUSH_PAGE/FLUSH_OBJECT over a persistent and an
 * ephemeral private pool, D requests in flight per queue, every result
 * checked against a model kept in submission (= ring) order:
 * - persistent: a GET returns exactly the last PUT (unless that PUT failed,
 *   the page was flushed or got exclusively);
 * - ephemeral: a GET misses or returns exactly the last PUT; private
 *   ephemeral GETs are exclusive, so the next GET misses (get-get);
 * - MISS and errors leave the data area untouched and have used len 16.
 */
#include "lg.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

enum { K_PERS = 0, K_EPH = 1 };
enum { V_PUT = 1, V_GET, V_FLUSH, V_FLUSHOBJ };

struct hstate {
	uint32_t cur;    /* version the model expects present, 0 = absent */
	uint32_t failed; /* the latest version whose PUT failed */
};

struct counts {
	uint64_t ops, puts, put_ok, put_nospace, gets, get_hit, get_miss, eph_hit, eph_miss, excl_gets, flushes, flush_objs,
	    flushed_pages, verified_pages, sweep_gets, kicks;
	uint64_t checksum;
};

struct qctx {
	struct lgdev *d;
	struct vq *q;
	int qi;
	uint64_t rng;
	struct hstate *st;
	uint64_t todo;      /* random ops still to submit */
	uint32_t sweep_pos; /* final persistent sweep */
	uint32_t ver;
	uint64_t last_progress;
	uint64_t pers_fail;
	struct counts c;
	int done;
};

static uint32_t pools[2];
static uint32_t nobj, nidx, nh; /* per kind */

static void oid_of(int qi, uint32_t o, uint64_t oid[3])
{
	oid[0] = ((uint64_t)(uint32_t)qi << 32) | o;
	oid[1] = G.seed;
	oid[2] = 0xfedcba9876543210ull;
}

static void h_split(uint32_t h, int *kind, uint32_t *o, uint32_t *i)
{
	*kind = (int)(h / nh);
	uint32_t r = h % nh;
	*o = r / nidx;
	*i = r % nidx;
}

#define POISON 0x5a5a5a5a5a5a5a5aull

/* Chooses and posts one request; returns 0 when this queue has nothing left. */
static int submit_one(struct qctx *x)
{
	struct vq *q = x->q;
	struct lgdev *d = x->d;
	uint8_t op, kind, excl = 0;
	uint32_t h;
	if (x->todo) {
		x->todo--;
		uint64_t r = rng_next(&x->rng);
		uint32_t pct = (uint32_t)(r % 100);
		kind = (uint8_t)((r >> 8) & 1);
		uint32_t o = (uint32_t)((r >> 16) % nobj), i = (uint32_t)((r >> 40) % nidx);
		h = kind * nh + o * nidx + i;
		if (pct < 45)
			op = V_PUT;
		else if (pct < 88) {
			op = V_GET;
			excl = kind == K_PERS && (r >> 9) % 8 == 0;
		} else if (pct < 98)
			op = V_FLUSH;
		else
			op = V_FLUSHOBJ;
	} else {
		/* final sweep: every persistent page the model holds must still be there */
		while (x->sweep_pos < nh && (x->st[x->sweep_pos].cur == 0 || x->st[x->sweep_pos].cur == x->st[x->sweep_pos].failed))
			x->sweep_pos++;
		if (x->sweep_pos >= nh)
			return 0;
		h = x->sweep_pos++;
		kind = K_PERS;
		op = V_GET;
		x->c.sweep_gets++;
	}
	int k;
	uint32_t o, i;
	h_split(h, &k, &o, &i);
	uint64_t oid[3];
	oid_of(x->qi, o, oid);
	uint16_t sn = (uint16_t)((q->fifo_head + q->fifo_count) % q->nslots);
	struct slot *s = &q->slots[sn];
	struct hstate *hs = &x->st[h];
	s->op = op;
	s->kind = kind;
	s->excl = excl;
	s->h = h;
	s->expect = 0;
	struct seg segs[3];
	int n = 0;
	uint32_t pool = pools[kind];
	segs[n++] = (struct seg){ gpa_of(d, s->hdr), TMEM_REQ_SIZE, 0 };
	switch (op) {
	case V_PUT:
		s->ver = ++x->ver;
		hs->cur = s->ver;
		fill_page(s->page, pool, oid, i, s->ver);
		put_hdr(s->hdr, TMEM_OP_PUT_PAGE, 0, pool, oid, i, s->ver);
		segs[n++] = (struct seg){ gpa_of(d, s->page), TMEM_PAGE_SIZE, 0 };
		break;
	case V_GET: {
		s->ver = hs->cur;
		if (kind == K_EPH || excl)
			hs->cur = 0;
		uint64_t *w = (uint64_t *)(void *)s->page;
		w[0] = w[1] = w[2] = w[255] = w[511] = POISON;
		put_hdr(s->hdr, TMEM_OP_GET_PAGE, excl ? TMEM_REQF_EXCLUSIVE : 0, pool, oid, i, s->ver);
		segs[n++] = (struct seg){ gpa_of(d, s->page), TMEM_PAGE_SIZE, 1 };
		break;
	}
	case V_FLUSH:
		hs->cur = 0;
		put_hdr(s->hdr, TMEM_OP_FLUSH_PAGE, 0, pool, oid, i, 0);
		break;
	default: {
		uint32_t base = kind * nh + o * nidx, cnt = 0;
		for (uint32_t j = 0; j < nidx; j++) {
			struct hstate *e = &x->st[base + j];
			if (e->cur && e->cur != e->failed)
				cnt++;
			e->cur = 0;
		}
		s->expect = cnt;
		put_hdr(s->hdr, TMEM_OP_FLUSH_OBJECT, 0, pool, oid, 0, 0);
		break;
	}
	}
	memset(s->resp, 0xee, TMEM_RESP_SIZE);
	segs[n++] = (struct seg){ gpa_of(d, s->resp), TMEM_RESP_SIZE, 1 };
	vq_post_chain(d, q, s->head, d->indirect ? s->itab : NULL, segs, n);
	vq_publish(q, s->head);
	q->fifo_count++;
	return 1;
}

static const char *opname(int op)
{
	return op == V_PUT ? "PUT_PAGE" : op == V_GET ? "GET_PAGE" : op == V_FLUSH ? "FLUSH_PAGE" : "FLUSH_OBJECT";
}

static void complete_one(struct qctx *x, uint32_t id, uint32_t len)
{
	struct vq *q = x->q;
	struct slot *s = &q->slots[q->fifo_head];
	if (id != s->head)
		lg_die(EXIT_MISMATCH, "queue %d: used id %u but the oldest request in flight has head %u (completions out of ring order)", x->qi, id,
		       s->head);
	q->fifo_head = (uint16_t)((q->fifo_head + 1) % q->nslots);
	q->fifo_count--;
	x->c.ops++;
	struct tmem_resp r;
	memcpy(&r, s->resp, sizeof(r));
	int32_t st = (int32_t)r.status;
	int k;
	uint32_t o, i;
	h_split(s->h, &k, &o, &i);
	const char *kn = s->kind == K_PERS ? "persistent" : "ephemeral";
#define BAD(...) lg_die(EXIT_MISMATCH, __VA_ARGS__)
	if (len == 0)
		BAD("queue %d: %s %s obj %u idx %u: completed with used len 0 (treated as unanswerable)", x->qi, opname(s->op), kn, o, i);
	if (r.reserved != 0)
		BAD("queue %d: %s: response reserved field is %u, expected 0", x->qi, opname(s->op), r.reserved);
	struct hstate *hs = &x->st[s->h];
	switch (s->op) {
	case V_PUT:
		x->c.puts++;
		if (st == TMEM_S_OK && len == 16)
			x->c.put_ok++;
		else if (st == TMEM_S_NOSPACE && len == 16) {
			x->c.put_nospace++;
			hs->failed = s->ver;
			if (s->kind == K_PERS)
				x->pers_fail++;
		} else
			BAD("queue %d: PUT_PAGE %s obj %u idx %u v%u: status %d len %u (expected OK or NOSPACE, len 16)", x->qi, kn, o, i, s->ver, st,
			    len);
		break;
	case V_GET: {
		x->c.gets++;
		if (s->excl)
			x->c.excl_gets++;
		int must_miss = s->ver == 0 || hs->failed == s->ver;
		const uint64_t *w = (const uint64_t *)(const void *)s->page;
		if (st == TMEM_S_MISS) {
			if (len != 16)
				BAD("queue %d: GET_PAGE MISS with used len %u, expected 16", x->qi, len);
			if (w[0] != POISON || w[1] != POISON || w[2] != POISON || w[255] != POISON || w[511] != POISON)
				BAD("queue %d: GET_PAGE MISS wrote into the data area", x->qi);
			if (!must_miss && s->kind == K_PERS)
				BAD("queue %d: persistent GET_PAGE obj %u idx %u missed; version %u was PUT successfully and never flushed (persistent guarantee)",
				    x->qi, o, i, s->ver);
			x->c.get_miss++;
			if (s->kind == K_EPH)
				x->c.eph_miss++;
		} else if (st == TMEM_S_OK) {
			if (len != TMEM_PAGE_SIZE + 16)
				BAD("queue %d: GET_PAGE hit with used len %u, expected 4112", x->qi, len);
			if (must_miss)
				BAD("queue %d: %s GET_PAGE obj %u idx %u hit (page says pool<<32|idx=0x%llx oid0=0x%llx v%llu) but must miss (%s)", x->qi, kn, o, i,
				    (unsigned long long)w[0], (unsigned long long)w[1], (unsigned long long)w[2],
				    s->ver == 0 ? "never put, flushed, or got exclusively before" : "its last PUT failed");
			uint64_t oid[3];
			oid_of(x->qi, o, oid);
			int bad = check_page(s->page, pools[s->kind], oid, i, s->ver);
			if (bad >= 0)
				BAD("queue %d: %s GET_PAGE obj %u idx %u: data differs from version %u at byte %d (page holds pool<<32|idx=0x%llx oid0=0x%llx v%llu)",
				    x->qi, kn, o, i, s->ver, bad * 8, (unsigned long long)w[0], (unsigned long long)w[1], (unsigned long long)w[2]);
			x->c.get_hit++;
			x->c.verified_pages++;
			x->c.checksum += mix64(w[3] ^ w[511]);
			if (s->kind == K_EPH)
				x->c.eph_hit++;
		} else
			BAD("queue %d: GET_PAGE %s obj %u idx %u: status %d len %u (expected OK or MISS)", x->qi, kn, o, i, st, len);
		break;
	}
	case V_FLUSH:
		x->c.flushes++;
		if (st != TMEM_S_OK || len != 16)
			BAD("queue %d: FLUSH_PAGE: status %d len %u (expected OK, 16)", x->qi, st, len);
		break;
	default:
		x->c.flush_objs++;
		if (st != TMEM_S_OK || len != 16)
			BAD("queue %d: FLUSH_OBJECT: status %d len %u (expected OK, 16)", x->qi, st, len);
		if (s->kind == K_PERS && !x->pers_fail ? r.value != s->expect : r.value > s->expect)
			BAD("queue %d: FLUSH_OBJECT %s obj %u flushed %llu pages, the model holds %u", x->qi, kn, o, (unsigned long long)r.value, s->expect);
		x->c.flushed_pages += r.value;
		break;
	}
#undef BAD
}

/* One step of one queue: fill up to depth, kick if wanted, reap completions. Returns 1 while busy. */
static int step(struct qctx *x)
{
	struct vq *q = x->q;
	int posted = 0;
	while (!x->done && q->fifo_count < q->nslots) {
		if (!submit_one(x)) {
			x->done = 1;
			break;
		}
		posted++;
	}
	if (posted)
		vq_notify(x->d, q);
	uint32_t id, len;
	int got = 0;
	while (q->fifo_count && vq_poll(q, &id, &len)) {
		complete_one(x, id, len);
		got++;
	}
	if (got) {
		vq_update_used_event(x->d, q);
		x->last_progress = 0;
	}
	return !(x->done && q->fifo_count == 0);
}

static void check_hang(struct qctx *x)
{
	if (!x->q->fifo_count)
		return;
	uint64_t t = now_ns();
	if (!x->last_progress)
		x->last_progress = t;
	else if (t - x->last_progress > (uint64_t)G.timeout_ms * 1000000ull)
		lg_die(EXIT_HANG, "queue %d: %u request(s) in flight, none completed within %d ms (avail idx %u, used idx %u, kicks %llu)", x->qi,
		       x->q->fifo_count, G.timeout_ms, x->q->avail_idx, __atomic_load_n(&x->q->used->idx, __ATOMIC_ACQUIRE),
		       (unsigned long long)x->q->kicks);
}

struct thr {
	struct qctx *ctx;
	int n;
	pthread_t tid;
};

static void *run_thread(void *arg)
{
	struct thr *t = arg;
	uint64_t it = 0;
	int busy = 1;
	while (busy) {
		busy = 0;
		int progress = 0;
		for (int k = 0; k < t->n; k++) {
			uint64_t before = t->ctx[k].c.ops;
			busy |= step(&t->ctx[k]);
			progress |= t->ctx[k].c.ops != before;
		}
		if (++it % 1024 == 0)
			for (int k = 0; k < t->n; k++)
				check_hang(&t->ctx[k]);
		if (!progress)
			sched_yield();
	}
	return NULL;
}

static uint32_t new_pool(struct lgdev *d, uint32_t flags)
{
	struct tmem_new_pool np = { .flags = flags, .page_size = TMEM_PAGE_SIZE };
	struct res r = req_sync(d, 0, TMEM_OP_NEW_POOL, 0, 0, NULL, 0, &np, sizeof(np), NULL, 0);
	if (r.status != TMEM_S_OK || r.len != 16)
		lg_die(EXIT_MISMATCH, "NEW_POOL flags %u: status %d len %u", flags, r.status, r.len);
	return (uint32_t)r.value;
}

int mode_verify(void)
{
	struct lgdev d;
	dev_open(&d, G.queues);
	nobj = (uint32_t)G.objects;
	nidx = (uint32_t)G.indexes;
	nh = nobj * nidx;
	struct res rr = req_sync(&d, 0, TMEM_OP_RESET, 0, 0, NULL, 0, NULL, 0, NULL, 0);
	if (rr.status != TMEM_S_OK)
		lg_die(EXIT_MISMATCH, "RESET: status %d", rr.status);
	pools[K_PERS] = new_pool(&d, TMEM_POOL_PERSIST);
	pools[K_EPH] = new_pool(&d, 0);
	lg_info("verify: %d queue(s), depth %d (slots %d), %llu ops, pools persistent=%u ephemeral=%u, %u handles per pool per queue%s%s%s",
		G.queues, G.depth, d.vq[0].nslots, (unsigned long long)G.ops, pools[0], pools[1], nh, d.indirect ? ", indirect" : "",
		d.event_idx ? ", event_idx" : "", G.two_regions ? ", two regions" : "");
	struct qctx *ctx = calloc((size_t)G.queues, sizeof(*ctx));
	if (!ctx)
		lg_die(EXIT_ERROR, "out of memory");
	for (int qi = 0; qi < G.queues; qi++) {
		struct qctx *x = &ctx[qi];
		x->d = &d;
		x->q = &d.vq[qi];
		x->qi = qi;
		x->rng = mix64(G.seed * 1000003ull + (uint64_t)qi);
		x->st = calloc((size_t)nh * 2, sizeof(*x->st));
		if (!x->st)
			lg_die(EXIT_ERROR, "out of memory");
		x->todo = G.ops / (uint64_t)G.queues + ((uint64_t)qi < G.ops % (uint64_t)G.queues);
	}
	uint64_t t0 = now_ns();
	int nt = G.one_thread ? 1 : G.queues;
	struct thr *th = calloc((size_t)nt, sizeof(*th));
	if (!th)
		lg_die(EXIT_ERROR, "out of memory");
	for (int t = 0; t < nt; t++) {
		th[t].ctx = G.one_thread ? ctx : &ctx[t];
		th[t].n = G.one_thread ? G.queues : 1;
		if (pthread_create(&th[t].tid, NULL, run_thread, &th[t]))
			lg_die(EXIT_ERROR, "pthread_create failed");
	}
	for (int t = 0; t < nt; t++)
		pthread_join(th[t].tid, NULL);
	double secs = (double)(now_ns() - t0) / 1e9;
	struct counts c = { 0 };
	for (int qi = 0; qi < G.queues; qi++) {
		struct counts *y = &ctx[qi].c;
		c.ops += y->ops;
		c.puts += y->puts;
		c.put_ok += y->put_ok;
		c.put_nospace += y->put_nospace;
		c.gets += y->gets;
		c.get_hit += y->get_hit;
		c.get_miss += y->get_miss;
		c.eph_hit += y->eph_hit;
		c.eph_miss += y->eph_miss;
		c.excl_gets += y->excl_gets;
		c.flushes += y->flushes;
		c.flush_objs += y->flush_objs;
		c.flushed_pages += y->flushed_pages;
		c.verified_pages += y->verified_pages;
		c.sweep_gets += y->sweep_gets;
		c.checksum ^= y->checksum;
		c.kicks += d.vq[qi].kicks;
		lg_info("queue %d: %llu ops (%llu puts, %llu gets: %llu hits verified, %llu misses), %llu kicks", qi, (unsigned long long)y->ops,
			(unsigned long long)y->puts, (unsigned long long)y->gets, (unsigned long long)y->get_hit, (unsigned long long)y->get_miss,
			(unsigned long long)d.vq[qi].kicks);
	}
	/* the pools go away with RESET; then a clean close */
	rr = req_sync(&d, 0, TMEM_OP_RESET, 0, 0, NULL, 0, NULL, 0, NULL, 0);
	if (rr.status != TMEM_S_OK || rr.value != 2)
		lg_die(EXIT_MISMATCH, "final RESET: status %d value %llu (expected OK, 2 pools destroyed)", rr.status, (unsigned long long)rr.value);
	int ind = d.indirect;
	dev_close(&d);
	lg_info("verify: PASS, %llu ops in %.2f s (%.0f ops/s), %llu pages verified", (unsigned long long)c.ops, secs, (double)c.ops / secs,
		(unsigned long long)c.verified_pages);
	json_out("{\"mode\":\"verify\",\"ok\":true,\"queues\":%d,\"depth\":%d,\"indirect\":%s,\"eventIdx\":%s,\"twoRegions\":%s,\"ops\":%llu,"
		 "\"puts\":%llu,\"putOk\":%llu,\"putNospace\":%llu,\"gets\":%llu,\"getHit\":%llu,\"getMiss\":%llu,\"ephemeralHit\":%llu,"
		 "\"ephemeralMiss\":%llu,\"exclusiveGets\":%llu,\"flushPage\":%llu,\"flushObject\":%llu,\"flushedPages\":%llu,"
		 "\"verifiedPages\":%llu,\"sweepGets\":%llu,\"kicks\":%llu,\"checksum\":\"%016llx\",\"seconds\":%.3f,\"opsPerSec\":%.0f}",
		 G.queues, G.depth, ind ? "true" : "false", G.event_idx ? "true" : "false", G.two_regions ? "true" : "false",
		 (unsigned long long)c.ops, (unsigned long long)c.puts, (unsigned long long)c.put_ok, (unsigned long long)c.put_nospace,
		 (unsigned long long)c.gets, (unsigned long long)c.get_hit, (unsigned long long)c.get_miss, (unsigned long long)c.eph_hit,
		 (unsigned long long)c.eph_miss, (unsigned long long)c.excl_gets, (unsigned long long)c.flushes, (unsigned long long)c.flush_objs,
		 (unsigned long long)c.flushed_pages, (unsigned long long)c.verified_pages, (unsigned long long)c.sweep_gets,
		 (unsigned long long)c.kicks, (unsigned long long)c.checksum, secs, (double)c.ops / secs);
	for (int qi = 0; qi < G.queues; qi++)
		free(ctx[qi].st);
	free(ctx);
	free(th);
	return 0;
}
