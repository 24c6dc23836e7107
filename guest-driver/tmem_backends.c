// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_tmem: the cleancache and frontswap backends.
 *
 * One small function per callback, each one tmem operation, mapped as in
 * ABI.md ("Guest-side mapping"), after drivers/xen/tmem.c.  The kernel's pool
 * ids (a cleancache pool id, a swap type) index our own pool tables, whose
 * entries name the device pool together with the generation of the device
 * that made it: after the device is removed and another one bound, a pool id
 * the kernel still holds reaches the new device only once re-created there,
 * never as a number the new device may have given to another pool.
 *
 * Calling contexts (Linux 5.10): cleancache put_page and invalidate_page run
 * with interrupts off under the page-cache lock; frontswap invalidate_page
 * under the swap spinlock; cleancache get_page and frontswap store/load in
 * process context (store mostly from reclaim).  None of these sleeps or
 * allocates here.  Pool creation and destruction (init_fs, invalidate_fs,
 * frontswap init and invalidate_area) run in process context and take a
 * mutex.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/mutex.h>
#include <linux/atomic.h>
#include <linux/uuid.h>
#include <linux/swap.h>
#include <linux/cleancache.h>
#include <linux/frontswap.h>
#include <linux/seq_file.h>

#include "virtio_tmem.h"

static bool use_cleancache = true;
module_param_named(cleancache, use_cleancache, bool, 0444);
MODULE_PARM_DESC(cleancache, "register the cleancache backend (default 1)");

static bool use_frontswap = true;
module_param_named(frontswap, use_frontswap, bool, 0444);
MODULE_PARM_DESC(frontswap, "register the frontswap backend (default 1)");

static bool exclusive_gets;
module_param(exclusive_gets, bool, 0444);
MODULE_PARM_DESC(exclusive_gets,
		 "frontswap loads take the page out of tmem (TMEM_REQF_EXCLUSIVE; default 0)");

static bool writethrough;
module_param(writethrough, bool, 0444);
MODULE_PARM_DESC(writethrough,
		 "frontswap also writes every stored page to the swap device (default 0)");

/*
 * A pool as the kernel knows it.  @handle is read locklessly by the page
 * callbacks; everything else changes under vtmem_pool_lock.
 */
struct vtmem_pool {
	atomic64_t handle;	/* gen << 32 | device pool id; 0: no pool */
	bool used;		/* the kernel holds this pool id */
	u32 flags;		/* TMEM_POOL_* asked for */
	uuid_t uuid;		/* shared pools */
};

/* cleancache pool ids: one per mounted filesystem, so plenty. */
#define VTMEM_CC_POOLS	256

static struct vtmem_pool cc_pools[VTMEM_CC_POOLS];
static struct vtmem_pool fs_pools[MAX_SWAPFILES];
static DEFINE_MUTEX(vtmem_pool_lock);
/* Next cleancache id to try: ids are reused as late as possible. */
static unsigned int cc_next;
/* Backends registered (with vtmem_probe_lock held by our caller). */
static bool vtmem_registered;

static u64 vtmem_handle(u32 gen, u32 pool_id)
{
	return (u64)gen << 32 | pool_id;
}

/* Points @op at the device pool behind @p; false when there is none. */
static bool vtmem_pool_bind(struct vtmem_pool *p, struct vtmem_op *op)
{
	u64 h = atomic64_read(&p->handle);

	if (!h)
		return false;
	op->gen = h >> 32;
	op->pool_id = (u32)h;
	return true;
}

static int vtmem_new_pool(u32 flags, const uuid_t *uuid, u64 *handle)
{
	struct tmem_new_pool np = {
		.flags = cpu_to_le32(flags),
		.page_size = cpu_to_le32(TMEM_PAGE_SIZE),
	};
	struct vtmem_op op = {
		.op = TMEM_OP_NEW_POOL,
		.in = &np,
		.in_len = sizeof(np),
	};
	int err;

	if (flags & TMEM_POOL_SHARED)
		memcpy(np.uuid, uuid, TMEM_UUID_SIZE);
	err = vtmem_request(&op);
	if (err)
		return err;
	if (op.value > U32_MAX)
		return -EIO;
	*handle = vtmem_handle(op.gen, op.value);
	return 0;
}

