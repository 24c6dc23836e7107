// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_tmem: transcendent memory on a virtio device (the virtio half).
 *
 * The frontend is drivers/xen/tmem.c with the hypercall replaced by a queue
 * submission: every tmem operation is one descriptor chain [header, data,
 * response] on a request queue, and the caller polls the used ring until
 * the device answers.  cleancache calls us with interrupts off under the
 * page-cache lock, so nothing on the data path allocates: each queue owns
 * one preallocated request slot and a bounce page, and carries at most one
 * chain.
 *
 * A queue is IDLE, BUSY (its owner posted a chain and polls for the answer,
 * no lock held) or ORPHAN: the owner gave up waiting (timeout_ms), but the
 * chain, its slot and its bounce page still belong to the device.  An
 * orphaned queue is not used again until its chain comes back; whoever
 * looks for a free queue reaps it on the way.  A slow device therefore costs
 * timeouts, never the device: only a removed device, a broken virtqueue or
 * an answer outside the ABI is fatal (the device is then "broken": every put
 * is refused, every get misses, until unbind/bind).
 *
 * What a request of unknown outcome means for the data is for the callers
 * (tmem_backends.c) to settle; this file only tells them (-ETIMEDOUT,
 * -EAGAIN) and keeps frontswap PUTs from overtaking such a request.
 *
 * The wire format is ../shared/docs/ABI.md; the structs come from the
 * generated header tmem_abi.h.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/gfp.h>
#include <linux/highmem.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/srcu.h>
#include <linux/ktime.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/log2.h>
#include <linux/scatterlist.h>
#include <linux/seq_file.h>
#include <linux/debugfs.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include "virtio_tmem.h"

static unsigned int device_id = TMEM_DEFAULT_VIRTIO_ID;
module_param(device_id, uint, 0444);
MODULE_PARM_DESC(device_id, "virtio device id of the tmem device (default 39)");

/*
 * The bound on one call, finding a queue included.  cleancache waits spin
 * with interrupts off under the page-cache lock: a bound near the
 * hard-lockup threshold (watchdog_thresh, 10 s by default) would turn a
 * stalled daemon into lockup reports, so it is capped at 1 s.  Larger
 * values are clamped (with a warning) so that old command lines still load.
 */
#define VTMEM_TIMEOUT_MAX_MS	1000

static unsigned int timeout_ms = VTMEM_TIMEOUT_MAX_MS;

static int timeout_ms_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;
	int ret;

	ret = kstrtouint(val, 0, &v);
	if (ret)
		return ret;
	if (v < 1)
		return -EINVAL;
	if (v > VTMEM_TIMEOUT_MAX_MS) {
		pr_warn("timeout_ms=%u clamped to %u\n", v,
			VTMEM_TIMEOUT_MAX_MS);
		v = VTMEM_TIMEOUT_MAX_MS;
	}
	WRITE_ONCE(*(unsigned int *)kp->arg, v);
	return 0;
}

static const struct kernel_param_ops timeout_ms_ops = {
	.set = timeout_ms_set,
	.get = param_get_uint,
};

module_param_cb(timeout_ms, &timeout_ms_ops, &timeout_ms, 0644);
MODULE_PARM_DESC(timeout_ms,
		 "bound on one request in ms, 1 to 1000 (larger values are clamped); frontswap loads of pages held only in tmem wait longer (default 1000)");

static bool indirect_desc;
module_param(indirect_desc, bool, 0444);
MODULE_PARM_DESC(indirect_desc,
		 "accept VIRTIO_RING_F_INDIRECT_DESC (every request then allocates its table with GFP_ATOMIC; default 0)");

/* More queues than this buys nothing for a synchronous, per-cpu protocol. */
#define VTMEM_MAX_QUEUES	64

/* A process-context wait says so this often while the device is silent. */
#define VTMEM_SLOW_WARN_MS	10000

/*
 * The device-visible parts of one request.  kmalloc'ed (never on the stack)
 * so that the device can reach them through the scatterlist.
 */
struct vtmem_slot {
	struct tmem_req req;
	struct tmem_resp resp;
	union {
		struct tmem_new_pool new_pool;
		struct tmem_info info;
	} payload;
};

enum vtmem_qstate {
	VTMEM_Q_IDLE,
	VTMEM_Q_BUSY,		/* the owner polls for the answer */
	VTMEM_Q_ORPHAN,		/* the owner gave up; the device owns the chain */
};

/*
 * A request queue.  The lock covers state changes and the reaping of an
 * orphan; the owner of a BUSY queue posts and polls without it, so the lock
 * is only ever held for a few instructions.
 */
struct vtmem_queue {
	spinlock_t lock;		/* state, and reaping an orphan */
	enum vtmem_qstate state;
	u32 orphan_op;		/* TMEM_OP_* of the orphaned chain */
	struct virtqueue *vq;
	struct vtmem_slot *slot;
	struct page *bounce;	/* every GET lands here first */
	u64 seq;		/* request tag: per-queue sequence number */
} ____cacheline_aligned_in_smp;

struct vtmem_device {
	struct virtio_device *vdev;
	u32 gen;		/* generation: tells pool ids of devices apart */
	bool shared;		/* TMEM_F_SHARED negotiated */
	unsigned long flags;
	atomic_t orphans;	/* queues in VTMEM_Q_ORPHAN */
	atomic_t slow;		/* unbounded waits past timeout_ms */
	unsigned int nqueues;
	struct vtmem_queue *queues;
	struct tmem_info info;	/* INFO at probe, little-endian */
};

/* Bits in vtmem_device.flags. */
#define VTMEM_BROKEN	0	/* fatal: never touch the queues again */
#define VTMEM_FROZEN	1	/* suspended (.freeze); no new request */
#define VTMEM_DYING	2	/* being removed: waits end now */
#define VTMEM_DRAINING	3	/* being removed: ordered requests refused */

struct vtmem_stats __percpu *vtmem_stats;

/*
 * The bound device.  Readers hold vtmem_srcu: SRCU, not RCU, because a
 * frontswap load may sleep while it waits for the device.
 */
static struct vtmem_device __rcu *vtmem_dev;
static struct srcu_struct vtmem_srcu;
/* Serialises probe, remove, freeze and restore: one device at a time. */
static DEFINE_MUTEX(vtmem_probe_lock);
static u32 vtmem_last_gen;
static struct dentry *vtmem_debugfs;
/* Longest wait for a free queue, ns (debugfs). */
static atomic64_t vtmem_queue_wait_max_ns = ATOMIC64_INIT(0);

u64 vtmem_stat_sum(enum vtmem_stat s)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += per_cpu_ptr(vtmem_stats, cpu)->cnt[s];
	return sum;
}

