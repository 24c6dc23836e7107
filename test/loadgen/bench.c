/* SPDX-License-Identifier: GPL-2.0 */
/*
 * bench: PUT then GET throughput per queue and with all queues (depth D),
 * per-request latency at depth 1 (clock_gettime around each request), and
 * the same-run memcpy baseline: 4 KiB pages copied between two buffers as
 * large as the store's working set.
 */
#include "lg.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

enum { PH_PUT = 0, PH_GET = 1 };

struct bq {
	struct lgdev *d;
	struct vq *q;
	int qi;
	uint32_t pool;
	uint64_t run;
	uint64_t n, next, done;
	int phase;
	uint64_t last_progress;
	uint64_t ns[2];
};

struct bthr {
	struct bq *qs;
	int n;
	pthread_t tid;
};

static pthread_barrier_t bar;

static void stamp(uint8_t *p, uint32_t pool, uint64_t oid0, uint32_t idx, uint64_t run)
{
	uint64_t *w = (uint64_t *)(void *)p;
	w[0] = ((uint64_t)pool << 32) | idx;
	w[1] = oid0;
	w[2] = run;
}

static void post(struct bq *b)
{
	struct vq *q = b->q;
	struct lgdev *d = b->d;
	uint16_t sn = (uint16_t)((q->fifo_head + q->fifo_count) % q->nslots);
	struct slot *s = &q->slots[sn];
	uint32_t idx = (uint32_t)b->next++;
	uint64_t oid[3] = { (uint64_t)b->qi, b->run, 0 };
	struct seg segs[3];
	s->h = idx;
	segs[0] = (struct seg){ gpa_of(d, s->hdr), TMEM_REQ_SIZE, 0 };
	if (b->phase == PH_PUT) {
		stamp(s->page, b->pool, oid[0], idx, b->run);
		put_hdr(s->hdr, TMEM_OP_PUT_PAGE, 0, b->pool, oid, idx, idx);
		segs[1] = (struct seg){ gpa_of(d, s->page), TMEM_PAGE_SIZE, 0 };
	} else {
		put_hdr(s->hdr, TMEM_OP_GET_PAGE, 0, b->pool, oid, idx, idx);
		segs[1] = (struct seg){ gpa_of(d, s->page), TMEM_PAGE_SIZE, 1 };
	}
	segs[2] = (struct seg){ gpa_of(d, s->resp), TMEM_RESP_SIZE, 1 };
	vq_post_chain(d, q, s->head, d->indirect ? s->itab : NULL, segs, 3);
	vq_publish(q, s->head);
	q->fifo_count++;
}

static void reap(struct bq *b, uint32_t id, uint32_t len)
{
	struct vq *q = b->q;
	struct slot *s = &q->slots[q->fifo_head];
	if (id != s->head)
		lg_die(EXIT_MISMATCH, "queue %d: used id %u, expected %u (out of ring order)", b->qi, id, s->head);
	q->fifo_head = (uint16_t)((q->fifo_head + 1) % q->nslots);
	q->fifo_count--;
	b->done++;
	struct tmem_resp r;
	memcpy(&r, s->resp, sizeof(r));
	if (b->phase == PH_PUT) {
		if ((int32_t)r.status != TMEM_S_OK || len != 16)
			lg_die(EXIT_MISMATCH, "bench queue %d: PUT status %d len %u (raise the daemon's maxmem/capacity?)", b->qi, (int32_t)r.status, len);
	} else {
		const uint64_t *w = (const uint64_t *)(const void *)s->page;
		if ((int32_t)r.status != TMEM_S_OK || len != 4112)
			lg_die(EXIT_MISMATCH, "bench queue %d: GET of a persistent page: status %d len %u", b->qi, (int32_t)r.status, len);
		if (w[0] != (((uint64_t)b->pool << 32) | s->h) || w[1] != (uint64_t)b->qi || w[2] != b->run)
			lg_die(EXIT_MISMATCH, "bench queue %d: GET index %u returned another page", b->qi, s->h);
	}
}

