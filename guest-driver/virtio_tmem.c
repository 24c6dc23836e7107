// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_tmem: transcendent memory on a virtio device (the virtio half).
 *
 * The frontend is drivers/xen/tmem.c with the hypercall replaced by a queue
 * submission: every tmem operation is one descriptor chain [header, data,
 * response] on a request queue, and the caller spins on the used ring until
 * the device answers.  cleancache calls us with interrupts off under the
 * page-cache lock, so nothing here sleeps or allocates: each queue owns one
 * preallocated request slot and is serialised by an irqsave spinlock, and
 * waits are bounded by timeout_ms.  A device that misses the bound is marked
 * broken for good: its queues are never touched again, puts are refused and
 * gets miss.
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
#include <linux/rcupdate.h>
#include <linux/ktime.h>
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
 * A request is waited for by spinning, often with interrupts off under the
 * page-cache lock: a bound near the hard-lockup threshold (watchdog_thresh,
 * 10 s by default) would turn a stalled daemon into lockup reports, so the
 * bound is capped well below it.
 */
#define VTMEM_TIMEOUT_MAX_MS	5000

static unsigned int timeout_ms = 2000;

static int timeout_ms_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;
	int ret;

	ret = kstrtouint(val, 0, &v);
	if (ret)
		return ret;
	if (v < 1 || v > VTMEM_TIMEOUT_MAX_MS)
		return -EINVAL;
	WRITE_ONCE(*(unsigned int *)kp->arg, v);
	return 0;
}

static const struct kernel_param_ops timeout_ms_ops = {
	.set = timeout_ms_set,
	.get = param_get_uint,
};

module_param_cb(timeout_ms, &timeout_ms_ops, &timeout_ms, 0644);
MODULE_PARM_DESC(timeout_ms,
		 "bound on one request in ms, 1 to 5000; a device that misses it is marked broken (default 2000)");

static bool bounce_gets = true;
module_param(bounce_gets, bool, 0444);
MODULE_PARM_DESC(bounce_gets,
		 "GET into a driver-owned page and copy on success, so a late answer of a broken device cannot write the caller's page (default 1)");

static bool indirect_desc;
module_param(indirect_desc, bool, 0444);
MODULE_PARM_DESC(indirect_desc,
		 "accept VIRTIO_RING_F_INDIRECT_DESC (every request then allocates its table with GFP_ATOMIC; default 0)");

/* More queues than this buys nothing for a synchronous, per-cpu protocol. */
#define VTMEM_MAX_QUEUES	64

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

/*
 * A request queue.  Requests are synchronous, so the lock is held from
 * submission to completion and the queue never has more than one chain in
 * flight: one slot is all it needs.
 */
struct vtmem_queue {
	spinlock_t lock;		/* submission to completion, IRQs off */
	struct virtqueue *vq;
	struct vtmem_slot *slot;
	struct page *bounce;	/* GET destination when bounce_gets */
	u64 seq;		/* request tag: per-queue sequence number */
} ____cacheline_aligned_in_smp;

struct vtmem_device {
	struct virtio_device *vdev;
	u32 gen;		/* generation: tells pool ids of devices apart */
	bool shared;		/* TMEM_F_SHARED negotiated */
	unsigned long flags;
	unsigned int nqueues;
	struct vtmem_queue *queues;
	struct tmem_info info;	/* INFO at probe, little-endian */
};

#define VTMEM_BROKEN	0	/* bit in vtmem_device.flags */

struct vtmem_stats __percpu *vtmem_stats;

/* The bound device; callbacks look it up under rcu_read_lock(). */
static struct vtmem_device __rcu *vtmem_dev;
/* Serialises probe and remove: one device at a time. */
static DEFINE_MUTEX(vtmem_probe_lock);
static u32 vtmem_last_gen;
static struct dentry *vtmem_debugfs;

u64 vtmem_stat_sum(enum vtmem_stat s)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += per_cpu_ptr(vtmem_stats, cpu)->cnt[s];
	return sum;
}

u32 vtmem_device_gen(void)
{
	struct vtmem_device *vd;
	u32 gen;

	rcu_read_lock();
	vd = rcu_dereference(vtmem_dev);
	gen = vd ? vd->gen : 0;
	rcu_read_unlock();
	return gen;
}

bool vtmem_shared_pools(void)
{
	struct vtmem_device *vd;
	bool shared;

	rcu_read_lock();
	vd = rcu_dereference(vtmem_dev);
	shared = vd && vd->shared;
	rcu_read_unlock();
	return shared;
}