static struct vtmem_device *vtmem_bound(void)
{
	return srcu_dereference(vtmem_dev, &vtmem_srcu);
}

u32 vtmem_device_gen(void)
{
	struct vtmem_device *vd;
	u32 gen;
	int idx;

	idx = srcu_read_lock(&vtmem_srcu);
	vd = vtmem_bound();
	gen = vd ? READ_ONCE(vd->gen) : 0;
	srcu_read_unlock(&vtmem_srcu, idx);
	return gen;
}

bool vtmem_device_usable(void)
{
	struct vtmem_device *vd;
	bool usable;
	int idx;

	idx = srcu_read_lock(&vtmem_srcu);
	vd = vtmem_bound();
	usable = vd && !test_bit(VTMEM_BROKEN, &vd->flags);
	srcu_read_unlock(&vtmem_srcu, idx);
	return usable;
}

bool vtmem_shared_pools(void)
{
	struct vtmem_device *vd;
	bool shared;
	int idx;

	idx = srcu_read_lock(&vtmem_srcu);
	vd = vtmem_bound();
	shared = vd && vd->shared;
	srcu_read_unlock(&vtmem_srcu, idx);
	return shared;
}

static void vtmem_mark_broken(struct vtmem_device *vd, const char *why, u32 op)
{
	if (!test_and_set_bit(VTMEM_BROKEN, &vd->flags))
		dev_err(&vd->vdev->dev,
			"%s (op %u): device marked broken, every later put is refused and every later get misses until unbind/bind\n",
			why, op);
}

static void vtmem_count_status(int status)
{
	enum vtmem_stat s;

	switch (status) {
	case TMEM_S_OK:
		s = VTMEM_STAT_STATUS_OK;
		break;
	case TMEM_S_MISS:
		s = VTMEM_STAT_STATUS_MISS;
		break;
	case TMEM_S_NOSPACE:
		s = VTMEM_STAT_STATUS_NOSPACE;
		break;
	case TMEM_S_INVALID:
		s = VTMEM_STAT_STATUS_INVALID;
		break;
	case TMEM_S_DENIED:
		s = VTMEM_STAT_STATUS_DENIED;
		break;
	case TMEM_S_FROZEN:
		s = VTMEM_STAT_STATUS_FROZEN;
		break;
	case TMEM_S_UNSUPPORTED:
		s = VTMEM_STAT_STATUS_UNSUPPORTED;
		break;
	default:
		s = VTMEM_STAT_STATUS_OTHER;
		break;
	}
	vtmem_stat_inc(s);
}

static void vtmem_count_latency(u32 op, ktime_t start)
{
	u64 ns = ktime_to_ns(ktime_sub(ktime_get(), start));
	unsigned int b = ns ? min_t(unsigned int, ilog2(ns),
				    VTMEM_LAT_BUCKETS - 1) : 0;

	this_cpu_inc(vtmem_stats->lat[op][b]);
	this_cpu_add(vtmem_stats->lat_sum_ns[op], ns);
}

static void vtmem_count_queue_wait(ktime_t since)
{
	s64 ns = ktime_to_ns(ktime_sub(ktime_get(), since));
	s64 max = atomic64_read(&vtmem_queue_wait_max_ns);

	vtmem_stat_inc(VTMEM_STAT_QUEUE_WAITS);
	while (ns > max) {
		s64 old = atomic64_cmpxchg(&vtmem_queue_wait_max_ns, max, ns);

		if (old == max)
			break;
		max = old;
	}
}

/* Used-ring length of a successful answer (ABI.md, "Edge rules"). */
static unsigned int vtmem_ok_len(const struct vtmem_op *op)
{
	switch (op->op) {
	case TMEM_OP_GET_PAGE:
		return TMEM_PAYLOAD_WR_GET_PAGE + TMEM_RESP_SIZE;
	case TMEM_OP_INFO:
		return TMEM_PAYLOAD_WR_INFO + TMEM_RESP_SIZE;
	default:
		return TMEM_RESP_SIZE;
	}
}

/* Builds the chain of @op in the slot of @q and posts it; no allocation. */
static int vtmem_add(struct vtmem_queue *q, const struct vtmem_op *op)
{
	struct vtmem_slot *s = q->slot;
	struct scatterlist hdr, payload, data, resp;
	struct scatterlist *sgs[4];
	unsigned int out = 0, in = 0;

	s->req.op = cpu_to_le32(op->op);
	s->req.flags = cpu_to_le32(op->flags);
	s->req.pool_id = cpu_to_le32(op->pool_id);
	s->req.index = cpu_to_le32(op->index);
	s->req.oid[0] = cpu_to_le64(op->oid[0]);
	s->req.oid[1] = cpu_to_le64(op->oid[1]);
	s->req.oid[2] = cpu_to_le64(op->oid[2]);
	s->req.tag = cpu_to_le64(++q->seq);
	memset(&s->resp, 0, sizeof(s->resp));

	sg_init_one(&hdr, &s->req, sizeof(s->req));
	sgs[out++] = &hdr;
	if (op->in_len) {
		memcpy(&s->payload, op->in, op->in_len);
		sg_init_one(&payload, &s->payload, op->in_len);
		sgs[out++] = &payload;
	}
	if (op->op == TMEM_OP_PUT_PAGE) {
		/* The page frame itself: the device copies straight from it. */
		sg_init_table(&data, 1);
		sg_set_page(&data, op->page, TMEM_PAGE_SIZE, 0);
		sgs[out++] = &data;
	}
	if (op->op == TMEM_OP_GET_PAGE) {
		/*
		 * Into the queue's own page, copied to the caller's only on a
		 * confirmed hit: an answer that comes after the caller gave up
		 * must not write a page the kernel has since reused.
		 */
		sg_init_table(&data, 1);
		sg_set_page(&data, q->bounce, TMEM_PAGE_SIZE, 0);
		sgs[out + in++] = &data;
	}
	if (op->out_len) {
		sg_init_one(&payload, &s->payload, op->out_len);
		sgs[out + in++] = &payload;
	}
	sg_init_one(&resp, &s->resp, sizeof(s->resp));
	sgs[out + in++] = &resp;

	/* GFP_ATOMIC is only used with indirect_desc; direct chains need none. */
	return virtqueue_add_sgs(q->vq, sgs, out, in, s, GFP_ATOMIC);
}

/*
 * The orphan of @q came back (q->lock held).  A PUT that the device did
 * store although its caller was told it failed leaves a page the kernel
 * does not know about: frontswap never loads it (its bitmap says the offset
 * is not in frontswap), but it counts against the guest's limit, so it is
 * flushed, by a chain posted here and reaped like any orphan.  The orphan
 * count drops only when the queue is idle again, so no ordered PUT can run
 * between the late PUT and its flush.
 */
