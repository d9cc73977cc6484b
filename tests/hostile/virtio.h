/* The guest's virtio-mmio driver (virtio 1.x, 4.2), able to do things
 * right and to do them wrong: device discovery from the command line,
 * set-up with chosen or random features, queue sizes and ring places,
 * requests well formed or broken in a chosen way, kicks (virtio.c). */
#pragma once

#include "guest.h"

enum {
  kMagic = 0x000, kVersion = 0x004, kDeviceId = 0x008, kDeviceFeatures = 0x010,
  kDeviceFeaturesSel = 0x014, kDriverFeatures = 0x020, kDriverFeaturesSel = 0x024,
  kQueueSel = 0x030, kQueueNumMax = 0x034, kQueueNum = 0x038, kQueueReady = 0x044,
  kQueueNotify = 0x050, kInterruptStatus = 0x060, kInterruptAck = 0x064, kStatus = 0x070,
  kQueueDescLow = 0x080, kQueueDescHigh = 0x084, kQueueDriverLow = 0x090,
  kQueueDriverHigh = 0x094, kQueueDeviceLow = 0x0a0, kQueueDeviceHigh = 0x0a4,
  kConfigGeneration = 0x0fc, kConfig = 0x100,
};
#define ACK 1
#define DRIVER 2
#define DRIVER_OK 4
#define FEATURES_OK 8
#define NEEDS_RESET 64
#define VERSION_1_HI 1 /* bit 32 */
#define F_INDIRECT (1u << 28)
#define F_EVENT_IDX (1u << 29)

#define TYPE_NET 1
#define TYPE_BLOCK 2
#define TYPE_BALLOON 5

#define DESC_NEXT 1
#define DESC_WRITE 2
#define DESC_INDIRECT 4

struct desc {
  u64 addr;
  u32 len;
  u16 flags, next;
};

/* The guest's view of one queue it set up. */
struct gq {
  u64 desc, avail, used;
  u16 size;       /* what the guest wrote to QueueNum */
  u16 avail_idx;  /* next index it publishes */
  u16 next_desc;
  int live;       /* set up with a valid layout */
};

#define MAX_DEVICES 16
#define MAX_QUEUES 4
struct vdev {
  u64 base;
  u32 type, irq, nq;
  struct gq q[MAX_QUEUES];
};
extern struct vdev devs[MAX_DEVICES];
extern u32 ndevs;

/* What the attack did, for the progress lines (hostile.c). */
struct counters {
  u64 rounds, mmio, setups, chains, kicks, resets, bad_ok, i8042, serial, ports, strio;
};
extern struct counters stats;


/* The devices of the virtio_mmio.device= arguments, in window order. */
void find_devices(void);
void put_desc(struct gq* q, u16 i, u64 addr, u32 len, u16 flags, u16 next);
void publish(struct gq* q, u16 head);
void kick(struct vdev* d, u32 queue);
/* One request on queue `queue` of `d`: well formed, or broken in one of
 * the ways a hostile driver can break it. */
void make_chain(struct vdev* d, u32 queue);
/* Reset, features, queues, DRIVER_OK, with the perturbations a hostile
 * driver makes (`sane`: valid layouts); returns the status register. */
u32 driver_setup(struct vdev* d, int sane);
/* Resets `d` and sets all its queues up properly (VERSION_1 only, `size`
 * entries) in the area at `area`; queue 0 in *q. 0 when the device took it. */
int final_setup(struct vdev* d, u64 area, u16 size, struct gq* q);
/* Waits up to 5 s for the used ring of `q` to reach `idx`; 0 if it did. */
int wait_used(const struct gq* q, u16 idx);
