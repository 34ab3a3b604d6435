/* KFENCE fault reporter for Allocators (see KfenceSignalHook.cs); x86-64 Linux, glibc ucontext layout.
 * Build: gcc -O2 -fno-stack-protector -fno-asynchronous-unwind-tables -fcf-protection=none -fpic \
 *        -fvisibility=hidden -mno-red-zone -nostdlib -c kfence_fault_handler.c -o h.o
 *        ld -T kfence_fault_handler.ld -o h.elf h.o && objcopy -O binary -j .all h.elf h.bin
 * then paste h.bin into KfenceSignalHook.Code and hook_ptr's offset (nm h.elf) into SlotOffset. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <ucontext.h>

/* Mirrors KfenceSignalHook.HookTable (C#). */
struct pool { uint64_t start, end, objects, text, stride; };
struct hook { uint64_t old_action; uint64_t count; struct pool pools[16]; };

static inline void sys_write(const void* buf, unsigned long n) {
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "0"(1L), "D"(2L), "S"(buf), "d"(n) : "rcx", "r11", "memory");
}

__attribute__((section(".text.entry")))
void handler(int sig, siginfo_t* si, void* ucv) {
    extern struct hook* const hook_ptr;
    struct hook* h = *(struct hook* volatile*)&hook_ptr;
    uint64_t a = (uint64_t)si->si_addr;
    uint64_t n = h->count;
    for (uint64_t k = 0; k < n && k < 16; k++) {
        struct pool* p = &h->pools[k];
        if (a < p->start || a >= p->end) continue;
        ucontext_t* uc = (ucontext_t*)ucv;
        int write = (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
        char line[96];
        uint64_t off = a - p->start, page = off >> 12, i;
        int len = 0;
        const char* s = "BUG: KFENCE: ";
        while (*s) line[len++] = *s++;
        s = (page & 1) ? "use-after-free " : "out-of-bounds ";
        while (*s) line[len++] = *s++;
        s = write ? "write at 0x" : "read at 0x";
        while (*s) line[len++] = *s++;
        for (int b = 60; b >= 0; b -= 4) line[len++] = "0123456789abcdef"[(a >> b) & 15];
        line[len++] = '\n';
        line[len++] = '\n';
        sys_write(line, len);
        /* Object i is on page 2i+1; a guard page's nearer half names the object it guards. */
        if (page & 1) i = page >> 1;
        else if ((off & 4095) < 2048 && page > 0) i = (page >> 1) - 1;
        else i = page >> 1;
        if (i >= p->objects) i = p->objects - 1;
        const char* t = (const char*)(p->text + i * p->stride);
        unsigned long tl = 0;
        while (tl < p->stride && t[tl]) tl++;
        sys_write(t, tl);
        break;
    }
    ((void (*)(int, siginfo_t*, void*))h->old_action)(sig, si, ucv);
}
__attribute__((section(".zslot"), used)) struct hook* const hook_ptr = 0;
