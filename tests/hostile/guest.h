/* The hostile guest's machine: types, its memory map, the instructions it
 * needs, and the console, random numbers, clock and command line every
 * part uses (guest.c). Bare metal, long mode, interrupts off for good. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

/* ---- memory map ---------------------------------------------------------
 * 1 MiB: code, data, page tables, stack (entry.S, hostile.ld).
 * 8 MiB: the final requests' rings and buffers; no device ever hears of
 *        this range during the attack.
 * 16 MiB up to the end of RAM: scratch, where every ring and buffer of the
 *        attack lives; devices may write anything there. */
#define FINAL_BASE 0x800000ull
#define SCRATCH_BASE 0x1000000ull

extern u64 ram_end;  /* end of the RAM range holding SCRATCH_BASE */

/* ---- instructions -------------------------------------------------------*/
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) {
  u8 v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline u16 inw(u16 port) {
  u16 v;
  __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline u32 inl(u16 port) {
  u32 v;
  __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline void outsb(u16 port, const void* buf, u64 n) {
  __asm__ volatile("rep outsb" : "+S"(buf), "+c"(n) : "d"(port) : "memory");
}
static inline void insb(u16 port, void* buf, u64 n) {
  __asm__ volatile("rep insb" : "+D"(buf), "+c"(n) : "d"(port) : "memory");
}
static inline void fence(void) { __asm__ volatile("lock; addl $0, (%%rsp)" ::: "memory"); }
static inline void pause(void) { __asm__ volatile("pause"); }
static inline u64 rdtsc(void) {
  u32 lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((u64)hi << 32) | lo;
}
static inline void cpuid(u32 leaf, u32* a, u32* b, u32* c, u32* d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}
static inline void wrmsr(u32 msr, u64 v) {
  __asm__ volatile("wrmsr" ::"c"(msr), "a"((u32)v), "d"((u32)(v >> 32)));
}

static inline void w8(u64 a, u8 v) { *(volatile u8*)a = v; }
static inline void w16(u64 a, u16 v) { *(volatile u16*)a = v; }
static inline void w32(u64 a, u32 v) { *(volatile u32*)a = v; }
static inline void w64(u64 a, u64 v) { *(volatile u64*)a = v; }
static inline u8 r8(u64 a) { return *(volatile u8*)a; }
static inline u16 r16(u64 a) { return *(volatile u16*)a; }
static inline u32 r32(u64 a) { return *(volatile u32*)a; }
static inline u64 r64(u64 a) { return *(volatile u64*)a; }

/* ---- console (COM1, polled: Ember's transmitter is always empty) -------*/
#define COM1 0x3f8
void serial_sane(void);  /* 8N1, no interrupts, no loopback */
void putch(char c);
void puts_(const char* s);
void put_dec(u64 v);
void put_hex(u64 v, int digits);
void put_kv(const char* key, u64 v);  /* " key=value" */

/* ---- random (splitmix64, seeded from the command line) ------------------*/
extern u64 rng_state;
u64 rnd64(void);
u32 rnd32(void);
u64 rnd(u64 n);  /* 0 .. n-1 */
int chance(u32 percent);
u32 interesting32(void);  /* 0, 1, powers of two and their neighbours, ... */
/* An address a device may be handed: in scratch, or outside RAM (across
 * its end, just past it, in the MMIO hole, above 4 GiB, wrapping). */
u64 rand_addr(void);
/* A 32-bit value written as the low half of an address: with a zero high
 * half it must still not reach below SCRATCH_BASE. */
u32 safe_low32(u32 v);
u32 safe_pfn(u32 pfn);
/* A scratch buffer of `len` bytes that fits in RAM (for the well-formed
 * parts of requests). */
u64 scratch_buf(u64 len);
void fill_random(u64 addr, u64 len);

/* ---- time (kvmclock, else the TSC) --------------------------------------*/
extern const char* clock_name;
void clock_init(void);
u64 now_ns(void);

/* ---- command line -------------------------------------------------------*/
struct start_info {  /* struct hvm_start_info */
  u32 magic, version, flags, nr_modules;
  u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
  u32 memmap_entries, reserved;
};
struct memmap_entry {
  u64 addr, size;
  u32 type, reserved;
};
extern const char* cmdline;
int starts(const char* s, const char* prefix);
u64 parse_num(const char* s, const char** end);
/* The number after "key=" on the command line, or `fallback`. */
u64 option(const char* key, u64 fallback);
