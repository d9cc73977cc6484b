/* The hostile guest's entry: Ember jumps here through the Xen PVH note in
 * 32-bit protected mode, paging off, %ebx = the hvm_start_info's address.
 * It maps the first 4 GiB 1:1 with 2 MiB pages (the MMIO hole included),
 * switches to long mode and calls hostile_main(start_info). Interrupts stay
 * off for good: the guest never takes one, so it needs no IDT. */

	.section .note.Xen, "a", @note
	.balign 4
	.long 4                 /* n_namesz: "Xen\0" */
	.long 4                 /* n_descsz: a 32-bit entry */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long pvh_start

	.section .text.entry, "ax"
	.code32
	.globl pvh_start
pvh_start:
	cli
	cld
	movl %ebx, start_info
	movl $boot_stack_top, %esp

	/* PD entries: 2048 pages of 2 MiB (0-4 GiB); the hole (3-4 GiB)
	 * uncached. */
	movl $pd, %edi
	xorl %ecx, %ecx
1:	movl %ecx, %eax
	shll $21, %eax
	orl $0x83, %eax         /* present, writable, 2 MiB */
	cmpl $1536, %ecx
	jb 2f
	orl $0x18, %eax         /* PWT | PCD */
2:	movl %eax, (%edi,%ecx,8)
	movl $0, 4(%edi,%ecx,8)
	incl %ecx
	cmpl $2048, %ecx
	jb 1b
	/* PDPT: four PDs; PML4: one PDPT. */
	movl $pdpt, %edi
	xorl %ecx, %ecx
3:	movl %ecx, %eax
	shll $12, %eax
	addl $pd, %eax
	orl $0x3, %eax
	movl %eax, (%edi,%ecx,8)
	movl $0, 4(%edi,%ecx,8)
	incl %ecx
	cmpl $4, %ecx
	jb 3b
	movl $pdpt, %eax
	orl $0x3, %eax
	movl %eax, pml4
	movl $0, pml4+4

	movl %cr4, %eax
	orl $0x20, %eax         /* PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx  /* EFER */
	rdmsr
	orl $0x100, %eax        /* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax   /* PG | PE */
	movl %eax, %cr0
	lgdt gdt_desc
	ljmp $0x08, $long_mode

	.code64
long_mode:
	movl $0x10, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movq $boot_stack_top, %rsp
	movl start_info, %edi
	call hostile_main
4:	hlt
	jmp 4b

	.section .rodata
	.balign 8
gdt:
	.quad 0
	.quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
	.quad 0x00cf92000000ffff    /* 0x10: data */
gdt_end:
gdt_desc:
	.word gdt_end - gdt - 1
	.long gdt

	.section .bss
	.balign 4096
pml4:	.skip 4096
pdpt:	.skip 4096
pd:	.skip 4096 * 4
boot_stack:
	.skip 65536
boot_stack_top:
	.balign 8
	.globl start_info
start_info:
	.skip 8