/* NEW_POOL for @p on the bound device.  Called with vtmem_pool_lock. */
static int vtmem_pool_create(struct vtmem_pool *p)
{
	u64 handle = 0;
	int err = -EINVAL;

	/*
	 * A shared filesystem gets a private pool when the device has no
	 * shared pools or refuses this guest one, as Xen's tmem did: a
	 * private cache is always correct, only not shared.
	 */
	if ((p->flags & TMEM_POOL_SHARED) && vtmem_shared_pools())
		err = vtmem_new_pool(p->flags, &p->uuid, &handle);
	if (err == -EINVAL || err == TMEM_S_DENIED)
		err = vtmem_new_pool(p->flags & ~TMEM_POOL_SHARED, NULL,
				     &handle);
	atomic64_set(&p->handle, err ? 0 : handle);
	return err;
}

/* DESTROY_POOL, if the pool lives on the bound device. */
static void vtmem_pool_destroy(struct vtmem_pool *p)
{
	struct vtmem_op op = { .op = TMEM_OP_DESTROY_POOL };

	if (vtmem_pool_bind(p, &op))
		vtmem_request(&op);
	atomic64_set(&p->handle, 0);
}

static bool vtmem_pool_live(struct vtmem_pool *p)
{
	u64 h = atomic64_read(&p->handle);

	return h && h >> 32 == vtmem_device_gen();
}

#ifdef CONFIG_CLEANCACHE
/* The 192-bit filekey is the object id, word by word (as Xen's tmem). */
static void vtmem_cc_key(struct vtmem_op *op, struct cleancache_filekey *key)
{
	BUILD_BUG_ON(sizeof(key->u.key) != sizeof(op->oid));
	op->oid[0] = (u64)key->u.key[1] << 32 | key->u.key[0];
	op->oid[1] = (u64)key->u.key[3] << 32 | key->u.key[2];
	op->oid[2] = (u64)key->u.key[5] << 32 | key->u.key[4];
}

/* Fills @op for a page of kernel pool @pool; false if there is no pool. */
static bool vtmem_cc_bind(int pool, struct cleancache_filekey *key,
			  pgoff_t index, struct vtmem_op *op)
{
	if (pool < 0 || pool >= VTMEM_CC_POOLS)
		return false;
	/* The ABI's page index is 32 bits; larger files go uncached. */
	op->index = index;
	if (op->index != index)
		return false;
	vtmem_cc_key(op, key);
	return vtmem_pool_bind(&cc_pools[pool], op);
}

static void vtmem_cc_put_page(int pool, struct cleancache_filekey key,
			      pgoff_t index, struct page *page)
{
	struct vtmem_op op = { .op = TMEM_OP_PUT_PAGE, .page = page };

	if (vtmem_cc_bind(pool, &key, index, &op) && !vtmem_request(&op))
		vtmem_stat_inc(VTMEM_STAT_CC_PUTS_OK);
	else
		vtmem_stat_inc(VTMEM_STAT_CC_PUTS_REFUSED);
}

static int vtmem_cc_get_page(int pool, struct cleancache_filekey key,
			     pgoff_t index, struct page *page)
{
	struct vtmem_op op = { .op = TMEM_OP_GET_PAGE, .page = page };

	if (vtmem_cc_bind(pool, &key, index, &op) && !vtmem_request(&op)) {
		vtmem_stat_inc(VTMEM_STAT_CC_GETS_HIT);
		return 0;
	}
	vtmem_stat_inc(VTMEM_STAT_CC_GETS_MISS);
	return -1;
}

static void vtmem_cc_invalidate_page(int pool, struct cleancache_filekey key,
				     pgoff_t index)
{
	struct vtmem_op op = { .op = TMEM_OP_FLUSH_PAGE };

	if (vtmem_cc_bind(pool, &key, index, &op))
		vtmem_request(&op);
	vtmem_stat_inc(VTMEM_STAT_CC_FLUSH_PAGE);
}

static void vtmem_cc_invalidate_inode(int pool, struct cleancache_filekey key)
{
	struct vtmem_op op = { .op = TMEM_OP_FLUSH_OBJECT };

	if (vtmem_cc_bind(pool, &key, 0, &op))
		vtmem_request(&op);
	vtmem_stat_inc(VTMEM_STAT_CC_FLUSH_INODE);
}

