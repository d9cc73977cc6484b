/* The hostile guest's console, random numbers, clock and command line
 * (guest.h). */
#include "guest.h"

u64 ram_end;

/* The compiler may emit calls to these for struct copies and zeroing. */
void* memset(void* d, int c, size_t n) {
  u8* p = d;
  while (n--) *p++ = (u8)c;
  return d;
}
void* memcpy(void* d, const void* s, size_t n) {
  u8* p = d;
  const u8* q = s;
  while (n--) *p++ = *q++;
  return d;
}

/* ---- console ------------------------------------------------------------*/
void serial_sane(void) {
  outb(COM1 + 3, 0x03);  /* 8N1, DLAB off */
  outb(COM1 + 1, 0x00);  /* no interrupts */
  outb(COM1 + 4, 0x03);  /* DTR, RTS, no loopback */
}
void putch(char c) { outb(COM1, (u8)c); }
void puts_(const char* s) {
  while (*s) putch(*s++);
}
void put_dec(u64 v) {
  char buf[24];
  int n = 0;
  do {
    buf[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) putch(buf[--n]);
}
void put_hex(u64 v, int digits) {
  for (int i = digits - 1; i >= 0; i--) putch("0123456789abcdef"[(v >> (i * 4)) & 0xf]);
}
void put_kv(const char* key, u64 v) {
  putch(' ');
  puts_(key);
  putch('=');
  put_dec(v);
}

/* ---- random -------------------------------------------------------------*/
u64 rng_state;
u64 rnd64(void) {  /* splitmix64 */
  u64 z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
u32 rnd32(void) { return (u32)rnd64(); }
u64 rnd(u64 n) { return n ? rnd64() % n : 0; }
int chance(u32 percent) { return rnd(100) < percent; }

static const u32 kInteresting[] = {0,      1,      2,      3,          4,          7,
                                   8,      15,     16,     64,         127,        128,
                                   255,    256,    257,    4096,       0x7fff,     0x8000,
                                   0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff};
u32 interesting32(void) {
  return chance(70) ? kInteresting[rnd(sizeof(kInteresting) / sizeof(kInteresting[0]))] : rnd32();
}

u64 rand_addr(void) {
  switch (rnd(16)) {
    case 0: return ram_end - rnd(64);
    case 1: return ram_end + rnd(1 << 24);
    case 2: return 0xc0000000ull + rnd(0x40000000ull);
    case 3: return 0x100000000ull + rnd(1ull << 36);
    case 4: return ~0ull - rnd(0x2000);
    case 5: return rnd64() | (1ull << 40);
    default: {
      u64 a = SCRATCH_BASE + rnd(ram_end - SCRATCH_BASE);
      return chance(80) ? a & ~(u64)0xf : a;
    }
  }
}
u32 safe_low32(u32 v) { return v < SCRATCH_BASE ? v + (u32)SCRATCH_BASE : v; }
u32 safe_pfn(u32 pfn) {
  return pfn < (SCRATCH_BASE >> 12) ? pfn + (u32)(SCRATCH_BASE >> 12) : pfn;
}
u64 scratch_buf(u64 len) {
  u64 room = ram_end - SCRATCH_BASE - len;
  return (SCRATCH_BASE + rnd(room)) & ~(u64)0xf;
}

void fill_random(u64 addr, u64 len) {
  for (u64 i = 0; i + 8 <= len; i += 8) w64(addr + i, rnd64());
}

/* ---- time ---------------------------------------------------------------*/
struct pvclock {
  u32 version, pad0;
  u64 tsc_timestamp, system_time;
  u32 mul;
  int8_t shift;
  u8 flags, pad[2];
};
static volatile struct pvclock kvmclock __attribute__((aligned(64)));
const char* clock_name = "tsc-guess";
static int have_kvmclock;
static u64 tsc_khz = 2000000;

void clock_init(void) {
  u32 a, b, c, d;
  cpuid(0x40000000, &a, &b, &c, &d);
  int kvm = b == 0x4b4d564b && c == 0x564b4d56 && d == 0x4d;  /* "KVMKVMKVM" */
  u32 max = a;
  if (kvm && max >= 0x40000001) {
    u32 features;
    cpuid(0x40000001, &features, &b, &c, &d);
    u32 msr = (features & (1u << 3)) ? 0x4b564d01 : (features & 1) ? 0x12 : 0;
    if (msr) {
      wrmsr(msr, (u64)(uintptr_t)&kvmclock | 1);
      fence();
      if (kvmclock.version != 0 && kvmclock.mul != 0) {
        have_kvmclock = 1;
        clock_name = "kvmclock";
        return;
      }
    }
  }
  if (kvm && max >= 0x40000010) {
    cpuid(0x40000010, &a, &b, &c, &d);
    if (a) {
      tsc_khz = a;
      clock_name = "tsc-cpuid";
    }
  }
}

u64 now_ns(void) {
  if (have_kvmclock) {
    u32 v;
    u64 ns;
    do {
      v = kvmclock.version;
      fence();
      u64 delta = rdtsc() - kvmclock.tsc_timestamp;
      int8_t shift = kvmclock.shift;
      delta = shift < 0 ? delta >> -shift : delta << shift;
      ns = kvmclock.system_time + (u64)(((unsigned __int128)delta * kvmclock.mul) >> 32);
      fence();
    } while ((v & 1) || v != kvmclock.version);
    return ns;
  }
  u64 t = rdtsc();
  return t / tsc_khz * 1000000 + t % tsc_khz * 1000000 / tsc_khz;
}

/* ---- command line -------------------------------------------------------*/
const char* cmdline = "";

int starts(const char* s, const char* prefix) {
  while (*prefix)
    if (*s++ != *prefix++) return 0;
  return 1;
}
u64 parse_num(const char* s, const char** end) {
  u64 v = 0;
  int base = 10;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
  }
  for (;; s++) {
    int d;
    if (*s >= '0' && *s <= '9') d = *s - '0';
    else if (base == 16 && *s >= 'a' && *s <= 'f') d = *s - 'a' + 10;
    else if (base == 16 && *s >= 'A' && *s <= 'F') d = *s - 'A' + 10;
    else break;
    v = v * base + d;
  }
  if (end) *end = s;
  return v;
}
u64 option(const char* key, u64 fallback) {
  for (const char* s = cmdline; *s; s++) {
    if ((s == cmdline || s[-1] == ' ') && starts(s, key)) {
      const char* p = s;
      while (*p && *p != '=') p++;
      if (*p == '=') return parse_num(p + 1, 0);
    }
  }
  return fallback;
}

