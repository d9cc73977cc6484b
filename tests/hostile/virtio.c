/* The guest's virtio-mmio driver (virtio.h). */
#include "virtio.h"

struct vdev devs[MAX_DEVICES];
u32 ndevs;

void find_devices(void) {
  for (const char* s = cmdline; *s && ndevs < MAX_DEVICES; s++) {
    if (!starts(s, "virtio_mmio.device=")) continue;
    const char* p = s + 19;
    while (*p && *p != '@') p++;
    if (*p != '@') continue;
    u64 base = parse_num(p + 1, &p);
    u64 irq = *p == ':' ? parse_num(p + 1, 0) : 0;
    if (r32(base + kMagic) != 0x74726976) continue;
    struct vdev* d = &devs[ndevs++];
    d->base = base;
    d->irq = (u32)irq;
    d->type = r32(base + kDeviceId);
    d->nq = 0;
    for (u32 i = 0; i < MAX_QUEUES; i++) {
      w32(base + kQueueSel, i);
      if (r32(base + kQueueNumMax) == 0) break;
      d->nq = i + 1;
    }
  }
}

/* ---- descriptor chains --------------------------------------------------*/
void put_desc(struct gq* q, u16 i, u64 addr, u32 len, u16 flags, u16 next) {
  u64 at = q->desc + (u64)(i % q->size) * 16;
  w64(at, addr);
  w32(at + 8, len);
  w16(at + 12, flags);
  w16(at + 14, next);
}

void publish(struct gq* q, u16 head) {
  w16(q->avail + 4 + (u64)(q->avail_idx % q->size) * 2, head);
  fence();
  q->avail_idx++;
  w16(q->avail + 2, q->avail_idx);
  fence();
}

/* One request's buffers, well formed for the device and queue, before any
 * corruption: addresses and lengths of each descriptor and whether the
 * device writes it. */
struct part {
  u64 addr;
  u32 len;
  int write;
};

static u32 build_parts(const struct vdev* d, u32 queue, struct part* p) {
  u32 n = 0;
  if (d->type == TYPE_BLOCK) {
    static const u32 kTypes[] = {0, 1, 4, 8, 0, 0, 1, 2, 11, 0xffffffff};
    u64 hdr = scratch_buf(16);
    u32 type = kTypes[rnd(10)];
    w32(hdr, type);
    w32(hdr + 4, rnd32());
    static const u64 kSectors[] = {0, 1, 2, 7, 8, 127, 128, 1ull << 40, ~0ull, ~0ull - 7};
    w64(hdr + 8, chance(50) ? rnd(256) : kSectors[rnd(10)]);
    p[n++] = (struct part){hdr, 16, 0};
    u32 datas = type == 4 ? (u32)rnd(2) : 1 + (u32)rnd(3);
    for (u32 i = 0; i < datas; i++) {
      static const u32 kLens[] = {512, 512, 4096, 1024, 1, 511, 513, 0, 65536, 20};
      u32 len = kLens[rnd(10)];
      u64 buf = scratch_buf(len);
      if (type == 1) fill_random(buf, len < 256 ? len : 256);
      p[n++] = (struct part){buf, len, type != 1};
    }
    p[n++] = (struct part){scratch_buf(1), 1, 1};
  } else if (d->type == TYPE_NET && queue == 1) {
    u64 hdr = scratch_buf(12);
    fill_random(hdr, 8);
    w32(hdr + 8, chance(50) ? 0 : rnd32());
    if (chance(70)) {
      w8(hdr, 0);  /* flags */
      w8(hdr + 1, 0);  /* gso_type NONE */
    }
    p[n++] = (struct part){hdr, 12, 0};
    u32 frags = 1 + (u32)rnd(3);
    for (u32 i = 0; i < frags; i++) {
      static const u32 kLens[] = {60, 64, 1514, 1500, 14, 0, 9000, 65550, 4096, 100};
      u32 len = kLens[rnd(10)];
      u64 buf = scratch_buf(len);
      fill_random(buf, len < 64 ? len : 64);
      p[n++] = (struct part){buf, len, 0};
    }
  } else if (d->type == TYPE_NET) {
    static const u32 kLens[] = {1526, 1526, 65562, 4096, 12, 11, 0, 64};
    u32 bufs = 1 + (u32)rnd(2);
    for (u32 i = 0; i < bufs; i++) {
      u32 len = kLens[rnd(8)];
      p[n++] = (struct part){scratch_buf(len), len, 1};
    }
  } else if (d->type == TYPE_BALLOON && queue < 2) {
    u32 pfns = 1 + (u32)rnd(256);
    u64 buf = scratch_buf(pfns * 4);
    u32 run = safe_pfn(rnd32());
    for (u32 i = 0; i < pfns; i++) {
      u32 pfn = chance(80) ? safe_pfn(run + i)
                           : chance(50) ? safe_pfn(rnd32()) : (u32)((ram_end >> 12) + rnd(16));
      w32(buf + i * 4, pfn);
    }
    p[n++] = (struct part){buf, chance(90) ? pfns * 4 : (u32)rnd(2048), 0};
  } else {
    /* balloon statistics: tag (u16) and value (u64) pairs */
    u32 count = (u32)rnd(16);
    u64 buf = scratch_buf(count * 10 + 10);
    for (u32 i = 0; i < count; i++) {
      w16(buf + i * 10, chance(80) ? (u16)rnd(10) : (u16)rnd32());
      w64(buf + i * 10 + 2, rnd64());
    }
    p[n++] = (struct part){buf, chance(90) ? count * 10 : (u32)rnd(200), chance(10)};
  }
  return n;
}