static void vtmem_cc_invalidate_fs(int pool)
{
	struct vtmem_pool *p;

	if (pool < 0 || pool >= VTMEM_CC_POOLS)
		return;
	p = &cc_pools[pool];
	mutex_lock(&vtmem_pool_lock);
	if (p->used) {
		vtmem_pool_destroy(p);
		p->used = false;
	}
	mutex_unlock(&vtmem_pool_lock);
	vtmem_stat_inc(VTMEM_STAT_CC_FLUSH_FS);
}

/*
 * A new kernel pool id and its device pool.  The callback does not say
 * which superblock it is for, so a remount that initialises the same
 * superblock again (ext4, ro to rw) gets a new, empty pool; the old one
 * is orphaned until RESET (README.md).
 */
static int vtmem_cc_new_pool(size_t pagesize, u32 flags, const uuid_t *uuid)
{
	struct vtmem_pool *p;
	unsigned int i, n;
	int id = -1;

	if (pagesize != TMEM_PAGE_SIZE)
		return -1;

	mutex_lock(&vtmem_pool_lock);
	for (i = 0; i < VTMEM_CC_POOLS; i++) {
		n = (cc_next + i) % VTMEM_CC_POOLS;
		if (!cc_pools[n].used)
			break;
	}
	if (i == VTMEM_CC_POOLS) {
		pr_warn("cleancache: all %d pool ids in use\n", VTMEM_CC_POOLS);
		goto out_unlock;
	}
	p = &cc_pools[n];
	p->flags = flags;
	if (uuid)
		uuid_copy(&p->uuid, uuid);
	else
		uuid_copy(&p->uuid, &uuid_null);
	if (vtmem_pool_create(p)) {
		vtmem_stat_inc(VTMEM_STAT_CC_POOL_FAILURES);
		goto out_unlock;
	}
	p->used = true;
	cc_next = n + 1;
	id = n;
	vtmem_stat_inc(VTMEM_STAT_CC_POOLS_CREATED);
out_unlock:
	mutex_unlock(&vtmem_pool_lock);
	return id;
}

static int vtmem_cc_init_fs(size_t pagesize)
{
	return vtmem_cc_new_pool(pagesize, 0, NULL);
}

static int vtmem_cc_init_shared_fs(uuid_t *uuid, size_t pagesize)
{
	return vtmem_cc_new_pool(pagesize, TMEM_POOL_SHARED, uuid);
}

static const struct cleancache_ops vtmem_cleancache_ops = {
	.init_fs		= vtmem_cc_init_fs,
	.init_shared_fs		= vtmem_cc_init_shared_fs,
	.get_page		= vtmem_cc_get_page,
	.put_page		= vtmem_cc_put_page,
	.invalidate_page	= vtmem_cc_invalidate_page,
	.invalidate_inode	= vtmem_cc_invalidate_inode,
	.invalidate_fs		= vtmem_cc_invalidate_fs,
};
#endif /* CONFIG_CLEANCACHE */

#ifdef CONFIG_FRONTSWAP
/* ABI.md: oid[0] = offset >> 12, index = offset & 4095, one pool per type. */
static bool vtmem_fs_bind(unsigned int type, pgoff_t offset,
			  struct vtmem_op *op)
{
	if (type >= MAX_SWAPFILES)
		return false;
	op->oid[0] = offset >> 12;
	op->index = offset & 4095;
	return vtmem_pool_bind(&fs_pools[type], op);
}

static int vtmem_fs_store(unsigned int type, pgoff_t offset,
			  struct page *page)
{
	struct vtmem_op op = { .op = TMEM_OP_PUT_PAGE, .page = page };

	if (vtmem_fs_bind(type, offset, &op) && !vtmem_request(&op)) {
		vtmem_stat_inc(VTMEM_STAT_FS_STORES_OK);
		return 0;
	}
	vtmem_stat_inc(VTMEM_STAT_FS_STORES_REFUSED);
	return -1;
}

static int vtmem_fs_load(unsigned int type, pgoff_t offset,
			 struct page *page)
{
	struct vtmem_op op = {
		.op = TMEM_OP_GET_PAGE,
		.flags = exclusive_gets ? TMEM_REQF_EXCLUSIVE : 0,
		.page = page,
	};
	int err = -ENODEV;