static void vtmem_reaped(struct vtmem_device *vd, struct vtmem_queue *q)
{
	struct vtmem_slot *s = q->slot;
	struct vtmem_op flush = {
		.op = TMEM_OP_FLUSH_PAGE,
		.pool_id = le32_to_cpu(s->req.pool_id),
		.index = le32_to_cpu(s->req.index),
		.oid = {
			le64_to_cpu(s->req.oid[0]),
			le64_to_cpu(s->req.oid[1]),
			le64_to_cpu(s->req.oid[2]),
		},
	};

	vtmem_stat_inc(VTMEM_STAT_ORPHANS_REAPED);
	if (q->orphan_op == TMEM_OP_PUT_PAGE &&
	    (s32)le32_to_cpu(s->resp.status) == TMEM_S_OK &&
	    !vtmem_add(q, &flush)) {
		virtqueue_kick(q->vq);
		q->orphan_op = TMEM_OP_FLUSH_PAGE;
		vtmem_stat_inc(VTMEM_STAT_ORPHAN_FLUSHES);
		return;
	}
	q->state = VTMEM_Q_IDLE;
	atomic_dec(&vd->orphans);
}

/* Takes the chain of an orphaned queue back if it came (q->lock held). */
static void vtmem_reap(struct vtmem_device *vd, struct vtmem_queue *q)
{
	unsigned int len;
	void *token;

	if (test_bit(VTMEM_BROKEN, &vd->flags) ||
	    test_bit(VTMEM_FROZEN, &vd->flags))
		return;
	token = virtqueue_get_buf(q->vq, &len);
	if (!token) {
		if (virtqueue_is_broken(q->vq))
			vtmem_mark_broken(vd, "queue broken", q->orphan_op);
		return;
	}
	if (token != q->slot) {
		vtmem_stat_inc(VTMEM_STAT_ERR_PROTOCOL);
		vtmem_mark_broken(vd, "unknown chain in the used ring",
				  q->orphan_op);
		return;
	}
	vtmem_reaped(vd, q);
}

static void vtmem_reap_all(struct vtmem_device *vd)
{
	struct vtmem_queue *q;
	unsigned long irqflags;
	unsigned int i;

	for (i = 0; i < vd->nqueues && atomic_read(&vd->orphans); i++) {
		q = &vd->queues[i];
		if (READ_ONCE(q->state) != VTMEM_Q_ORPHAN ||
		    !spin_trylock_irqsave(&q->lock, irqflags))
			continue;
		if (q->state == VTMEM_Q_ORPHAN)
			vtmem_reap(vd, q);
		spin_unlock_irqrestore(&q->lock, irqflags);
	}
}

/* The time of one call: a bound, or none (VTMEM_WAIT_FOREVER). */
struct vtmem_call {
	struct vtmem_device *vd;
	enum vtmem_wait wait;
	bool slow;		/* counted in vd->slow */
	u32 op;
	ktime_t start;
	ktime_t deadline;
	ktime_t next_warn;
};

/*
 * One step of a wait; true once the call's bound has passed.  Atomic
 * callers spin; process context spins briefly, then reschedules, then
 * sleeps, so a stalled device costs a sleeping task, not a CPU.
 */
static bool vtmem_pause(struct vtmem_call *c)
{
	ktime_t now = ktime_get();
	s64 us;

	if (c->wait != VTMEM_WAIT_FOREVER) {
		if (ktime_after(now, c->deadline))
			return true;
	} else if (ktime_after(now, c->next_warn)) {
		if (!c->slow) {
			c->slow = true;
			atomic_inc(&c->vd->slow);
			vtmem_stat_inc(VTMEM_STAT_SLOW_WAITS);
		}
		pr_warn_ratelimited("op %u waiting %lld ms for the device (tmemd stopped?): the page is held only there, so the caller waits\n",
				    c->op, ktime_ms_delta(now, c->start));
		c->next_warn = ktime_add_ms(now, VTMEM_SLOW_WARN_MS);
	}
	if (c->wait == VTMEM_WAIT_ATOMIC) {
		cpu_relax();
		return false;
	}
	us = ktime_us_delta(now, c->start);
	if (us < 50)
		cpu_relax();
	else if (us < 2000)
		cond_resched();
	else
		usleep_range(100, 200);
	return false;
}

/*
 * Takes a free queue: this CPU's first, then the others, reaping orphans
 * on the way.  The wait counts against the call's bound, so with IRQs off
 * the whole call, not each attempt, is bounded by timeout_ms.
 */
static struct vtmem_queue *vtmem_claim(struct vtmem_device *vd,
				       struct vtmem_call *c)
{
	unsigned int i, n = vd->nqueues;
	unsigned int home = raw_smp_processor_id() % n;
	struct vtmem_queue *q;
	unsigned long irqflags;
	bool waited = false, frozen;
	ktime_t since = 0;

	for (;;) {
		frozen = false;
		for (i = 0; i < n; i++) {
			q = &vd->queues[(home + i) % n];
			if (!spin_trylock_irqsave(&q->lock, irqflags))
				continue;
			if (q->state == VTMEM_Q_ORPHAN)
				vtmem_reap(vd, q);
			/* Under the lock: .freeze waits for BUSY queues. */
			frozen = test_bit(VTMEM_FROZEN, &vd->flags);
			if (q->state == VTMEM_Q_IDLE && !frozen &&
			    !test_bit(VTMEM_BROKEN, &vd->flags)) {
				q->state = VTMEM_Q_BUSY;
				spin_unlock_irqrestore(&q->lock, irqflags);
				if (waited)
					vtmem_count_queue_wait(since);
				return q;
			}
			spin_unlock_irqrestore(&q->lock, irqflags);
			if (frozen)
				break;
		}
		if (test_bit(VTMEM_BROKEN, &vd->flags) ||
		    test_bit(VTMEM_DYING, &vd->flags)) {
			vtmem_stat_inc(VTMEM_STAT_NO_DEVICE);
			return ERR_PTR(-ENODEV);
		}
		/* Suspended: only a wait without bound outlives it. */
		if (frozen && c->wait != VTMEM_WAIT_FOREVER) {
			vtmem_stat_inc(VTMEM_STAT_SUSPENDED);
			return ERR_PTR(-EAGAIN);
		}
		/*
		 * A device that let a request time out, or keeps a frontswap
		 * load waiting past timeout_ms, and has no free queue is most
		 * likely stalled (or its daemon gone): a bounded caller gives
		 * up at once instead of waiting out its bound, so that a stall
		 * costs each queue one timeout, not every call one (with IRQs
		 * off, evicting or truncating page cache would add those up;
		 * with writethrough, every swap-in would wait).
		 */
		if (c->wait != VTMEM_WAIT_FOREVER &&
		    (atomic_read(&vd->orphans) || atomic_read(&vd->slow))) {
			vtmem_stat_inc(VTMEM_STAT_NO_QUEUE);
			return ERR_PTR(-EAGAIN);
		}
		if (!waited) {
			waited = true;
			since = ktime_get();
		}
		if (vtmem_pause(c)) {
			vtmem_count_queue_wait(since);
			vtmem_stat_inc(VTMEM_STAT_NO_QUEUE);
			return ERR_PTR(-EAGAIN);
		}
	}
}