void make_chain(struct vdev* d, u32 queue) {
  struct gq* q = &d->q[queue];
  if (!q->live) return;
  struct part p[8];
  u32 n = build_parts(d, queue, p);
  int corrupt = chance(35);
  u32 how = (u32)rnd(12);
  if (corrupt && how == 0) {  /* a buffer outside RAM or across its end */
    u32 i = (u32)rnd(n);
    p[i].addr = rand_addr();
  }
  if (corrupt && how == 1) {  /* device-writable where it must read, or back */
    u32 i = (u32)rnd(n);
    p[i].write = !p[i].write;
  }
  if (corrupt && how == 2) {  /* an absurd length */
    u32 i = (u32)rnd(n);
    p[i].len = chance(50) ? 0 : 0xffffffffu - (u32)rnd(16);
  }
  u16 head = (u16)(q->next_desc % q->size);
  if (chance(25) || (corrupt && how >= 9)) {
    /* An indirect table in scratch; the head descriptor points at it. */
    u64 table = scratch_buf(16 * 16) & ~(u64)0xf;
    for (u32 i = 0; i < n; i++) {
      u64 at = table + i * 16;
      w64(at, p[i].addr);
      w32(at + 8, p[i].len);
      w16(at + 12, (u16)((i + 1 < n ? DESC_NEXT : 0) | (p[i].write ? DESC_WRITE : 0)));
      w16(at + 14, (u16)(i + 1));
    }
    u32 len = n * 16;
    u16 flags = DESC_INDIRECT;
    if (corrupt && how == 9) len = chance(50) ? len + 1 + (u32)rnd(15) : 0;
    if (corrupt && how == 10) w16(table + 12, DESC_INDIRECT);  /* nested */
    if (corrupt && how == 11) {
      flags |= DESC_NEXT;  /* indirect and next at once */
      if (chance(50)) w16(table + 14, (u16)(n + rnd(40)));  /* beyond the table */
    }
    put_desc(q, head, chance(95) ? table : rand_addr(), len, flags,
             (u16)((head + 1) % q->size));
    q->next_desc = (u16)(head + 1);
  } else {
    for (u32 i = 0; i < n; i++) {
      u16 at = (u16)(q->next_desc % q->size);
      u16 next = (u16)((at + 1) % q->size);
      if (corrupt && how == 3 && i + 1 == n) next = at;  /* a loop onto itself */
      if (corrupt && how == 4 && i + 1 == n) next = head;  /* back to the head */
      if (corrupt && how == 5) next = (u16)(q->size + rnd(1000));  /* beyond the table */
      u16 flags = (u16)((i + 1 < n || (corrupt && (how == 3 || how == 4))) ? DESC_NEXT : 0);
      if (p[i].write) flags |= DESC_WRITE;
      put_desc(q, at, p[i].addr, p[i].len, flags, next);
      q->next_desc = (u16)(at + 1);
    }
  }
  if (corrupt && how == 6) head = (u16)(q->size + rnd(60000 - q->size));  /* beyond the table */
  if (corrupt && how == 7) q->avail_idx += (u16)(q->size + rnd(1000));  /* idx jumps ahead */
  if (corrupt && how == 8) {  /* event index fields and flags at random */
    w16(q->avail, (u16)rnd(4));
    w16(q->avail + 4 + (u64)q->size * 2, (u16)rnd32());
  }
  publish(q, head);
  stats.chains++;
}

void kick(struct vdev* d, u32 queue) {
  w32(d->base + kQueueNotify, queue);
  stats.kicks++;
}

/* ---- driver set-up ------------------------------------------------------*/
/* Lays out queue `i` of `d` in scratch and tells the device; with `sane`,
 * a valid layout of `size` entries, else anything. */