static void run_phase(struct bq *bs, int n)
{
	int busy = 1;
	uint64_t it = 0, idle = 0;
	while (busy) {
		busy = 0;
		int progress = 0;
		for (int k = 0; k < n; k++) {
			struct bq *b = &bs[k];
			struct vq *q = b->q;
			int posted = 0;
			while (b->next < b->n && q->fifo_count < q->nslots) {
				post(b);
				posted = 1;
			}
			if (posted)
				vq_notify(b->d, q);
			uint32_t id, len;
			int got = 0;
			while (q->fifo_count && vq_poll(q, &id, &len)) {
				reap(b, id, len);
				got = 1;
			}
			if (got) {
				vq_update_used_event(b->d, q);
				b->last_progress = 0;
				progress = 1;
			}
			if (b->done < b->n)
				busy = 1;
		}
		if (!progress && (++it & 1023) == 0) {
			uint64_t t = now_ns();
			for (int k = 0; k < n; k++) {
				struct bq *b = &bs[k];
				if (!b->q->fifo_count)
					continue;
				if (!b->last_progress)
					b->last_progress = t;
				else if (t - b->last_progress > (uint64_t)G.timeout_ms * 1000000ull)
					lg_die(EXIT_HANG, "bench queue %d: %u request(s) in flight, none completed within %d ms", b->qi, b->q->fifo_count,
					       G.timeout_ms);
			}
		}
		/*
		 * Nothing completed: spin briefly, then yield now and then. When the
		 * daemon's worker shares this CPU (more spinning threads than CPUs),
		 * a thread that never yields keeps it off the CPU for a whole time
		 * slice per batch; on a CPU of its own sched_yield returns at once.
		 */
		idle = progress ? 0 : idle + 1;
		if (idle > 4096 && (idle & 255) == 0)
			sched_yield();
		else if (!progress && it > 256)
			cpu_relax();
	}
}

static void *bench_thread(void *arg)
{
	struct bthr *t = arg;
	for (int ph = 0; ph < 2; ph++) {
		for (int k = 0; k < t->n; k++) {
			t->qs[k].phase = ph;
			t->qs[k].next = t->qs[k].done = 0;
		}
		pthread_barrier_wait(&bar);
		uint64_t t0 = now_ns();
		run_phase(t->qs, t->n);
		uint64_t t1 = now_ns();
		for (int k = 0; k < t->n; k++)
			t->qs[k].ns[ph] = t1 - t0;
		pthread_barrier_wait(&bar);
	}
	return NULL;
}

static uint32_t new_pool(struct lgdev *d)
{
	struct tmem_new_pool np = { .flags = TMEM_POOL_PERSIST, .page_size = TMEM_PAGE_SIZE };
	struct res r = req_sync(d, 0, TMEM_OP_NEW_POOL, 0, 0, NULL, 0, &np, sizeof(np), NULL, 0);
	if (r.status != TMEM_S_OK)
		lg_die(EXIT_MISMATCH, "NEW_POOL: status %d", r.status);
	return (uint32_t)r.value;
}

static void destroy_pool(struct lgdev *d, uint32_t p)
{
	struct res r = req_sync(d, 0, TMEM_OP_DESTROY_POOL, 0, p, NULL, 0, NULL, 0, NULL, 0);
	if (r.status != TMEM_S_OK)
		lg_die(EXIT_MISMATCH, "DESTROY_POOL: status %d", r.status);
}

struct tput {
	double put, get, all; /* ops/s */
};

/* Throughput of queues [q0, q0+nq): pages split between them. */
static void throughput(struct lgdev *d, int q0, int nq, uint64_t pages, uint64_t run, struct tput *per, struct tput *total)
{
	uint32_t pool = new_pool(d);
	struct bq *bs = calloc((size_t)nq, sizeof(*bs));
	int nt = G.one_thread ? 1 : nq;
	struct bthr *th = calloc((size_t)nt, sizeof(*th));
	if (!bs || !th)
		lg_die(EXIT_ERROR, "out of memory");
	for (int k = 0; k < nq; k++) {
		bs[k] = (struct bq){ .d = d, .q = &d->vq[q0 + k], .qi = q0 + k, .pool = pool, .run = run, .n = pages / (uint64_t)nq };
		/* fresh random content in the slot pages; only the stamp changes per request */
		for (int s = 0; s < bs[k].q->nslots; s++) {
			uint64_t o[3] = { 1, 2, 3 };
			fill_page(bs[k].q->slots[s].page, 0, o, (uint32_t)s, run);
		}
	}
	if (pthread_barrier_init(&bar, NULL, (unsigned)nt + 1))
		lg_die(EXIT_ERROR, "pthread_barrier_init failed");
	for (int t = 0; t < nt; t++) {
		th[t].qs = G.one_thread ? bs : &bs[t];
		th[t].n = G.one_thread ? nq : 1;
		if (pthread_create(&th[t].tid, NULL, bench_thread, &th[t]))
			lg_die(EXIT_ERROR, "pthread_create failed");
	}
	uint64_t wall[2];
	for (int ph = 0; ph < 2; ph++) {
		pthread_barrier_wait(&bar);
		uint64_t t0 = now_ns();
		pthread_barrier_wait(&bar);
		wall[ph] = now_ns() - t0;
	}
	for (int t = 0; t < nt; t++)
		pthread_join(th[t].tid, NULL);
	pthread_barrier_destroy(&bar);
	uint64_t ops = 0;
	for (int k = 0; k < nq; k++) {
		struct bq *b = &bs[k];
		ops += b->n;
		if (per) {
			per[k].put = (double)b->n / ((double)b->ns[0] / 1e9);
			per[k].get = (double)b->n / ((double)b->ns[1] / 1e9);
			per[k].all = (double)(2 * b->n) / ((double)(b->ns[0] + b->ns[1]) / 1e9);
		}
	}
	total->put = (double)ops / ((double)wall[0] / 1e9);
	total->get = (double)ops / ((double)wall[1] / 1e9);
	total->all = (double)(2 * ops) / ((double)(wall[0] + wall[1]) / 1e9);
	destroy_pool(d, pool);
	free(bs);
	free(th);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, uint64_t n, double p)
{
	uint64_t i = (uint64_t)(p * (double)(n - 1) + 0.5);
	return (double)v[i] / 1000.0;
}

