using System.Text;

namespace Allocators.Mmu;

/// <summary>Formats a kernel oops for an unhandled page fault the way the x86 kernel prints it (page_fault_oops).</summary>
internal static class OopsReport
{
    public static string Build(VirtualAddressSpace space, ulong va, PageFaultErrorCode error, int oopsNumber, int pid, string comm)
    {
        var sb = new StringBuilder();
        if (va < VirtualAddress.PageSize)
            sb.Append("BUG: kernel NULL pointer dereference, address: ").Append(va.ToString("x16")).Append('\n');
        else
            sb.Append("BUG: unable to handle page fault for address: ").Append(va.ToString("x16")).Append('\n');
        string who = (error & PageFaultErrorCode.User) != 0 ? "user" : "supervisor";
        string what = (error & PageFaultErrorCode.InstructionFetch) != 0 ? "instruction fetch"
            : (error & PageFaultErrorCode.Write) != 0 ? "write access" : "read access";
        sb.Append("#PF: ").Append(who).Append(' ').Append(what).Append(" in kernel mode\n");
        string why = (error & PageFaultErrorCode.Protection) == 0 ? "not-present page"
            : (error & PageFaultErrorCode.ReservedBit) != 0 ? "reserved bit violation"
            : (error & PageFaultErrorCode.ProtectionKey) != 0 ? "protection keys violation"
            : "permissions violation";
        sb.Append("#PF: error_code(0x").Append(((uint)error).ToString("x4")).Append(") - ").Append(why).Append('\n');
        sb.Append(space.DumpPageTable(va)).Append('\n');
        sb.Append("Oops: ").Append(((uint)error).ToString("x4")).Append(" [#").Append(oopsNumber).Append("] SMP NOPTI\n");
        int cpu = Thread.GetCurrentProcessorId();
        sb.Append("CPU: ").Append(cpu).Append(" UID: 0 PID: ").Append(pid).Append(" Comm: ")
          .Append(comm.Length > 20 ? comm[..20] : comm).Append('\n');
        return sb.ToString();
    }
}