static void setup_queue(struct vdev* d, u32 i, u16 size, int sane) {
  struct gq* q = &d->q[i];
  u64 base = d->base;
  w32(base + kQueueSel, i);
  u32 max = r32(base + kQueueNumMax);
  if (sane) {
    if (size > max) size = (u16)max;
    if (size == 0) size = 1;
    u64 area = scratch_buf(0x10000) & ~(u64)0xfff;
    q->desc = area;
    q->avail = area + (u64)size * 16;
    q->used = (q->avail + 6 + (u64)size * 2 + 3) & ~(u64)3;
    if (chance(10)) q->used = q->desc;  /* the device's writes land on the table */
    q->size = size;
    for (u64 a = q->avail; a < q->avail + 6 + (u64)size * 2; a += 2) w16(a, 0);
    for (u64 a = q->used; a < q->used + 6 + (u64)size * 8; a += 2) w16(a, 0);
  } else {
    q->desc = rand_addr();
    q->avail = rand_addr() | (chance(20) ? 1 : 0);
    q->used = rand_addr() | (chance(20) ? 2 : 0);
    q->size = chance(50) ? (u16)interesting32() : size;
  }
  q->avail_idx = 0;
  q->next_desc = 0;
  q->live = sane && q->size && (q->size & (q->size - 1)) == 0 && q->size <= max;
  w32(base + kQueueNum, q->size);
  w32(base + kQueueDescLow, safe_low32((u32)q->desc));
  w32(base + kQueueDescHigh, (u32)(q->desc >> 32));
  w32(base + kQueueDriverLow, safe_low32((u32)q->avail));
  w32(base + kQueueDriverHigh, (u32)(q->avail >> 32));
  w32(base + kQueueDeviceLow, safe_low32((u32)q->used));
  w32(base + kQueueDeviceHigh, (u32)(q->used >> 32));
  w32(base + kQueueReady, chance(95) ? 1 : (u32)interesting32());
}

u32 driver_setup(struct vdev* d, int sane) {
  u64 base = d->base;
  w32(base + kStatus, 0);
  stats.resets++;
  w32(base + kStatus, ACK);
  w32(base + kStatus, ACK | DRIVER);
  w32(base + kDeviceFeaturesSel, 0);
  u32 lo = r32(base + kDeviceFeatures);
  w32(base + kDeviceFeaturesSel, 1);
  u32 hi = r32(base + kDeviceFeatures);
  u32 want_lo = sane ? lo & (rnd32() | ~(F_INDIRECT | F_EVENT_IDX)) : rnd32();
  u32 want_hi = sane || chance(70) ? hi & (VERSION_1_HI | rnd32()) : rnd32();
  w32(base + kDriverFeaturesSel, 0);
  w32(base + kDriverFeatures, want_lo);
  w32(base + kDriverFeaturesSel, 1);
  w32(base + kDriverFeatures, want_hi);
  if (chance(5)) w32(base + kDriverFeaturesSel, rnd32());
  w32(base + kStatus, ACK | DRIVER | FEATURES_OK);
  static const u16 kSizes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  for (u32 i = 0; i < d->nq; i++) {
    if (!sane && chance(10)) continue;  /* a queue left out */
    setup_queue(d, i, kSizes[rnd(9)], sane || chance(60));
  }
  if (!sane && chance(10)) w32(base + kQueueSel, rnd32());
  w32(base + kStatus, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  stats.setups++;
  u32 status = r32(base + kStatus);
  if (!(status & DRIVER_OK)) {
    for (u32 i = 0; i < d->nq; i++) d->q[i].live = 0;
  }
  return status;
}

/* ---- the final requests' set-up -----------------------------------------*/
int final_setup(struct vdev* d, u64 area, u16 size, struct gq* q) {
  u64 base = d->base;
  w32(base + kStatus, 0);
  if (r32(base + kStatus) != 0) return -1;
  w32(base + kStatus, ACK);
  w32(base + kStatus, ACK | DRIVER);
  w32(base + kDriverFeaturesSel, 0);
  w32(base + kDriverFeatures, 0);
  w32(base + kDriverFeaturesSel, 1);
  w32(base + kDriverFeatures, VERSION_1_HI);
  w32(base + kStatus, ACK | DRIVER | FEATURES_OK);
  if (!(r32(base + kStatus) & FEATURES_OK)) return -2;
  for (u64 a = area; a < area + 0x4000; a += 8) w64(a, 0);
  for (u32 i = 0; i < d->nq; i++) {
    w32(base + kQueueSel, i);
    u64 qa = area + i * 0x1000;
    w32(base + kQueueNum, size);
    w32(base + kQueueDescLow, (u32)qa);
    w32(base + kQueueDescHigh, 0);
    w32(base + kQueueDriverLow, (u32)(qa + 0x400));
    w32(base + kQueueDriverHigh, 0);
    w32(base + kQueueDeviceLow, (u32)(qa + 0x800));
    w32(base + kQueueDeviceHigh, 0);
    w32(base + kQueueReady, 1);
    if (i == 0) *q = (struct gq){qa, qa + 0x400, qa + 0x800, size, 0, 0, 1};
  }
  w32(base + kStatus, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  u32 status = r32(base + kStatus);
  if (!(status & DRIVER_OK) || (status & NEEDS_RESET)) return -3;
  return 0;
}

int wait_used(const struct gq* q, u16 idx) {
  u64 deadline = now_ns() + 5000000000ull;
  while (now_ns() < deadline) {
    fence();
    if (r16(q->used + 2) == idx) return 0;
    pause();
  }
  return -1;
}