static void vtmem_set_state(struct vtmem_queue *q, enum vtmem_qstate state)
{
	unsigned long irqflags;

	spin_lock_irqsave(&q->lock, irqflags);
	q->state = state;
	spin_unlock_irqrestore(&q->lock, irqflags);
}

/*
 * Polls the used ring of the queue the caller owns.  Interrupts may be
 * off, so time is read from ktime_get() rather than jiffies.
 */
static int vtmem_wait(struct vtmem_device *vd, struct vtmem_queue *q,
		      struct vtmem_call *c, void **token, unsigned int *len)
{
	for (;;) {
		*token = virtqueue_get_buf(q->vq, len);
		if (*token)
			return 0;
		if (virtqueue_is_broken(q->vq))
			return -EIO;
		if (test_bit(VTMEM_BROKEN, &vd->flags) ||
		    test_bit(VTMEM_DYING, &vd->flags))
			return -ENODEV;
		if (vtmem_pause(c))
			return -ETIMEDOUT;
	}
}

/* Reads the answer; data reaches the caller only on a confirmed TMEM_S_OK. */
static int vtmem_complete(struct vtmem_queue *q, struct vtmem_op *op,
			  void *token, unsigned int len)
{
	struct vtmem_slot *s = q->slot;
	int status = (s32)le32_to_cpu(s->resp.status);

	if (token != s)
		return -EIO;
	if (status == TMEM_S_OK) {
		if (len != vtmem_ok_len(op))
			return -EIO;
		vtmem_count_status(status);
		op->value = le64_to_cpu(s->resp.value);
		if (op->op == TMEM_OP_GET_PAGE)
			copy_highpage(op->page, q->bounce);
		if (op->out_len)
			memcpy(op->out, &s->payload, op->out_len);
		return 0;
	}
	/* A refusal writes the response only (ABI.md); anything else is wrong. */
	if (len != TMEM_RESP_SIZE || status > 0)
		return -EIO;
	vtmem_count_status(status);
	return status;
}

/*
 * One request on device @vd.  Ordering: the device executes each queue in
 * order but queues independently, so a chain that timed out (an orphan) may
 * still execute after a later request on another queue.  For a frontswap
 * PUT that would be corruption (an old PUT or FLUSH of the same offset
 * landing after the new PUT), so @op->ordered requests are refused while any
 * orphan is outstanding.  Everything before this call that concerned the
 * same handle either completed or is counted in vd->orphans: an orphan is
 * counted before its caller returns.
 */
static int __vtmem_submit(struct vtmem_device *vd, struct vtmem_op *op,
			  struct vtmem_call *c)
{
	struct vtmem_queue *q;
	unsigned int len = 0;
	void *token = NULL;
	ktime_t posted;
	int ret;

	if (op->ordered && test_bit(VTMEM_DRAINING, &vd->flags)) {
		vtmem_stat_inc(VTMEM_STAT_UNORDERED);
		return -EAGAIN;
	}
	if (op->ordered && atomic_read(&vd->orphans)) {
		vtmem_reap_all(vd);
		if (atomic_read(&vd->orphans)) {
			vtmem_stat_inc(VTMEM_STAT_UNORDERED);
			return -EAGAIN;
		}
	}

	q = vtmem_claim(vd, c);
	if (IS_ERR(q))
		return PTR_ERR(q);
	/*
	 * The generation changes only while the device is suspended
	 * (vtmem_restore()), when no queue can be taken: checked here, after
	 * the queue was, it holds until the answer.
	 */
	smp_rmb();
	if (op->gen && op->gen != READ_ONCE(vd->gen)) {
		/* A pool id of a removed device: never send it to this one. */
		vtmem_set_state(q, VTMEM_Q_IDLE);
		vtmem_stat_inc(VTMEM_STAT_NO_DEVICE);
		return -ENODEV;
	}
	op->gen = vd->gen;

	this_cpu_inc(vtmem_stats->req[op->op]);
	posted = ktime_get();
	ret = vtmem_add(q, op);
	if (ret) {
		vtmem_stat_inc(VTMEM_STAT_ERR_SUBMIT);
		if (virtqueue_is_broken(q->vq)) {
			vtmem_mark_broken(vd, "queue broken", op->op);
			ret = -EIO;
		} else {
			ret = -EAGAIN;
		}
		vtmem_set_state(q, VTMEM_Q_IDLE);
		return ret;
	}
	virtqueue_kick(q->vq);

	ret = vtmem_wait(vd, q, c, &token, &len);
	if (ret == -EIO) {
		vtmem_stat_inc(VTMEM_STAT_ERR_PROTOCOL);
		vtmem_mark_broken(vd, "queue broken", op->op);
	}
	if (ret) {
		/* The device still owns the chain: leave it the queue. */
		q->orphan_op = op->op;
		atomic_inc(&vd->orphans);
		vtmem_set_state(q, VTMEM_Q_ORPHAN);
		if (ret == -ETIMEDOUT) {
			vtmem_stat_inc(VTMEM_STAT_TIMEOUTS);
			dev_warn_ratelimited(&vd->vdev->dev,
					     "op %u not answered in %u ms: its queue waits for the answer, the device stays in use\n",
					     op->op, READ_ONCE(timeout_ms));
		}
		return ret;
	}
	vtmem_count_latency(op->op, posted);

	ret = vtmem_complete(q, op, token, len);
	if (ret == -EIO) {
		vtmem_stat_inc(VTMEM_STAT_ERR_PROTOCOL);
		dev_err_ratelimited(&vd->vdev->dev,
				    "op %u: answer outside the ABI (len %u, status %d)\n",
				    op->op, len,
				    (s32)le32_to_cpu(q->slot->resp.status));
		vtmem_mark_broken(vd, "answer outside the ABI", op->op);
	}
	vtmem_set_state(q, VTMEM_Q_IDLE);
	return ret;
}

static int vtmem_submit(struct vtmem_device *vd, struct vtmem_op *op)
{
	struct vtmem_call c = { .vd = vd, .wait = op->wait, .op = op->op };
	int ret;

	if (WARN_ON_ONCE(op->op >= VTMEM_NR_OPS ||
			 op->in_len > sizeof_field(struct vtmem_slot, payload) ||
			 op->out_len > sizeof_field(struct vtmem_slot, payload)))
		return -EINVAL;
	c.start = ktime_get();
	c.deadline = ktime_add_ms(c.start, READ_ONCE(timeout_ms));
	c.next_warn = c.deadline;
	ret = __vtmem_submit(vd, op, &c);
	if (c.slow)
		atomic_dec(&vd->slow);
	return ret;
}