struct lat {
	double put50, put99, get50, get99, p50, p90, p99, max;
};

static void latency(struct lgdev *d, uint64_t n, uint64_t run, struct lat *out)
{
	uint32_t pool = new_pool(d);
	struct vq *q = &d->vq[0];
	uint64_t *ns = calloc(2 * n, sizeof(uint64_t)), *all = calloc(2 * n, sizeof(uint64_t));
	if (!ns || !all)
		lg_die(EXIT_ERROR, "out of memory");
	struct bq b = { .d = d, .q = q, .qi = 0, .pool = pool, .run = run, .n = n };
	for (int ph = 0; ph < 2; ph++) {
		b.phase = ph;
		b.next = b.done = 0;
		for (uint64_t i = 0; i < n; i++) {
			uint32_t id, len;
			uint64_t t0 = now_ns();
			post(&b);
			vq_notify(d, q);
			vq_wait(d, q, &id, &len, "a timed request");
			uint64_t t1 = now_ns();
			reap(&b, id, len);
			ns[(uint64_t)ph * n + i] = t1 - t0;
		}
	}
	memcpy(all, ns, 2 * n * sizeof(uint64_t));
	qsort(ns, n, sizeof(uint64_t), cmp_u64);
	qsort(ns + n, n, sizeof(uint64_t), cmp_u64);
	qsort(all, 2 * n, sizeof(uint64_t), cmp_u64);
	out->put50 = pct(ns, n, 0.50);
	out->put99 = pct(ns, n, 0.99);
	out->get50 = pct(ns + n, n, 0.50);
	out->get99 = pct(ns + n, n, 0.99);
	out->p50 = pct(all, 2 * n, 0.50);
	out->p90 = pct(all, 2 * n, 0.90);
	out->p99 = pct(all, 2 * n, 0.99);
	out->max = (double)all[2 * n - 1] / 1000.0;
	free(ns);
	free(all);
	destroy_pool(d, pool);
}

