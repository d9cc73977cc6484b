/* The hostile guest: a bare-metal x86-64 program Ember boots through its
 * PVH entry (entry.S), which for a bounded time attacks every device Ember
 * gives it, then checks that a valid request is still served.
 *
 * Command line (the PVH start info's; Ember appends virtio_mmio.device=
 * for each virtio device, which is how the guest finds them):
 *   hostile.seed=N    the random seed (same seed, same attack)
 *   hostile.secs=N    seconds of attack (default 20)
 *   hostile.idle=N    seconds of doing nothing afterwards, with the devices
 *                     left as the attack left them (default 4): a VMM
 *                     thread that spins shows there
 *   hostile.strio=0   no string port I/O (rep outsb/insb)
 *
 * The attack, in rounds picked at random: random and chosen values at every
 * virtio-mmio register offset and width (and between the windows); driver
 * set-ups with random features, queue sizes and ring placements, valid and
 * broken descriptor chains (loops, out-of-range indices, nested and
 * misshapen indirect tables, buffers outside RAM or across its end), kick
 * storms, resets in the middle of requests, DRIVER_OK with bad queues in a
 * loop; the 8250 (0x3f8-0x3ff) and i8042 (0x60, 0x64: never the reset
 * command) written at random and in bursts that never read; unowned ports.
 * Every address the guest hands a device is at SCRATCH_BASE or above, or
 * outside RAM, so the guest's own code, tables and final buffers (below
 * 16 MiB) stay intact whatever a device does with them.
 *
 * Then, in order: the idle phase; i8042 and 8250 back to sane; the first
 * virtio-blk device reset and driven properly to read sector 0, whose
 * bytes go to the console; a virtio-net frame sent properly, if there is
 * a net device; the i8042 reset command. The console lines the host-side
 * test reads all start with "HOSTILE-".
 *
 * Files: entry.S (PVH entry, page tables, long mode), hostile.ld (the
 * ELF's layout), guest.{h,c} (instructions, console, random numbers, clock,
 * command line), virtio.{h,c} (the driver, right and wrong), hostile.c (the
 * attack and the final checks). CMake builds build/ember_hostile_guest.elf;
 * tests/integration/test_hostile_guest.py runs it; tools/hostile.sh runs
 * that test for longer. */
#include "guest.h"
#include "virtio.h"

struct counters stats;
static int strio = 1;  /* hostile.strio */

/* ---- the rounds ---------------------------------------------------------*/
/* Offsets the register rounds prefer: every register, some config space,
 * and holes. */
static const u16 kRegisters[] = {
    kMagic, kVersion, kDeviceId, 0x00c, kDeviceFeatures, kDeviceFeaturesSel, kDriverFeatures,
    kDriverFeaturesSel, kQueueSel, kQueueNumMax, kQueueNum, kQueueReady, kQueueNotify,
    kInterruptStatus, kInterruptAck, kStatus, kQueueDescLow, kQueueDescHigh, kQueueDriverLow,
    kQueueDriverHigh, kQueueDeviceLow, kQueueDeviceHigh, kConfigGeneration, kConfig,
    kConfig + 4, kConfig + 8, kConfig + 0x10, kConfig + 0x20, 0x0b0, 0x0c0};

static u32 mmio_value(u16 off) {
  switch (off) {
    case kQueueDescLow: case kQueueDriverLow: case kQueueDeviceLow:
      return safe_low32(chance(50) ? (u32)rand_addr() : rnd32());
    case kQueueDescHigh: case kQueueDriverHigh: case kQueueDeviceHigh:
      return chance(60) ? 0 : interesting32();
    case kStatus:
      return chance(60) ? (u32)rnd(16) | (chance(20) ? 0xf0 : 0) : interesting32();
    case kQueueNum: {
      static const u32 kNums[] = {0, 1, 2, 3, 4, 8, 16, 17, 64, 128, 256, 257, 512, 32768, 65535};
      return chance(80) ? kNums[rnd(15)] : rnd32();
    }
    case kQueueSel: case kQueueNotify: case kDeviceFeaturesSel: case kDriverFeaturesSel:
      return chance(80) ? (u32)rnd(5) : interesting32();
    default:
      return interesting32();
  }
}

