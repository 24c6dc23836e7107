/* SPDX-License-Identifier: GPL-2.0 */
/*
 * noisy: a guest that keeps the daemon busy, for the fairness benchmark
 * (ring-bench --noisy). Every avail ring of --queues queues is kept full of
 * one chain at descriptor 0, published again as soon as it is used (a
 * hostile driver may post a head that is still in flight; the daemon walks
 * it every time):
 *   long:  the whole queue size of 4-byte readable descriptors and no
 *          writable byte: the daemon walks all of them, then cannot answer;
 *   split: a valid PUT whose page is split over 1021 descriptors (1023 in
 *          all, the longest valid request a 1024-entry queue holds);
 *   valid: a plain PUT of 3 descriptors (big valid work).
 * Refills every --nap-us microseconds, so this process needs little CPU,
 * until SIGTERM or SIGINT; then prints what the daemon completed.
 */
#include "lg.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* Writes the flood chain of queue q at descriptor 0; returns its length. */
static int build_chain(struct lgdev *d, struct vq *q, uint32_t pool)
{
	uint8_t *hdr = q->scratch, *resp = q->scratch + 64, *page = q->scratch + 4096;
	uint64_t oid[3] = { (uint64_t)q->index, 0x4e015eull, 0 };
	int n;

	if (!strcmp(G.noise, "long")) {
		n = q->num;
		for (int i = 0; i < n; i++) {
			q->desc[i].addr = gpa_of(d, page + 4 * (i % 1024));
			q->desc[i].len = 4;
			q->desc[i].flags = i + 1 < n ? VRING_DESC_F_NEXT : 0;
			q->desc[i].next = (uint16_t)(i + 1 < n ? i + 1 : 0);
		}
		return n;
	}
	put_hdr(hdr, TMEM_OP_PUT_PAGE, 0, pool, oid, 1000, 0x4e015e);
	memset(page, 0x5a, TMEM_PAGE_SIZE);
	if (!strcmp(G.noise, "valid")) {
		struct seg s[3] = { { gpa_of(d, hdr), TMEM_REQ_SIZE, 0 }, { gpa_of(d, page), TMEM_PAGE_SIZE, 0 }, { gpa_of(d, resp), TMEM_RESP_SIZE, 1 } };
		vq_post_chain(d, q, 0, NULL, s, 3);
		return 3;
	}
	/* split: header, 1020 x 4 bytes + 16 bytes of page, response */
	n = 1023;
	if (q->num < n)
		lg_die(EXIT_ERROR, "--noise split needs --qsize 1024 (a 1023-descriptor chain)");
	for (int i = 0; i < n; i++) {
		struct lg_desc *e = &q->desc[i];
		if (i == 0) {
			e->addr = gpa_of(d, hdr);
			e->len = TMEM_REQ_SIZE;
		} else if (i <= 1020) {
			e->addr = gpa_of(d, page + 4 * (i - 1));
			e->len = 4;
		} else if (i == 1021) {
			e->addr = gpa_of(d, page + 4080);
			e->len = 16;
		} else {
			e->addr = gpa_of(d, resp);
			e->len = TMEM_RESP_SIZE;
		}
		e->flags = (uint16_t)((i == n - 1 ? VRING_DESC_F_WRITE : 0) | (i + 1 < n ? VRING_DESC_F_NEXT : 0));
		e->next = (uint16_t)(i + 1 < n ? i + 1 : 0);
	}
	return n;
}

int mode_noisy(void)
{
	struct lgdev d;
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	dev_open(&d, G.queues);
	/* an ephemeral pool: the flood needs no room the daemon could refuse */
	struct tmem_new_pool np = { .flags = 0, .page_size = TMEM_PAGE_SIZE };
	struct res r = req_sync(&d, 0, TMEM_OP_NEW_POOL, 0, 0, NULL, 0, &np, sizeof(np), NULL, 0);
	if (r.status != TMEM_S_OK)
		lg_die(EXIT_MISMATCH, "NEW_POOL: status %d", r.status);
	int len = 0;
	for (int i = 0; i < d.nq; i++)
		len = build_chain(&d, &d.vq[i], (uint32_t)r.value);

	uint64_t chains = 0, unanswered = 0, t0 = now_ns(), progress = t0;
	struct timespec nap = { .tv_sec = 0, .tv_nsec = (long)G.nap_us * 1000 };
	int ready = 0;
	while (!stop) {
		for (int i = 0; i < d.nq; i++) {
			struct vq *q = &d.vq[i];
			uint32_t id, l;
			while (vq_poll(q, &id, &l)) {
				if (id != 0)
					lg_die(EXIT_MISMATCH, "noisy queue %d: used id %u, only head 0 was posted", i, id);
				chains++;
				unanswered += l == 0;
				progress = now_ns();
			}
			vq_update_used_event(&d, q);
			while ((uint16_t)(q->avail_idx - q->last_used) < q->num)
				vq_publish(q, 0);
			vq_notify(&d, q);
		}
		if (!ready) {
			fprintf(stderr, "loadgen: noisy: flooding %d queue(s) of %u with %s chains of %d descriptors\n", d.nq, d.vq[0].num,
				G.noise, len);
			fflush(stderr);
			ready = 1;
		}
		/* every ring is full: a daemon that completes nothing for this long has stalled us */
		if (now_ns() - progress > (uint64_t)G.timeout_ms * 1000000ull)
			lg_die(EXIT_HANG, "noisy: the daemon completed none of our chains within %d ms", G.timeout_ms);
		if (G.nap_us)
			nanosleep(&nap, NULL);
	}
	double s = (double)(now_ns() - t0) / 1e9;
	/* no orderly close: chains are in flight, as when a hostile guest just leaves */
	json_out("{\"mode\":\"noisy\",\"ok\":true,\"noise\":\"%s\",\"queues\":%d,\"qsize\":%u,\"chainDescriptors\":%d,\"seconds\":%.3f,"
		 "\"chains\":%llu,\"unanswered\":%llu,\"chainsPerSec\":%.0f,\"descriptorsPerSec\":%.0f}",
		 G.noise, d.nq, d.vq[0].num, len, s, (unsigned long long)chains, (unsigned long long)unanswered, (double)chains / s,
		 (double)chains * len / s);
	return 0;
}