int mode_bench(void)
{
	struct lgdev d;
	dev_open(&d, G.queues);
	struct res r = req_sync(&d, 0, TMEM_OP_RESET, 0, 0, NULL, 0, NULL, 0, NULL, 0);
	if (r.status != TMEM_S_OK)
		lg_die(EXIT_MISMATCH, "RESET: status %d", r.status);
	uint64_t pages = G.bench_pages;
	double mc = memcpy_pages_per_sec(pages);
	/* warm-up, not measured: the store faults its page frames in once, as the memcpy buffers were */
	struct tput warm;
	throughput(&d, 0, G.queues, pages, 7, NULL, &warm);
	lg_info("memcpy baseline: %.0f pages/s (4 KiB, %llu-page buffers)", mc, (unsigned long long)pages);
	struct lat lat;
	latency(&d, G.lat_ops, 1, &lat);
	lg_info("latency (depth 1, queue 0): PUT p50 %.2f us p99 %.2f us, GET p50 %.2f us p99 %.2f us, all p50 %.2f us p99 %.2f us", lat.put50,
		lat.put99, lat.get50, lat.get99, lat.p50, lat.p99);
	struct tput *per = calloc((size_t)G.queues, sizeof(*per));
	if (!per)
		lg_die(EXIT_ERROR, "out of memory");
	for (int qi = 0; qi < G.queues; qi++) {
		throughput(&d, qi, 1, pages, 100 + (uint64_t)qi, NULL, &per[qi]);
		lg_info("queue %d alone (depth %d): PUT %.0f ops/s, GET %.0f ops/s, both %.0f ops/s", qi, d.vq[qi].nslots, per[qi].put, per[qi].get,
			per[qi].all);
	}
	struct tput all, *perall = calloc((size_t)G.queues, sizeof(*perall));
	if (!perall)
		lg_die(EXIT_ERROR, "out of memory");
	throughput(&d, 0, G.queues, pages, 1000, perall, &all);
	lg_info("all %d queues (depth %d each): PUT %.0f ops/s, GET %.0f ops/s, both %.0f ops/s", G.queues, d.vq[0].nslots, all.put, all.get,
		all.all);
	uint64_t kicks = 0;
	for (int qi = 0; qi < G.queues; qi++)
		kicks += d.vq[qi].kicks;
	int depth = d.vq[0].nslots;
	dev_close(&d);
	char pq[8192];
	size_t l = 0;
	for (int qi = 0; qi < G.queues && l < sizeof(pq) - 256; qi++)
		l += (size_t)snprintf(pq + l, sizeof(pq) - l,
				      "%s{\"queue\":%d,\"putOpsPerSec\":%.0f,\"getOpsPerSec\":%.0f,\"opsPerSec\":%.0f,\"inAllRunOpsPerSec\":%.0f}", qi ? "," : "",
				      qi, per[qi].put, per[qi].get, per[qi].all, perall[qi].all);
	json_out("{\"mode\":\"bench\",\"ok\":true,\"queues\":%d,\"depth\":%d,\"pages\":%llu,\"indirect\":%s,\"eventIdx\":%s,"
		 "\"memcpyPagesPerSec\":%.0f,\"oneQueueOpsPerSec\":%.0f,\"oneQueuePutOpsPerSec\":%.0f,\"oneQueueGetOpsPerSec\":%.0f,"
		 "\"allQueuesOpsPerSec\":%.0f,\"allQueuesPutOpsPerSec\":%.0f,\"allQueuesGetOpsPerSec\":%.0f,"
		 "\"latency\":{\"ops\":%llu,\"putP50us\":%.2f,\"putP99us\":%.2f,\"getP50us\":%.2f,\"getP99us\":%.2f,\"p50us\":%.2f,\"p99us\":%.2f,\"maxUs\":%.2f},"
		 "\"kicks\":%llu,\"perQueue\":[%s]}",
		 G.queues, depth, (unsigned long long)pages, G.indirect ? "true" : "false", G.event_idx ? "true" : "false", mc, per[0].all, per[0].put,
		 per[0].get, all.all, all.put, all.get, (unsigned long long)G.lat_ops, lat.put50, lat.put99, lat.get50, lat.get99, lat.p50, lat.p99,
		 lat.max, (unsigned long long)kicks, pq);
	free(per);
	free(perall);
	return 0;
}

/*
 * latency: only the depth-1 figures of bench, on queue 0: what a quiet guest
 * sees (ring-bench --noisy runs it beside a noisy neighbour on the same daemon).
 */
int mode_latency(void)
{
	struct lgdev d;
	dev_open(&d, 1);
	struct res r = req_sync(&d, 0, TMEM_OP_RESET, 0, 0, NULL, 0, NULL, 0, NULL, 0);
	if (r.status != TMEM_S_OK)
		lg_die(EXIT_MISMATCH, "RESET: status %d", r.status);
	struct lat lat;
	/* warm-up, not measured: the daemon's JIT and the store's frames */
	latency(&d, G.lat_ops < 2000 ? G.lat_ops : 2000, 2, &lat);
	latency(&d, G.lat_ops, 1, &lat);
	lg_info("latency (depth 1, queue 0): PUT p50 %.2f us p99 %.2f us, GET p50 %.2f us p99 %.2f us, all p50 %.2f us p99 %.2f us max %.2f us",
		lat.put50, lat.put99, lat.get50, lat.get99, lat.p50, lat.p99, lat.max);
	dev_close(&d);
	json_out("{\"mode\":\"latency\",\"ok\":true,\"ops\":%llu,\"putP50us\":%.2f,\"putP99us\":%.2f,\"getP50us\":%.2f,\"getP99us\":%.2f,"
		 "\"p50us\":%.2f,\"p90us\":%.2f,\"p99us\":%.2f,\"maxUs\":%.2f}",
		 (unsigned long long)G.lat_ops, lat.put50, lat.put99, lat.get50, lat.get99, lat.p50, lat.p90, lat.p99, lat.max);
	return 0;
}