/* Random and chosen values at every offset and width of the windows. */
static void round_mmio(void) {
  u32 n = 100 + (u32)rnd(400);
  u64 windows_end = devs[ndevs - 1].base + 0x1000;
  for (u32 i = 0; i < n; i++) {
    u64 base;
    u16 off;
    if (chance(3)) {  /* the windows past the last device's: nobody's */
      base = windows_end + rnd(4) * 0x1000;
      off = (u16)rnd(0x1000);
    } else {
      base = devs[rnd(ndevs)].base;
      off = chance(75) ? kRegisters[rnd(sizeof(kRegisters) / sizeof(kRegisters[0]))]
                       : (u16)rnd(0x1000);
    }
    u64 a = base + off;
    u32 width = chance(85) ? 4 : 1u << rnd(4);
    if (width > 1 && chance(10)) a += 1 + rnd(width - 1);  /* misaligned */
    if (a + width > 0xfec00000ull) continue;  /* the IOAPIC is KVM's, not the target */
    if (chance(30)) {
      if (width == 1) (void)r8(a);
      else if (width == 2) (void)r16(a);
      else if (width == 4) (void)r32(a);
      else (void)r64(a);
    } else {
      u32 v = mmio_value(off);
      if (width == 1) w8(a, (u8)v);
      else if (width == 2) w16(a, (u16)v);
      else if (width == 4) w32(a, v);
      else w64(a, (u64)mmio_value(off) << 32 | v);
    }
    stats.mmio++;
  }
}

/* A driver sets a device up (sanely or not), makes requests, kicks in
 * storms, and sometimes resets it in the middle. */
static void round_driver(void) {
  struct vdev* d = &devs[rnd(ndevs)];
  int sane = chance(75);
  u32 status = driver_setup(d, sane);
  if (!(status & DRIVER_OK) && chance(70)) return;
  u32 requests = 1 + (u32)rnd(64);
  for (u32 r = 0; r < requests; r++) {
    u32 queue = (u32)rnd(d->nq ? d->nq : 1);
    make_chain(d, queue);
    if (chance(30)) kick(d, queue);
    if (chance(2)) {  /* reset with requests in flight */
      kick(d, queue);
      w32(d->base + kStatus, 0);
      stats.resets++;
      return;
    }
  }
  u32 storm = chance(20) ? 200 + (u32)rnd(2000) : 1 + (u32)rnd(8);
  for (u32 k = 0; k < storm; k++) kick(d, chance(90) ? (u32)rnd(d->nq ? d->nq : 1) : rnd32());
  if (chance(30)) w32(d->base + kInterruptAck, rnd32());
  if (chance(30)) (void)r32(d->base + kInterruptStatus);
  if (chance(20)) {  /* the config space, as a driver reads and writes it */
    for (u32 i = 0; i < 16; i++) {
      if (chance(50)) (void)r32(d->base + kConfig + rnd(64));
      else w32(d->base + kConfig + rnd(64), interesting32());
    }
  }
  if (chance(25)) {
    w32(d->base + kStatus, 0);
    stats.resets++;
  }
}

/* Reset, then DRIVER_OK with a queue the device must refuse, in a loop:
 * every refusal is a guest-caused message. */