	if (vtmem_fs_bind(type, offset, &op))
		err = vtmem_request(&op);
	if (!err) {
		vtmem_stat_inc(VTMEM_STAT_FS_LOADS_HIT);
		return 0;
	}
	vtmem_stat_inc(VTMEM_STAT_FS_LOADS_MISS);
	/*
	 * The kernel asks only for pages a frontswap backend stored.  Unless
	 * writethrough put them on the swap device too, a page we cannot
	 * return is gone; say so rather than let it pass silently.
	 */
	if (!writethrough)
		pr_err_ratelimited("frontswap: type %u offset %lu not returned (%d): that swapped-out page may be lost\n",
				   type, offset, err);
	return -1;
}

static void vtmem_fs_invalidate_page(unsigned int type, pgoff_t offset)
{
	struct vtmem_op op = { .op = TMEM_OP_FLUSH_PAGE };

	if (vtmem_fs_bind(type, offset, &op))
		vtmem_request(&op);
	vtmem_stat_inc(VTMEM_STAT_FS_FLUSH_PAGE);
}

static void vtmem_fs_invalidate_area(unsigned int type)
{
	struct vtmem_pool *p;

	if (type >= MAX_SWAPFILES)
		return;
	p = &fs_pools[type];
	mutex_lock(&vtmem_pool_lock);
	vtmem_pool_destroy(p);
	p->used = false;
	mutex_unlock(&vtmem_pool_lock);
	vtmem_stat_inc(VTMEM_STAT_FS_FLUSH_AREA);
}

/*
 * swapon of @type.  A pool still alive for the type is kept: the kernel
 * loads only offsets it stored after this swapon, and every store replaces
 * its handle, so nothing stale is ever returned from it.
 */
static void vtmem_fs_init(unsigned int type)
{
	struct vtmem_pool *p;

	if (type >= MAX_SWAPFILES)
		return;
	p = &fs_pools[type];
	mutex_lock(&vtmem_pool_lock);
	p->used = true;
	p->flags = TMEM_POOL_PERSIST;
	if (!vtmem_pool_live(p)) {
		if (vtmem_pool_create(p))
			vtmem_stat_inc(VTMEM_STAT_FS_POOL_FAILURES);
		else
			vtmem_stat_inc(VTMEM_STAT_FS_POOLS_CREATED);
	}
	mutex_unlock(&vtmem_pool_lock);
}

static struct frontswap_ops vtmem_frontswap_ops = {
	.init			= vtmem_fs_init,
	.store			= vtmem_fs_store,
	.load			= vtmem_fs_load,
	.invalidate_page	= vtmem_fs_invalidate_page,
	.invalidate_area	= vtmem_fs_invalidate_area,
};
#endif /* CONFIG_FRONTSWAP */

#ifdef CONFIG_FRONTSWAP
static bool vtmem_register_frontswap(void)
{
	if (!use_frontswap)
		return false;
	if (writethrough)
		frontswap_writethrough(true);
	if (exclusive_gets)
		frontswap_tmem_exclusive_gets(true);
	frontswap_register_ops(&vtmem_frontswap_ops);
	pr_info("frontswap enabled%s%s\n",
		writethrough ? ", writethrough" : "",
		exclusive_gets ? ", exclusive gets" : "");
	return true;
}
#else
static bool vtmem_register_frontswap(void)
{
	if (use_frontswap)
		pr_warn("frontswap: kernel built without CONFIG_FRONTSWAP\n");
	return false;
}
#endif

#ifdef CONFIG_CLEANCACHE
static bool vtmem_register_cleancache(void)
{
	int err;

	if (!use_cleancache)
		return false;
	/* -EBUSY: cleancache takes one backend only, and has one. */
	err = cleancache_register_ops(&vtmem_cleancache_ops);
	if (err) {
		pr_warn("cleancache: not registered (%d), another backend holds it\n",
			err);
		return false;
	}
	pr_info("cleancache enabled\n");
	return true;
}
#else
static bool vtmem_register_cleancache(void)
{
	if (use_cleancache)
		pr_warn("cleancache: kernel built without CONFIG_CLEANCACHE\n");
	return false;
}
#endif

/*
 * Registration is for good: neither cleancache nor frontswap can drop a
 * backend.  The module pins itself first, so that it can never be unloaded
 * under the kernel's feet; callbacks that arrive with no device bound fail
 * safely (puts refused, gets miss).
 */