static void vtmem_mark_broken(struct vtmem_device *vd, const char *why, u32 op)
{
	if (!test_and_set_bit(VTMEM_BROKEN, &vd->flags))
		dev_err(&vd->vdev->dev,
			"%s (op %u): device marked broken, every later put is refused and every later get misses\n",
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
		sg_init_table(&data, 1);
		sg_set_page(&data, bounce_gets ? q->bounce : op->page,
			    TMEM_PAGE_SIZE, 0);
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
 * Spins on the used ring.  Interrupts may be off, so time is read from
 * ktime_get() rather than jiffies, which would not advance on this CPU.
 */
static int vtmem_wait(struct vtmem_queue *q, ktime_t start, void **token,
		      unsigned int *len)
{
	ktime_t deadline = ktime_add_ms(start, max(READ_ONCE(timeout_ms), 1U));

	for (;;) {
		*token = virtqueue_get_buf(q->vq, len);
		if (*token)
			return 0;
		if (virtqueue_is_broken(q->vq))
			return -EIO;
		if (ktime_after(ktime_get(), deadline))
			return -ETIMEDOUT;
		cpu_relax();
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
		if (op->op == TMEM_OP_GET_PAGE && bounce_gets)
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

/* One request on device @vd, on the queue of this CPU. */
static int vtmem_submit(struct vtmem_device *vd, struct vtmem_op *op)
{
	struct vtmem_queue *q;
	unsigned long irqflags;
	unsigned int len = 0;
	void *token = NULL;
	ktime_t start;
	int ret;

	if (WARN_ON_ONCE(op->op >= VTMEM_NR_OPS ||
			 op->in_len > sizeof_field(struct vtmem_slot, payload) ||
			 op->out_len > sizeof_field(struct vtmem_slot, payload)))
		return -EINVAL;
	if (op->gen && op->gen != vd->gen) {
		/* A pool id of a removed device: never send it to this one. */
		vtmem_stat_inc(VTMEM_STAT_NO_DEVICE);
		return -ENODEV;
	}
	op->gen = vd->gen;

	q = &vd->queues[raw_smp_processor_id() % vd->nqueues];
	spin_lock_irqsave(&q->lock, irqflags);
	/*
	 * Checked under the lock: once a request of this queue timed out,
	 * its chain may still be in the device's hands and the queue is
	 * never touched again.
	 */
	if (test_bit(VTMEM_BROKEN, &vd->flags)) {
		vtmem_stat_inc(VTMEM_STAT_NO_DEVICE);
		ret = -ENODEV;
		goto out_unlock;
	}

	this_cpu_inc(vtmem_stats->req[op->op]);
	start = ktime_get();
	ret = vtmem_add(q, op);
	if (ret) {
		vtmem_stat_inc(VTMEM_STAT_ERR_SUBMIT);
		if (virtqueue_is_broken(q->vq))
			vtmem_mark_broken(vd, "queue broken", op->op);
		ret = -EIO;
		goto out_unlock;
	}
	virtqueue_kick(q->vq);

	ret = vtmem_wait(q, start, &token, &len);
	if (ret == -ETIMEDOUT) {
		vtmem_stat_inc(VTMEM_STAT_TIMEOUTS);
		vtmem_mark_broken(vd, "request timed out", op->op);
		goto out_unlock;
	}
	if (ret) {
		vtmem_stat_inc(VTMEM_STAT_ERR_PROTOCOL);
		vtmem_mark_broken(vd, "queue broken", op->op);
		goto out_unlock;
	}
	vtmem_count_latency(op->op, start);

	ret = vtmem_complete(q, op, token, len);
	if (ret == -EIO) {
		vtmem_stat_inc(VTMEM_STAT_ERR_PROTOCOL);
		dev_warn_ratelimited(&vd->vdev->dev,
				     "op %u: answer outside the ABI (len %u, status %d)\n",
				     op->op, len,
				     (s32)le32_to_cpu(q->slot->resp.status));
	}
out_unlock:
	spin_unlock_irqrestore(&q->lock, irqflags);
	return ret;
}

int vtmem_request(struct vtmem_op *op)
{
	struct vtmem_device *vd;
	int ret;

	rcu_read_lock();
	vd = rcu_dereference(vtmem_dev);
	if (vd) {
		ret = vtmem_submit(vd, op);
	} else {
		vtmem_stat_inc(VTMEM_STAT_NO_DEVICE);
		ret = -ENODEV;
	}
	rcu_read_unlock();
	return ret;
}

static int vtmem_info(struct vtmem_device *vd, struct tmem_info *info)
{
	struct vtmem_op op = {
		.op = TMEM_OP_INFO,
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
	struct vtmem_op reset = { .op = TMEM_OP_RESET };
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

/*
 * The generic vhost-user device has no config space telling the queue count,
 * and the transport refuses (-ENOENT) a queue index the device does not
 * offer: ask for one queue per CPU and step down until the device agrees.
 * No callbacks: completion is polled, and the device's single MSI-X vector
 * then stays with the config interrupt instead of falling back to INTx.
 */
static int vtmem_find_vqs(struct vtmem_device *vd)
{
	unsigned int n = min_t(unsigned int, nr_cpu_ids, VTMEM_MAX_QUEUES);
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
 * The slots of a broken device are kept: a device that stopped answering
 * may still write into the response (and GET destination) of its last
 * requests.  A few pages per queue, once, is a cheap price for that.
 */
static void vtmem_free_queues(struct vtmem_device *vd)
{
	unsigned int i;

	if (test_bit(VTMEM_BROKEN, &vd->flags)) {
		dev_warn(&vd->vdev->dev,
			 "keeping the request slots of the broken device\n");
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

	err = vtmem_find_vqs(vd);
	if (err)
		goto out_free;

	err = -ENOMEM;
	for (i = 0; i < vd->nqueues; i++) {
		q = &vd->queues[i];
		spin_lock_init(&q->lock);
		q->slot = kzalloc(sizeof(*q->slot), GFP_KERNEL);
		if (!q->slot)
			goto out_del_vqs;
		if (bounce_gets) {
			q->bounce = alloc_page(GFP_KERNEL);
			if (!q->bounce)
				goto out_del_vqs;
		}
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

	err = vtmem_init_queues(vd);
	if (err)
		goto out_free;

	/* The rings are started by DRIVER_OK, and INFO needs them. */
	virtio_device_ready(vdev);

	err = vtmem_hello(vd);
	if (err)
		goto out_reset;

	vd->gen = ++vtmem_last_gen;
	if (!vd->gen)
		vd->gen = ++vtmem_last_gen;
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
	kfree(vd);
out_unlock:
	mutex_unlock(&vtmem_probe_lock);
	return err;
}

static void vtmem_remove(struct virtio_device *vdev)
{
	struct vtmem_device *vd = vdev->priv;

	mutex_lock(&vtmem_probe_lock);
	RCU_INIT_POINTER(vtmem_dev, NULL);
	mutex_unlock(&vtmem_probe_lock);
	/*
	 * Every request runs inside rcu_read_lock() and is bounded by
	 * timeout_ms: after this no callback is using vd.
	 */
	synchronize_rcu();
	vtmem_backends_device_gone(vd->gen);

	vdev->config->reset(vdev);
	vdev->config->del_vqs(vdev);
	vtmem_free_queues(vd);
	kfree(vd);
}

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
	[VTMEM_STAT_CC_PUTS_OK]		= "cleancache_puts_ok",
	[VTMEM_STAT_CC_PUTS_REFUSED]	= "cleancache_puts_refused",
	[VTMEM_STAT_CC_GETS_HIT]	= "cleancache_gets_hit",
	[VTMEM_STAT_CC_GETS_MISS]	= "cleancache_gets_miss",
	[VTMEM_STAT_CC_FLUSH_PAGE]	= "cleancache_flush_page",
	[VTMEM_STAT_CC_FLUSH_INODE]	= "cleancache_flush_inode",
	[VTMEM_STAT_CC_FLUSH_FS]	= "cleancache_flush_fs",
	[VTMEM_STAT_CC_POOLS_CREATED]	= "cleancache_pools_created",
	[VTMEM_STAT_CC_POOL_FAILURES]	= "cleancache_pool_failures",
	[VTMEM_STAT_FS_STORES_OK]	= "frontswap_stores_ok",
	[VTMEM_STAT_FS_STORES_REFUSED]	= "frontswap_stores_refused",
	[VTMEM_STAT_FS_LOADS_HIT]	= "frontswap_loads_hit",
	[VTMEM_STAT_FS_LOADS_MISS]	= "frontswap_loads_miss",
	[VTMEM_STAT_FS_FLUSH_PAGE]	= "frontswap_flush_page",
	[VTMEM_STAT_FS_FLUSH_AREA]	= "frontswap_flush_area",
	[VTMEM_STAT_FS_POOLS_CREATED]	= "frontswap_pools_created",
	[VTMEM_STAT_FS_POOL_FAILURES]	= "frontswap_pool_failures",
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
	int s;

	rcu_read_lock();
	vd = rcu_dereference(vtmem_dev);
	seq_printf(m, "bound %d\n", vd ? 1 : 0);
	seq_printf(m, "broken %d\n",
		   vd ? test_bit(VTMEM_BROKEN, &vd->flags) : 0);
	seq_printf(m, "generation %u\n", vd ? vd->gen : 0);
	seq_printf(m, "queues %u\n", vd ? vd->nqueues : 0);
	seq_printf(m, "shared %d\n", vd ? vd->shared : 0);
	seq_printf(m, "pools %u\n", vd ? vtmem_backends_live_pools(vd->gen) : 0);
	rcu_read_unlock();

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

	vtmem_stats = alloc_percpu(struct vtmem_stats);
	if (!vtmem_stats)
		return -ENOMEM;
	vtmem_debugfs_init();

	err = register_virtio_driver(&vtmem_driver);
	if (err)
		goto out_debugfs;
	return 0;

out_debugfs:
	debugfs_remove_recursive(vtmem_debugfs);
	free_percpu(vtmem_stats);
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
	free_percpu(vtmem_stats);
}

module_init(vtmem_init);
module_exit(vtmem_exit);

MODULE_DESCRIPTION("Transcendent memory (cleancache, frontswap) on a virtio device");
MODULE_LICENSE("GPL");