int vtmem_request(struct vtmem_op *op)
{
	struct vtmem_device *vd;
	int ret, idx;

	idx = srcu_read_lock(&vtmem_srcu);
	vd = vtmem_bound();
	if (vd) {
		ret = vtmem_submit(vd, op);
	} else {
		vtmem_stat_inc(VTMEM_STAT_NO_DEVICE);
		ret = -ENODEV;
	}
	srcu_read_unlock(&vtmem_srcu, idx);
	return ret;
}

int vtmem_settle(void)
{
	struct vtmem_device *vd;
	int ret = -ENODEV, idx;

	idx = srcu_read_lock(&vtmem_srcu);
	vd = vtmem_bound();
	if (vd && !test_bit(VTMEM_BROKEN, &vd->flags) &&
	    !test_bit(VTMEM_FROZEN, &vd->flags)) {
		vtmem_reap_all(vd);
		ret = atomic_read(&vd->orphans) ? -EAGAIN : 0;
	}
	srcu_read_unlock(&vtmem_srcu, idx);
	return ret;
}

static int vtmem_info(struct vtmem_device *vd, struct tmem_info *info)
{
	struct vtmem_op op = {
		.op = TMEM_OP_INFO,
		.wait = VTMEM_WAIT_SLEEP,
		.out = info,
		.out_len = sizeof(*info),
	};

	return vtmem_submit(vd, &op);
}

/*
 * INFO, then RESET before any NEW_POOL (ABI.md): a rebooted guest, or a
 * driver bound again, must not leave the pools of its predecessor counting
 * against its limits.
 */
static int vtmem_hello(struct vtmem_device *vd)
{
	struct device *dev = &vd->vdev->dev;
	struct vtmem_op reset = {
		.op = TMEM_OP_RESET,
		.wait = VTMEM_WAIT_SLEEP,
	};
	int err;

	err = vtmem_info(vd, &vd->info);
	if (err) {
		dev_err(dev, "INFO failed: %d\n", err);
		return err;
	}
	if (le32_to_cpu(vd->info.abi_version) != TMEM_ABI_VERSION ||
	    le32_to_cpu(vd->info.page_size) != TMEM_PAGE_SIZE) {
		dev_err(dev, "unsupported device: ABI version %u, page size %u\n",
			le32_to_cpu(vd->info.abi_version),
			le32_to_cpu(vd->info.page_size));
		return -ENODEV;
	}
	if (le32_to_cpu(vd->info.num_queues) < vd->nqueues)
		dev_warn(dev, "device reports %u queues, %u were set up\n",
			 le32_to_cpu(vd->info.num_queues), vd->nqueues);

	err = vtmem_submit(vd, &reset);
	if (err) {
		dev_err(dev, "RESET failed: %d\n", err);
		return err;
	}
	if (reset.value)
		dev_info(dev, "RESET destroyed %llu pool(s) of a previous instance\n",
			 reset.value);
	return 0;
}

/* A new generation number, never 0 (0 means "no device"). */
static u32 vtmem_next_gen(void)
{
	if (!++vtmem_last_gen)
		++vtmem_last_gen;
	return vtmem_last_gen;
}

/*
 * The generic vhost-user device has no config space telling the queue count,
 * and the transport refuses (-ENOENT) a queue index the device does not
 * offer: ask for up to @max queues and step down until the device agrees.
 * No callbacks: completion is polled, and the device's single MSI-X vector
 * then stays with the config interrupt instead of falling back to INTx.
 */
static int vtmem_find_vqs(struct vtmem_device *vd, unsigned int max)
{
	unsigned int n = max;
	struct virtqueue **vqs;
	vq_callback_t **callbacks;
	const char **names;
	unsigned int i;
	int err = -ENOMEM;

	vqs = kcalloc(n, sizeof(*vqs), GFP_KERNEL);
	callbacks = kcalloc(n, sizeof(*callbacks), GFP_KERNEL);
	names = kcalloc(n, sizeof(*names), GFP_KERNEL);
	if (!vqs || !callbacks || !names)
		goto out;
	for (i = 0; i < n; i++)
		names[i] = "requests";

	for (; n > 0; n--) {
		err = virtio_find_vqs(vd->vdev, n, vqs, callbacks, names, NULL);
		if (err != -ENOENT)
			break;
	}
	if (err)
		goto out;

	vd->nqueues = n;
	for (i = 0; i < n; i++)
		vd->queues[i].vq = vqs[i];
out:
	kfree(names);
	kfree(callbacks);
	kfree(vqs);
	return err;
}

/*
 * Called after the device was reset.  Slots and bounce pages of queues
 * whose chain never came back are kept all the same (a few pages, once):
 * a device that stopped answering is the one least trusted to have let go
 * of them.
 */
static void vtmem_free_queues(struct vtmem_device *vd)
{
	unsigned int i;

	if (atomic_read(&vd->orphans) || test_bit(VTMEM_BROKEN, &vd->flags)) {
		dev_warn(&vd->vdev->dev,
			 "keeping the request slots of a device that did not answer\n");
	} else {
		for (i = 0; i < VTMEM_MAX_QUEUES; i++) {
			kfree(vd->queues[i].slot);
			if (vd->queues[i].bounce)
				__free_page(vd->queues[i].bounce);
		}
	}
	kfree(vd->queues);
}

static int vtmem_init_queues(struct vtmem_device *vd)
{
	struct vtmem_queue *q;
	unsigned int i;
	int err;

	vd->queues = kcalloc(VTMEM_MAX_QUEUES, sizeof(*vd->queues),
			     GFP_KERNEL);
	if (!vd->queues)
		return -ENOMEM;

	err = vtmem_find_vqs(vd, min_t(unsigned int, nr_cpu_ids,
				       VTMEM_MAX_QUEUES));
	if (err)
		goto out_free;

	err = -ENOMEM;
	for (i = 0; i < vd->nqueues; i++) {
		q = &vd->queues[i];
		spin_lock_init(&q->lock);
		q->state = VTMEM_Q_IDLE;
		q->slot = kzalloc(sizeof(*q->slot), GFP_KERNEL);
		q->bounce = alloc_page(GFP_KERNEL);
		if (!q->slot || !q->bounce)
			goto out_del_vqs;
	}
	return 0;

out_del_vqs:
	vd->vdev->config->del_vqs(vd->vdev);
out_free:
	vtmem_free_queues(vd);
	return err;
}