static void vtmem_register(void)
{
	bool fs, cc;

	__module_get(THIS_MODULE);
	fs = vtmem_register_frontswap();
	cc = vtmem_register_cleancache();
	if (fs || cc)
		pr_info("backends registered: the module cannot be unloaded\n");
	else
		module_put(THIS_MODULE);
	vtmem_registered = true;
}

static void vtmem_pools_recreate(struct vtmem_pool *pools, unsigned int n,
				 enum vtmem_stat created, enum vtmem_stat failed)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		if (!pools[i].used || vtmem_pool_live(&pools[i]))
			continue;
		vtmem_stat_inc(vtmem_pool_create(&pools[i]) ? failed : created);
	}
}

/*
 * A device was bound and published (vtmem_probe_lock held).  The first one
 * registers the backends, whose init callbacks then create the pools; a
 * later one re-creates the pools the kernel still holds, empty, since the
 * new device started with RESET.
 */
void vtmem_backends_device_up(u32 gen)
{
	mutex_lock(&vtmem_pool_lock);
	vtmem_pools_recreate(cc_pools, VTMEM_CC_POOLS,
			     VTMEM_STAT_CC_POOLS_CREATED,
			     VTMEM_STAT_CC_POOL_FAILURES);
	vtmem_pools_recreate(fs_pools, MAX_SWAPFILES,
			     VTMEM_STAT_FS_POOLS_CREATED,
			     VTMEM_STAT_FS_POOL_FAILURES);
	mutex_unlock(&vtmem_pool_lock);

	/* Not under vtmem_pool_lock: registration calls the init callbacks. */
	if (!vtmem_registered)
		vtmem_register();
}

/* The device of generation @gen is gone; no callback can reach it now. */
void vtmem_backends_device_gone(u32 gen)
{
	unsigned int i, lost = 0;

	mutex_lock(&vtmem_pool_lock);
	for (i = 0; i < VTMEM_CC_POOLS; i++)
		if (atomic64_read(&cc_pools[i].handle) >> 32 == gen)
			atomic64_set(&cc_pools[i].handle, 0);
	for (i = 0; i < MAX_SWAPFILES; i++) {
		if (atomic64_read(&fs_pools[i].handle) >> 32 != gen)
			continue;
		atomic64_set(&fs_pools[i].handle, 0);
		lost++;
	}
	mutex_unlock(&vtmem_pool_lock);
	if (lost && !writethrough)
		pr_warn("device removed with %u frontswap pool(s): swapped-out pages held there are lost\n",
			lost);
}

unsigned int vtmem_backends_live_pools(u32 gen)
{
	unsigned int i, n = 0;

	if (!gen)
		return 0;
	for (i = 0; i < VTMEM_CC_POOLS; i++)
		n += atomic64_read(&cc_pools[i].handle) >> 32 == gen;
	for (i = 0; i < MAX_SWAPFILES; i++)
		n += atomic64_read(&fs_pools[i].handle) >> 32 == gen;
	return n;
}

static void vtmem_pools_show_one(struct seq_file *m, const char *backend,
				 unsigned int id, struct vtmem_pool *p)
{
	u64 h = atomic64_read(&p->handle);

	if (!p->used)
		return;
	if (h)
		seq_printf(m, "%s %u %u %u", backend, id, (u32)h,
			   (u32)(h >> 32));
	else
		seq_printf(m, "%s %u - -", backend, id);
	seq_printf(m, " %s%s\n",
		   p->flags & TMEM_POOL_PERSIST ? "persistent" : "ephemeral",
		   p->flags & TMEM_POOL_SHARED ? ",shared" : "");
}

/* "backend kernel_id device_pool_id generation kind", one pool a line. */
static int vtmem_pools_show(struct seq_file *m, void *v)
{
	unsigned int i;

	mutex_lock(&vtmem_pool_lock);
	for (i = 0; i < VTMEM_CC_POOLS; i++)
		vtmem_pools_show_one(m, "cleancache", i, &cc_pools[i]);
	for (i = 0; i < MAX_SWAPFILES; i++)
		vtmem_pools_show_one(m, "frontswap", i, &fs_pools[i]);
	mutex_unlock(&vtmem_pool_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vtmem_pools);

void vtmem_backends_debugfs(struct dentry *dir)
{
	debugfs_create_file("pools", 0444, dir, NULL, &vtmem_pools_fops);
}
