using Allocators.Kasan;
using Allocators.Mmu;

namespace Allocators.Tests.Kasan;

/// <summary>KASAN through the software MMU: kernel reads and writes, copy_to_user/copy_from_user, and vmalloc.</summary>
public sealed unsafe class KasanMmuTests
{
    [Fact]
    public void KernelReadsAndWritesThroughTheDirectMapAreChecked()
    {
        using var sys = KasanSlabTests.NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        byte* p = (byte*)sys.Slab.Kmalloc(13);
        ulong va = sys.Kernel.DirectMapAddressOf((ulong)sys.Memory.VirtToPhys(p));
        sys.Kernel.Write<ulong>(va, 0x1122334455667788);
        sys.Kernel.Write<int>(va + 8, 7);
        Assert.Equal(0x1122334455667788UL, sys.Kernel.Read<ulong>(va));
        Assert.Empty(kasan.Reports);
        // Bytes 12..15: byte 13 is past the object. The write is refused and leaves memory alone.
        byte before = p[13];
        Assert.Throws<KasanException>(() => sys.Kernel.Write<int>(va + 12, -1));
        KasanSlabTests.Single(kasan, "slab-out-of-bounds", p + 13, 4, write: true);
        Assert.Equal(before, p[13]);
        Assert.Equal(7, *(int*)(p + 8) & 0xff);
        Assert.Contains("in KernelAddressSpace.Write", kasan.Reports[0].Text, StringComparison.Ordinal);
        sys.Slab.Kfree(p);
        Assert.Throws<KasanException>(() => sys.Kernel.Read<byte>(va));
        Assert.Equal("slab-use-after-free", kasan.Reports[^1].Type);
    }

    [Fact]
    public void TheAccessorAndReadBytesAreCheckedToo()
    {
        using var sys = KasanSlabTests.NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        byte* p = (byte*)sys.Slab.Kmalloc(64);
        ulong va = sys.Kernel.DirectMapAddressOf((ulong)sys.Memory.VirtToPhys(p));
        var accessor = sys.Kernel.GetAccessor();
        accessor.Write<long>(va + 56, 1);
        Assert.Throws<KasanException>(() => sys.Kernel.GetAccessor().Read<long>(va + 72));
        Assert.Throws<KasanException>(() => sys.Kernel.ReadBytes(va, new byte[65]));
        Assert.Equal(2, kasan.Reports.Count);
        Assert.All(kasan.Reports, r => Assert.Equal("slab-out-of-bounds", r.Type));
        Assert.Equal((nuint)(p + 72), kasan.Reports[0].Address);
        Assert.Equal((nuint)(p + 64), kasan.Reports[1].Address);
        // The same bug again is not reported again, unless multi-shot.
        Assert.Throws<KasanException>(() => sys.Kernel.ReadBytes(va, new byte[65]));
        Assert.Equal(2, kasan.Reports.Count);
        kasan.MultiShot = true;
        Assert.Throws<KasanException>(() => sys.Kernel.ReadBytes(va, new byte[65]));
        Assert.Equal(3, kasan.Reports.Count);
        sys.Slab.Kfree(p);
    }

    [Fact]
    public void CopyToUserPastTheObjectIsReportedAndCopiesNothing()
    {
        using var sys = KasanSlabTests.NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        const int Size = 128 - 8; // kasan_test's copy_user_test_oob
        byte* kmem = (byte*)sys.Slab.Kmalloc(Size);
        new Span<byte>(kmem, Size).Fill(0x5a);
        using var mm = sys.CreateAddressSpace();
        ulong user = mm.Mmap(0x2000_0000, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed);
        Assert.Equal(0, mm.CopyToUser(user, new ReadOnlySpan<byte>(kmem, Size)));
        Assert.Throws<KasanException>(() => mm.CopyToUser(user, new ReadOnlySpan<byte>(kmem, Size + 1)));
        KasanSlabTests.Single(kasan, "slab-out-of-bounds", kmem + Size, Size + 1, write: false);
        Assert.Contains("in copy_to_user", kasan.Reports[0].Text, StringComparison.Ordinal);
        Assert.Throws<KasanException>(() => mm.CopyFromUser(new Span<byte>(kmem, Size + 1), user));
        Assert.Equal(2, kasan.Reports.Count);
        Assert.True(kasan.Reports[1].IsWrite);
        // User pages are whole pages: reading them back through the process is fine.
        Assert.Equal(0x5a, mm.Read<byte>(user + Size - 1));
        Assert.Equal(2, kasan.Reports.Count);
        sys.Slab.Kfree(kmem);
    }

    [Fact]
    public void VmallocOutOfBoundsInTheLastPageAndTheGuardPageAreReported()
    {
        using var sys = KasanSlabTests.NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        const ulong Size = 4096 + 100;
        ulong va = sys.Vmalloc.Vmalloc(Size);
        for (ulong i = 0; i < Size; i += 4) sys.Kernel.Write<int>(va + i, 1);
        Assert.Empty(kasan.Reports);
        Assert.Throws<KasanException>(() => sys.Kernel.Read<byte>(va + Size));
        KasanSlabTests.Single(kasan, "vmalloc-out-of-bounds", sys.Kernel.Translate(va + Size, MemoryAccess.Read), 1, write: false);
        // The guard page: nothing is mapped there, the fault is reported and oopses as before.
        Assert.Throws<KernelOopsException>(() => sys.Kernel.Write<byte>(va + 2 * 4096, 1));
        KasanReport guard = kasan.Reports[^1];
        Assert.Equal("vmalloc-out-of-bounds", guard.Type);
        Assert.Equal((nuint)(va + 2 * 4096), guard.Address);
        Assert.True(guard.IsWrite);
        sys.Vmalloc.Vfree(va);
    }
}

/// <summary>KASAN on the views the library hands out.</summary>
public sealed unsafe class KasanViewTests
{
    [Fact]
    public void ASlabMemoryOwnersViewOfMemoryFreedBehindItsBackIsAUseAfterFree()
    {
        using var sys = KasanSlabTests.NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        var owner = Allocators.Managed.SlabAllocatorExtensions.RentMemory(sys.Slab, 100);
        owner.Span.Fill(1);
        Assert.Empty(kasan.Reports);
        fixed (byte* p = owner.Span) sys.Slab.Kfree(p); // the bug: freed without the owner
        Assert.Throws<KasanException>(() => owner.GetSpan());
        Assert.Equal("slab-use-after-free", Assert.Single(kasan.Reports).Type);
    }
}