static int vtmem_validate(struct virtio_device *vdev)
{
	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1)) {
		dev_err(&vdev->dev, "device is not virtio 1.x\n");
		return -ENODEV;
	}
	/* ABI.md: split rings only in version 1. */
	__virtio_clear_bit(vdev, VIRTIO_F_RING_PACKED);
	/*
	 * With indirect descriptors every request would kmalloc its table,
	 * from contexts with interrupts off and from reclaim.  A synchronous
	 * queue has one 3 or 4 descriptor chain in flight: direct fits.
	 */
	if (!indirect_desc)
		__virtio_clear_bit(vdev, VIRTIO_RING_F_INDIRECT_DESC);
	return 0;
}

static int vtmem_probe(struct virtio_device *vdev)
{
	struct vtmem_device *vd;
	int err;

	/* Version 1 of the ABI moves 4 KiB pages, and so must the kernel. */
	if (PAGE_SIZE != TMEM_PAGE_SIZE)
		return -EINVAL;

	mutex_lock(&vtmem_probe_lock);
	if (rcu_access_pointer(vtmem_dev)) {
		dev_err(&vdev->dev, "a tmem device is already bound\n");
		err = -EBUSY;
		goto out_unlock;
	}

	vd = kzalloc(sizeof(*vd), GFP_KERNEL);
	if (!vd) {
		err = -ENOMEM;
		goto out_unlock;
	}
	vd->vdev = vdev;
	vdev->priv = vd;
	vd->shared = virtio_has_feature(vdev, TMEM_F_SHARED);
	atomic_set(&vd->orphans, 0);
	atomic_set(&vd->slow, 0);

	err = vtmem_init_queues(vd);
	if (err)
		goto out_free;

	/* The rings are started by DRIVER_OK, and INFO needs them. */
	virtio_device_ready(vdev);

	err = vtmem_hello(vd);
	if (err)
		goto out_reset;

	vd->gen = vtmem_next_gen();
	rcu_assign_pointer(vtmem_dev, vd);

	dev_info(&vdev->dev,
		 "tmem device: %u queue(s), %u pools max, %llu pages capacity, %llu persistent pages allowed%s\n",
		 vd->nqueues, le32_to_cpu(vd->info.max_pools),
		 le64_to_cpu(vd->info.capacity_pages),
		 le64_to_cpu(vd->info.persistent_limit_pages),
		 vd->shared ? ", shared pools" : "");

	vtmem_backends_device_up(vd->gen);
	mutex_unlock(&vtmem_probe_lock);
	return 0;

out_reset:
	vdev->config->reset(vdev);
	vdev->config->del_vqs(vdev);
	vtmem_free_queues(vd);
out_free:
	vdev->priv = NULL;
	kfree(vd);
out_unlock:
	mutex_unlock(&vtmem_probe_lock);
	return err;
}

/*
 * Unbind, hot-unplug.  Frontswap pages held only on this device are brought
 * back into guest memory first, while the device still answers (new stores
 * are refused from here on); then the device is unpublished and every
 * request still running ends (waits see VTMEM_DYING) before the reset.
 */
static void vtmem_remove(struct virtio_device *vdev)
{
	struct vtmem_device *vd = vdev->priv;

	set_bit(VTMEM_DRAINING, &vd->flags);
	vtmem_backends_device_leaving(!test_bit(VTMEM_BROKEN, &vd->flags));

	mutex_lock(&vtmem_probe_lock);
	RCU_INIT_POINTER(vtmem_dev, NULL);
	set_bit(VTMEM_DYING, &vd->flags);
	mutex_unlock(&vtmem_probe_lock);
	synchronize_srcu(&vtmem_srcu);
	vtmem_backends_device_gone(vd->gen);

	vdev->config->reset(vdev);
	vdev->config->del_vqs(vdev);
	vtmem_free_queues(vd);
	vdev->priv = NULL;
	kfree(vd);
}

#ifdef CONFIG_PM_SLEEP
/* How long .freeze waits for requests in flight before refusing. */
#define VTMEM_FREEZE_WAIT_MS	(2 * VTMEM_TIMEOUT_MAX_MS)

static bool vtmem_any_busy(struct vtmem_device *vd)
{
	unsigned long irqflags;
	unsigned int i;
	bool busy = false;

	for (i = 0; i < vd->nqueues && !busy; i++) {
		spin_lock_irqsave(&vd->queues[i].lock, irqflags);
		busy = vd->queues[i].state == VTMEM_Q_BUSY;
		spin_unlock_irqrestore(&vd->queues[i].lock, irqflags);
	}
	return busy;
}

/*
 * Suspend (and the freeze/poweroff phases of hibernation), as
 * virtio_balloon does: no new request, wait for those in flight, reset,
 * drop the queues.  The reset takes every chain back from the device, the
 * orphans' too.  A request that does not end in time (a frontswap load
 * waiting for a stalled daemon) makes the suspend fail rather than lose its
 * page.
 */
static int vtmem_freeze(struct virtio_device *vdev)
{
	struct vtmem_device *vd = vdev->priv;
	ktime_t deadline = ktime_add_ms(ktime_get(), VTMEM_FREEZE_WAIT_MS);
	unsigned int i;

	mutex_lock(&vtmem_probe_lock);
	set_bit(VTMEM_FROZEN, &vd->flags);
	while (vtmem_any_busy(vd)) {
		if (ktime_after(ktime_get(), deadline)) {
			clear_bit(VTMEM_FROZEN, &vd->flags);
			mutex_unlock(&vtmem_probe_lock);
			dev_err(&vdev->dev,
				"suspend refused: a request has waited more than %u ms for the device\n",
				VTMEM_FREEZE_WAIT_MS);
			return -EBUSY;
		}
		usleep_range(500, 1000);
	}
	vdev->config->reset(vdev);
	vdev->config->del_vqs(vdev);
	for (i = 0; i < vd->nqueues; i++) {
		vd->queues[i].state = VTMEM_Q_IDLE;
		vd->queues[i].vq = NULL;
	}
	atomic_set(&vd->orphans, 0);
	mutex_unlock(&vtmem_probe_lock);
	return 0;
}

/*
 * Resume: the queues again, and no RESET: a ring restart keeps the pools
 * (ABI.md), so frontswap pages stored before the suspend are still there.
 * After hibernation the device is another one (a new QEMU, a new tmemd
 * connection, or one the boot kernel already used): its pool ids mean
 * nothing to us, so it starts as at probe, with RESET and a new generation,
 * and the pools the kernel holds are re-created, empty.  The PM notifier in
 * tmem_backends.c made sure frontswap held no page that lived only there.
 */
