using System.Globalization;
using System.Runtime.InteropServices;

namespace PhrFhir.Bench;

/// <summary>What the bench reads from Linux /proc: memory, CPU time, the PostgreSQL processes, load.</summary>
public static class ProcFs
{
    const int ScClkTck = 2; // _SC_CLK_TCK on Linux

    [DllImport("libc")]
    static extern long sysconf(int name);

    static readonly double TicksPerSecond = TryClockTicks();

    static double TryClockTicks()
    {
        try { return sysconf(ScClkTck) is > 0 and var t ? t : 100; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return 100; }
    }

    /// <summary>A "kB" field of /proc/PID/status (VmHWM = peak RSS, VmRSS = current), in bytes.</summary>
    public static long? StatusBytes(int pid, string field)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith(field + ":", StringComparison.Ordinal))
                    return KiloBytes(line) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>Whether the process ignores <paramref name="signal"/> (the SigIgn mask of /proc/PID/status).</summary>
    public static bool IgnoresSignal(int pid, int signal)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
            return line is not null
                   && (ulong.Parse(line["SigIgn:".Length..].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture) & (1UL << (signal - 1))) != 0;
        }
        catch (IOException) { return false; }
    }

    /// <summary>Proportional set size (shared pages split between sharers), so PostgreSQL's shared buffers count once.</summary>
    public static long PssBytes(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/smaps_rollup"))
                if (line.StartsWith("Pss:", StringComparison.Ordinal))
                    return KiloBytes(line) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return 0;
    }

    static long KiloBytes(string line) =>
        long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    public static string? CommandLine(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' '); }
        catch (IOException) { return null; }
    }

    /// <summary>CPU seconds used by the process (user + system), optionally with its reaped children.</summary>
    public static double CpuSeconds(int pid, bool withReapedChildren = false)
    {
        var f = StatFields(pid);
        if (f is null) return 0;
        // Fields after "(comm)": [0]=state [1]=ppid … [11]=utime [12]=stime [13]=cutime [14]=cstime
        var ticks = long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture);
        if (withReapedChildren)
            ticks += long.Parse(f[13], CultureInfo.InvariantCulture) + long.Parse(f[14], CultureInfo.InvariantCulture);
        return ticks / TicksPerSecond;
    }

    static string[]? StatFields(int pid)
    {
        try
        {
            var s = File.ReadAllText($"/proc/{pid}/stat");
            return s[(s.LastIndexOf(')') + 2)..].Split(' ');
        }
        catch (IOException) { return null; }
    }

    /// <summary>The postmaster of the cluster in <paramref name="dataDirectory"/> (first line of postmaster.pid) and its children.</summary>
    public static List<int> PostgresPids(string dataDirectory)
    {
        var pids = new List<int>();
        try
        {
            var first = File.ReadLines(Path.Combine(dataDirectory, "postmaster.pid")).First();
            if (!int.TryParse(first, NumberStyles.None, CultureInfo.InvariantCulture, out var postmaster)) return pids;
            pids.Add(postmaster);
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
                if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                    && StatFields(pid) is { } f && f[1] == postmaster.ToString(CultureInfo.InvariantCulture))
                    pids.Add(pid);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return pids;
    }

    /// <summary>CPU seconds of the whole cluster: backends alive now, plus what the postmaster has reaped.</summary>
    public static double PostgresCpuSeconds(string dataDirectory)
    {
        var pids = PostgresPids(dataDirectory);
        return pids.Select((p, i) => CpuSeconds(p, withReapedChildren: i == 0)).Sum();
    }

    /// <summary>Busy and total jiffies of all CPUs (first line of /proc/stat; idle and iowait are not busy).</summary>
    public static (long Busy, long Total) MachineCpu()
    {
        var f = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Take(8).Select(v => long.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        var total = f.Sum();
        return (total - f[3] - f[4], total);
    }

    /// <summary>The three load averages exactly as uptime(1) prints them (it reads this file).</summary>
    public static string LoadAverages()
    {
        var parts = File.ReadAllText("/proc/loadavg").Split(' ');
        return $"{parts[0]}, {parts[1]}, {parts[2]}";
    }
}