static void round_bad_driver_ok(void) {
  struct vdev* d = &devs[rnd(ndevs)];
  u32 loops = 50 + (u32)rnd(500);
  for (u32 i = 0; i < loops; i++) {
    w32(d->base + kStatus, 0);
    w32(d->base + kStatus, ACK | DRIVER);
    w32(d->base + kDriverFeaturesSel, 1);
    w32(d->base + kDriverFeatures, VERSION_1_HI);
    w32(d->base + kStatus, ACK | DRIVER | FEATURES_OK);
    w32(d->base + kQueueSel, 0);
    w32(d->base + kQueueNum, chance(50) ? 3 : 0);
    w32(d->base + kQueueReady, 1);
    w32(d->base + kStatus, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    stats.bad_ok++;
  }
}

/* Never the CPU reset command (0xfe at 0x64): that ends the run. */
static u8 i8042_command(void) {
  u8 v = (u8)rnd32();
  return v == 0xfe ? 0xff : v;
}

static u8 str_buf[4096];

static void round_i8042(void) {
  if (chance(40)) {  /* a burst that never reads: the output queue fills */
    u8 value = chance(50) ? 0xff : chance(50) ? 0xf2 : (u8)rnd32();
    if (strio && chance(70)) {  /* a page of bytes per exit */
      for (u32 i = 0; i < sizeof(str_buf); i++) str_buf[i] = value;
      u32 pages = 1 + (u32)rnd(16);
      for (u32 i = 0; i < pages; i++) outsb(0x60, str_buf, sizeof(str_buf));
      stats.strio += pages;
      stats.i8042 += pages * sizeof(str_buf);
    } else {
      u32 n = 500 + (u32)rnd(4000);
      for (u32 i = 0; i < n; i++) outb(0x60, value);
      stats.i8042 += n;
    }
    return;
  }
  u32 n = 50 + (u32)rnd(500);
  for (u32 i = 0; i < n; i++) {
    switch (rnd(6)) {
      case 0: outb(0x64, i8042_command()); break;
      case 1: case 2: outb(0x60, (u8)rnd32()); break;
      case 3: (void)inb(0x60); break;
      case 4: (void)inb(0x64); break;
      case 5: outb(0x64, chance(50) ? 0xd2 : 0xd3); outb(0x60, (u8)rnd32()); break;
    }
    stats.i8042++;
  }
}

static void round_serial(void) {
  u32 n = 50 + (u32)rnd(300);
  u32 thr = 0;
  for (u32 i = 0; i < n; i++) {
    u16 reg = (u16)rnd(8);
    if (chance(40)) {
      (void)inb(COM1 + reg);
    } else {
      /* Bytes that would reach the console are few, to keep it readable. */
      if (reg == 0 && ++thr > 8 && !(inb(COM1 + 3) & 0x80) && !(inb(COM1 + 4) & 0x10)) continue;
      outb(COM1 + reg, (u8)rnd32());
    }
    stats.serial++;
  }
  if (strio && chance(20)) {  /* in loopback, output comes back as input */
    outb(COM1 + 4, 0x10);
    for (u32 i = 0; i < sizeof(str_buf); i++) str_buf[i] = (u8)rnd32();
    outsb(COM1, str_buf, sizeof(str_buf));
    insb(COM1, str_buf, 1 + rnd(sizeof(str_buf)));
    stats.strio++;
  }
  serial_sane();
}

/* Ports nobody owns (and other widths on the owned ones); never those of
 * KVM's own PIC, PIT and speaker port. */
static void round_ports(void) {
  static const u16 kPorts[] = {0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff,
                               0x60,  0x64,  0x62,  0x63,  0x65,  0x70,  0x71,  0x80,
                               0xcf8, 0xcfc, 0x2f8, 0x3f0, 0x3f7, 0x400, 0x510, 0xfff0};
  u32 n = 20 + (u32)rnd(100);
  for (u32 i = 0; i < n; i++) {
    u16 port = kPorts[rnd(sizeof(kPorts) / sizeof(kPorts[0]))];
    u32 width = 1u << rnd(3);
    if (port == 0x64 || port == 0x63 || (port == 0x62 && width == 4)) width = 1;
    if (chance(50)) {
      if (width == 1) (void)inb(port);
      else if (width == 2) (void)inw(port);
      else (void)inl(port);
    } else if (width == 1) {
      outb(port, port == 0x64 ? i8042_command() : (u8)rnd32());
    } else if (width == 2) {
      outw(port, (u16)rnd32());
    } else {
      outl(port, rnd32());
    }
    stats.ports++;
  }
  serial_sane();
}

/* The states the known defects need, made on purpose before the idle
 * phase: a balloon whose queue broke while its statistics timer runs, and a
 * block device reset with reads in flight. */
static void end_of_attack_traps(void) {
  for (u32 i = 0; i < ndevs; i++) {
    struct vdev* d = &devs[i];
    if (d->type != TYPE_BALLOON && d->type != TYPE_BLOCK) continue;
    if (!(driver_setup(d, 1) & DRIVER_OK)) continue;
    if (d->type == TYPE_BALLOON) {
      struct gq* q = &d->q[0];
      if (!q->live) continue;
      publish(q, (u16)(q->size + 1));  /* a head beyond the table: broken */
      kick(d, 0);
    } else {
      struct gq* q = &d->q[0];
      if (!q->live) continue;
      for (u32 r = 0; r < 32 && r * 3 + 3 <= q->size; r++) {
        u16 h = (u16)(r * 3);
        u64 hdr = scratch_buf(16), buf = scratch_buf(65536), st = scratch_buf(1);
        w32(hdr, 0);
        w32(hdr + 4, 0);
        w64(hdr + 8, r * 128);
        put_desc(q, h, hdr, 16, DESC_NEXT, (u16)(h + 1));
        put_desc(q, (u16)(h + 1), buf, 65536, DESC_NEXT | DESC_WRITE, (u16)(h + 2));
        put_desc(q, (u16)(h + 2), st, 1, DESC_WRITE, 0);
        publish(q, h);
      }
      kick(d, 0);
      w32(d->base + kStatus, 0);
    }
  }
}

/* ---- the final, valid requests ------------------------------------------*/
static u32 fnv1a(u64 addr, u32 len) {
  u32 h = 2166136261u;
  for (u32 i = 0; i < len; i++) h = (h ^ r8(addr + i)) * 16777619u;
  return h;
}

static void final_block_read(void) {
  struct vdev* d = 0;
  for (u32 i = 0; i < ndevs && !d; i++)
    if (devs[i].type == TYPE_BLOCK) d = &devs[i];
  puts_("HOSTILE-RESULT blk");
  if (!d) {
    puts_(" error=no-block-device\n");
    return;
  }
  struct gq q;
  u64 area = FINAL_BASE;
  int rc = final_setup(d, area, 8, &q);
  if (rc) {
    puts_(" error=setup");
    put_dec((u64)-rc);
    puts_(" status=");
    put_dec(r32(d->base + kStatus));
    putch('\n');
    return;
  }
  u64 hdr = area + 0x4000, buf = area + 0x5000, st = area + 0x6000;
  w32(hdr, 0);  /* VIRTIO_BLK_T_IN */
  w32(hdr + 4, 0);
  w64(hdr + 8, 0);
  for (u32 i = 0; i < 512; i += 8) w64(buf + i, 0x5a5a5a5a5a5a5a5aull);
  w8(st, 0xff);
  put_desc(&q, 0, hdr, 16, DESC_NEXT, 1);
  put_desc(&q, 1, buf, 512, DESC_NEXT | DESC_WRITE, 2);
  put_desc(&q, 2, st, 1, DESC_WRITE, 0);
  publish(&q, 0);
  kick(d, 0);
  if (wait_used(&q, 1)) {
    puts_(" error=timeout status=");
    put_dec(r32(d->base + kStatus));
    putch('\n');
    return;
  }
  puts_(" base=0x");
  put_hex(d->base, 8);
  put_kv("status", r8(st));
  put_kv("len", r32(q.used + 4 + 4));
  puts_(" fnv=");
  put_hex(fnv1a(buf, 512), 8);
  puts_(" head=");
  for (u32 i = 0; i < 32; i++) put_hex(r8(buf + i), 2);
  putch('\n');
}

/* A frame of ethertype 0x88b5 (local experimental) to the broadcast
 * address, its payload naming the seed, for the host to catch on the TAP. */
static void final_net_send(u64 seed) {
  struct vdev* d = 0;
  for (u32 i = 0; i < ndevs && !d; i++)
    if (devs[i].type == TYPE_NET) d = &devs[i];
  if (!d) return;
  puts_("HOSTILE-RESULT net");
  struct gq q;
  u64 area = FINAL_BASE + 0x10000;
  int rc = final_setup(d, area, 8, &q);
  if (rc) {
    puts_(" error=setup");
    put_dec((u64)-rc);
    putch('\n');
    return;
  }
  struct gq tx = {area + 0x1000, area + 0x1400, area + 0x1800, 8, 0, 0, 1};
  u64 hdr = area + 0x4000, frame = area + 0x5000;
  for (u32 i = 0; i < 12; i++) w8(hdr + i, 0);
  for (u32 i = 0; i < 6; i++) w8(frame + i, 0xff);
  static const u8 kSrc[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x42};
  for (u32 i = 0; i < 6; i++) w8(frame + 6 + i, kSrc[i]);
  w8(frame + 12, 0x88);
  w8(frame + 13, 0xb5);
  static const char kText[] = "EMBER-HOSTILE seed=";
  u32 len = 14;
  for (u32 i = 0; kText[i]; i++) w8(frame + len++, (u8)kText[i]);
  char digits[24];
  int nd = 0;
  do {
    digits[nd++] = (char)('0' + seed % 10);
    seed /= 10;
  } while (seed);
  while (nd) w8(frame + len++, (u8)digits[--nd]);
  while (len < 60) w8(frame + len++, 0);
  put_desc(&tx, 0, hdr, 12, DESC_NEXT, 1);
  put_desc(&tx, 1, frame, len, 0, 0);
  publish(&tx, 0);
  kick(d, 1);
  if (wait_used(&tx, 1)) {
    puts_(" error=timeout\n");
    return;
  }
  puts_(" sent=1\n");
}

/* ---- main ---------------------------------------------------------------*/
static void progress(const char* what, u64 t0) {
  puts_("HOSTILE-");
  puts_(what);
  put_kv("ms", (now_ns() - t0) / 1000000);
  put_kv("rounds", stats.rounds);
  put_kv("mmio", stats.mmio);
  put_kv("setups", stats.setups);
  put_kv("chains", stats.chains);
  put_kv("kicks", stats.kicks);
  put_kv("resets", stats.resets);
  put_kv("bad_driver_ok", stats.bad_ok);
  put_kv("i8042", stats.i8042);
  put_kv("serial", stats.serial);
  put_kv("ports", stats.ports);
  put_kv("strio", stats.strio);
  putch('\n');
}

void hostile_main(const struct start_info* si) {
  serial_sane();
  if (si->cmdline_paddr) cmdline = (const char*)(uintptr_t)si->cmdline_paddr;
  const struct memmap_entry* map = (const void*)(uintptr_t)si->memmap_paddr;
  for (u32 i = 0; si->memmap_paddr && i < si->memmap_entries; i++) {
    if (map[i].type == 1 && map[i].addr <= SCRATCH_BASE && map[i].addr + map[i].size > SCRATCH_BASE)
      ram_end = map[i].addr + map[i].size;
  }
  if (ram_end > 0xc0000000ull) ram_end = 0xc0000000ull;
  u64 seed = option("hostile.seed", 1);
  u64 secs = option("hostile.secs", 20);
  u64 idle = option("hostile.idle", 4);
  strio = (int)option("hostile.strio", 1);
  rng_state = seed;
  clock_init();
  find_devices();
  puts_("\nHOSTILE-START");
  put_kv("seed", seed);
  put_kv("secs", secs);
  put_kv("idle", idle);
  put_kv("devices", ndevs);
  put_kv("ram_mib", ram_end >> 20);
  puts_(" clock=");
  puts_(clock_name);
  putch('\n');
  for (u32 i = 0; i < ndevs; i++) {
    puts_("HOSTILE-DEVICE base=0x");
    put_hex(devs[i].base, 8);
    put_kv("type", devs[i].type);
    put_kv("irq", devs[i].irq);
    put_kv("queues", devs[i].nq);
    putch('\n');
  }
  if (ram_end < SCRATCH_BASE + (16 << 20) || ndevs == 0) {
    puts_("HOSTILE-ERROR needs 32 MiB of RAM or more and a virtio device\n");
    outb(0x64, 0xfe);
    for (;;) __asm__ volatile("hlt");
  }

  u64 t0 = now_ns();
  u64 end = t0 + secs * 1000000000ull;
  u64 next_report = t0 + 5000000000ull;
  while (now_ns() < end) {
    switch (rnd(10)) {
      case 0: case 1: case 2: round_mmio(); break;
      case 3: case 4: case 5: round_driver(); break;
      case 6: round_bad_driver_ok(); break;
      case 7: round_i8042(); break;
      case 8: round_serial(); break;
      case 9: round_ports(); break;
    }
    stats.rounds++;
    if (now_ns() >= next_report) {
      progress("PROGRESS", t0);
      next_report += 5000000000ull;
    }
  }
  end_of_attack_traps();
  progress("ATTACK-END", t0);

  /* Nothing at all: no port, no MMIO, no kick. */
  puts_("HOSTILE-IDLE-BEGIN\n");
  u64 idle_end = now_ns() + idle * 1000000000ull;
  while (now_ns() < idle_end) pause();
  puts_("HOSTILE-IDLE-END\n");
  /* A moment for a host that samples every 100 ms to see the line. */
  for (u64 t = now_ns() + 300000000ull; now_ns() < t;) pause();

  /* Back to sane: the i8042's waiting bytes read and counted, one at a
   * time up to 4096, then (a queue without a cap) a page per exit. */
  u64 pending = 0;
  while ((inb(0x64) & 1) && pending < 4096) {
    (void)inb(0x60);
    pending++;
  }
  while ((inb(0x64) & 1) && pending < (64ull << 20)) {
    insb(0x60, str_buf, sizeof(str_buf));
    pending += sizeof(str_buf);
  }
  serial_sane();
  puts_("HOSTILE-I8042");
  put_kv("pending", pending);
  putch('\n');
  final_block_read();
  final_net_send(seed);
  puts_("HOSTILE-DONE\n");
  outb(0x64, 0xfe);
  for (;;) __asm__ volatile("hlt");
}