static int vtmem_restore(struct virtio_device *vdev)
{
	struct vtmem_device *vd = vdev->priv;
	u32 old_gen = vd->gen;
	int err;

	mutex_lock(&vtmem_probe_lock);
	err = vtmem_find_vqs(vd, vd->nqueues);
	if (err) {
		dev_err(&vdev->dev, "resume: no queues (%d)\n", err);
		vtmem_mark_broken(vd, "resume failed", 0);
		goto out_unlock;
	}
	virtio_device_ready(vdev);
	if (!vtmem_backends_hibernating()) {
		clear_bit(VTMEM_FROZEN, &vd->flags);
		goto out_unlock;
	}

	/* Requests with pool ids of before are refused from here on. */
	WRITE_ONCE(vd->gen, vtmem_next_gen());
	/* Pairs with smp_rmb() in vtmem_submit(). */
	smp_mb__before_atomic();
	clear_bit(VTMEM_FROZEN, &vd->flags);
	err = vtmem_hello(vd);
	vtmem_backends_device_gone(old_gen);
	if (err) {
		vtmem_mark_broken(vd, "resume from hibernation failed", 0);
		goto out_unlock;
	}
	dev_info(&vdev->dev, "resumed from hibernation: device reset, pools re-created\n");
	vtmem_backends_device_up(vd->gen);
out_unlock:
	mutex_unlock(&vtmem_probe_lock);
	return err;
}
#endif

static unsigned int features[] = {
	TMEM_F_SHARED,
};

/* The device id is a module parameter: vtmem_init() fills it in. */
static struct virtio_device_id id_table[] = {
	{ TMEM_DEFAULT_VIRTIO_ID, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, id_table);

static struct virtio_driver vtmem_driver = {
	.feature_table		= features,
	.feature_table_size	= ARRAY_SIZE(features),
	.driver.name		= KBUILD_MODNAME,
	.driver.owner		= THIS_MODULE,
	.id_table		= id_table,
	.validate		= vtmem_validate,
	.probe			= vtmem_probe,
	.remove			= vtmem_remove,
#ifdef CONFIG_PM_SLEEP
	.freeze			= vtmem_freeze,
	.restore		= vtmem_restore,
#endif
};

/* debugfs: virtio_tmem/{stats,latency_ns,info,pools} */

static const char * const vtmem_stat_names[VTMEM_NR_STATS] = {
	[VTMEM_STAT_STATUS_OK]		= "status_ok",
	[VTMEM_STAT_STATUS_MISS]	= "status_miss",
	[VTMEM_STAT_STATUS_NOSPACE]	= "status_nospace",
	[VTMEM_STAT_STATUS_INVALID]	= "status_invalid",
	[VTMEM_STAT_STATUS_DENIED]	= "status_denied",
	[VTMEM_STAT_STATUS_FROZEN]	= "status_frozen",
	[VTMEM_STAT_STATUS_UNSUPPORTED]	= "status_unsupported",
	[VTMEM_STAT_STATUS_OTHER]	= "status_other",
	[VTMEM_STAT_ERR_PROTOCOL]	= "errors_protocol",
	[VTMEM_STAT_ERR_SUBMIT]		= "errors_submit",
	[VTMEM_STAT_TIMEOUTS]		= "timeouts",
	[VTMEM_STAT_NO_DEVICE]		= "no_device",
	[VTMEM_STAT_NO_QUEUE]		= "no_queue",
	[VTMEM_STAT_QUEUE_WAITS]	= "queue_waits",
	[VTMEM_STAT_ORPHANS_REAPED]	= "orphans_reaped",
	[VTMEM_STAT_ORPHAN_FLUSHES]	= "orphan_flushes",
	[VTMEM_STAT_UNORDERED]		= "ordered_refused",
	[VTMEM_STAT_SLOW_WAITS]		= "slow_waits",
	[VTMEM_STAT_SUSPENDED]		= "suspended_refused",
	[VTMEM_STAT_POOLS_REPAIRED]	= "pools_repaired",
	[VTMEM_STAT_CC_PUTS_OK]		= "cleancache_puts_ok",
	[VTMEM_STAT_CC_PUTS_REFUSED]	= "cleancache_puts_refused",
	[VTMEM_STAT_CC_GETS_HIT]	= "cleancache_gets_hit",
	[VTMEM_STAT_CC_GETS_MISS]	= "cleancache_gets_miss",
	[VTMEM_STAT_CC_FLUSH_PAGE]	= "cleancache_flush_page",
	[VTMEM_STAT_CC_FLUSH_INODE]	= "cleancache_flush_inode",
	[VTMEM_STAT_CC_FLUSH_FS]	= "cleancache_flush_fs",
	[VTMEM_STAT_CC_POOLS_CREATED]	= "cleancache_pools_created",
	[VTMEM_STAT_CC_POOL_FAILURES]	= "cleancache_pool_failures",
	[VTMEM_STAT_CC_POOLS_POISONED]	= "cleancache_pools_poisoned",
	[VTMEM_STAT_FS_STORES_OK]	= "frontswap_stores_ok",
	[VTMEM_STAT_FS_STORES_REFUSED]	= "frontswap_stores_refused",
	[VTMEM_STAT_FS_STORES_HUGE]	= "frontswap_stores_huge_refused",
	[VTMEM_STAT_FS_STORES_BLOCKED]	= "frontswap_stores_blocked",
	[VTMEM_STAT_FS_LOADS_HIT]	= "frontswap_loads_hit",
	[VTMEM_STAT_FS_LOADS_MISS]	= "frontswap_loads_miss",
	[VTMEM_STAT_FS_LOADS_LOST]	= "frontswap_loads_lost",
	[VTMEM_STAT_FS_FLUSH_PAGE]	= "frontswap_flush_page",
	[VTMEM_STAT_FS_FLUSH_AREA]	= "frontswap_flush_area",
	[VTMEM_STAT_FS_POOLS_CREATED]	= "frontswap_pools_created",
	[VTMEM_STAT_FS_POOL_FAILURES]	= "frontswap_pool_failures",
	[VTMEM_STAT_FS_PAGES_BROUGHT_BACK] = "frontswap_pages_brought_back",
	[VTMEM_STAT_HIBERNATION_REFUSED] = "hibernation_refused",
};

static const char * const vtmem_op_names[VTMEM_NR_OPS] = {
	[0]			= "none",
	[TMEM_OP_NEW_POOL]	= "new_pool",
	[TMEM_OP_DESTROY_POOL]	= "destroy_pool",
	[TMEM_OP_PUT_PAGE]	= "put_page",
	[TMEM_OP_GET_PAGE]	= "get_page",
	[TMEM_OP_FLUSH_PAGE]	= "flush_page",
	[TMEM_OP_FLUSH_OBJECT]	= "flush_object",
	[TMEM_OP_INFO]		= "info",
	[TMEM_OP_RESET]		= "reset",
};

static u64 vtmem_req_sum(unsigned int op)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += per_cpu_ptr(vtmem_stats, cpu)->req[op];
	return sum;
}

/* One "name value" line each: device state, requests by op, results. */
static int vtmem_counters_show(struct seq_file *m, void *v)
{
	struct vtmem_device *vd;
	unsigned int op;
	int s, idx;

	idx = srcu_read_lock(&vtmem_srcu);
	vd = vtmem_bound();
	seq_printf(m, "bound %d\n", vd ? 1 : 0);
	seq_printf(m, "broken %d\n",
		   vd ? test_bit(VTMEM_BROKEN, &vd->flags) : 0);
	seq_printf(m, "suspended %d\n",
		   vd ? test_bit(VTMEM_FROZEN, &vd->flags) : 0);
	seq_printf(m, "orphans %d\n", vd ? atomic_read(&vd->orphans) : 0);
	seq_printf(m, "generation %u\n", vd ? vd->gen : 0);
	seq_printf(m, "queues %u\n", vd ? vd->nqueues : 0);
	seq_printf(m, "shared %d\n", vd ? vd->shared : 0);
	seq_printf(m, "pools %u\n", vd ? vtmem_backends_live_pools(vd->gen) : 0);
	srcu_read_unlock(&vtmem_srcu, idx);
	seq_printf(m, "queue_wait_max_ns %lld\n",
		   (long long)atomic64_read(&vtmem_queue_wait_max_ns));

	for (op = 1; op < VTMEM_NR_OPS; op++)
		seq_printf(m, "requests_%s %llu\n", vtmem_op_names[op],
			   vtmem_req_sum(op));
	for (s = 0; s < VTMEM_NR_STATS; s++)
		seq_printf(m, "%s %llu\n", vtmem_stat_names[s],
			   vtmem_stat_sum(s));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vtmem_counters);

/*
 * Completed requests by op: a count and mean line per op, then one line
 * per non-empty log2 bucket of nanoseconds, "op lo_ns hi_ns count".
 */
static int vtmem_latency_show(struct seq_file *m, void *v)
{
	u64 count, sum, n;
	unsigned int op, b;
	int cpu;

	seq_puts(m, "# op count mean_ns\n");
	for (op = 1; op < VTMEM_NR_OPS; op++) {
		count = 0;
		sum = 0;
		for_each_possible_cpu(cpu) {
			struct vtmem_stats *st = per_cpu_ptr(vtmem_stats, cpu);

			sum += st->lat_sum_ns[op];
			for (b = 0; b < VTMEM_LAT_BUCKETS; b++)
				count += st->lat[op][b];
		}
		seq_printf(m, "%s %llu %llu\n", vtmem_op_names[op], count,
			   count ? div64_u64(sum, count) : 0);
	}
	seq_puts(m, "# op lo_ns hi_ns count\n");
	for (op = 1; op < VTMEM_NR_OPS; op++) {
		for (b = 0; b < VTMEM_LAT_BUCKETS; b++) {
			n = 0;
			for_each_possible_cpu(cpu)
				n += per_cpu_ptr(vtmem_stats, cpu)->lat[op][b];
			if (!n)
				continue;
			seq_printf(m, "%s %llu %llu %llu\n", vtmem_op_names[op],
				   b ? 1ULL << b : 0, 1ULL << (b + 1), n);
		}
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vtmem_latency);

/* A live INFO: what the device holds for this guest now. */
static int vtmem_info_show(struct seq_file *m, void *v)
{
	struct tmem_info info;
	struct vtmem_op op = {
		.op = TMEM_OP_INFO,
		.wait = VTMEM_WAIT_SLEEP,
		.out = &info,
		.out_len = sizeof(info),
	};
	int err;

	err = vtmem_request(&op);
	if (err)
		return err;
	seq_printf(m, "abi_version %u\n", le32_to_cpu(info.abi_version));
	seq_printf(m, "page_size %u\n", le32_to_cpu(info.page_size));
	seq_printf(m, "max_pools %u\n", le32_to_cpu(info.max_pools));
	seq_printf(m, "num_queues %u\n", le32_to_cpu(info.num_queues));
	seq_printf(m, "capacity_pages %llu\n",
		   le64_to_cpu(info.capacity_pages));
	seq_printf(m, "persistent_limit_pages %llu\n",
		   le64_to_cpu(info.persistent_limit_pages));
	seq_printf(m, "persistent_pages %llu\n",
		   le64_to_cpu(info.persistent_pages));
	seq_printf(m, "ephemeral_pages %llu\n",
		   le64_to_cpu(info.ephemeral_pages));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vtmem_info);

static void vtmem_debugfs_init(void)
{
	vtmem_debugfs = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("stats", 0444, vtmem_debugfs, NULL,
			    &vtmem_counters_fops);
	debugfs_create_file("latency_ns", 0444, vtmem_debugfs, NULL,
			    &vtmem_latency_fops);
	debugfs_create_file("info", 0444, vtmem_debugfs, NULL,
			    &vtmem_info_fops);
	vtmem_backends_debugfs(vtmem_debugfs);
}

static int __init vtmem_init(void)
{
	int err;

	/* 0 ends an id table; VIRTIO_DEV_ANY_ID would bind every device. */
	if (!device_id || device_id == VIRTIO_DEV_ANY_ID) {
		pr_err("invalid device_id %u\n", device_id);
		return -EINVAL;
	}
	id_table[0].device = device_id;

	err = init_srcu_struct(&vtmem_srcu);
	if (err)
		return err;
	err = -ENOMEM;
	vtmem_stats = alloc_percpu(struct vtmem_stats);
	if (!vtmem_stats)
		goto out_srcu;
	err = vtmem_backends_init();
	if (err)
		goto out_stats;
	vtmem_debugfs_init();

	err = register_virtio_driver(&vtmem_driver);
	if (err)
		goto out_debugfs;
	return 0;

out_debugfs:
	debugfs_remove_recursive(vtmem_debugfs);
	vtmem_backends_exit();
out_stats:
	free_percpu(vtmem_stats);
out_srcu:
	cleanup_srcu_struct(&vtmem_srcu);
	return err;
}

/*
 * Reached only while no backend is registered: cleancache and frontswap ops
 * cannot be unregistered, so registering them pins the module (see
 * vtmem_backends_device_up()).
 */
static void __exit vtmem_exit(void)
{
	unregister_virtio_driver(&vtmem_driver);
	debugfs_remove_recursive(vtmem_debugfs);
	vtmem_backends_exit();
	free_percpu(vtmem_stats);
	cleanup_srcu_struct(&vtmem_srcu);
}

module_init(vtmem_init);
module_exit(vtmem_exit);

MODULE_DESCRIPTION("Transcendent memory (cleancache, frontswap) on a virtio device");
MODULE_LICENSE("GPL");
