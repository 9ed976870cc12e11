using System.Diagnostics;

namespace PhrFhir.MhdBench;

/// <summary>
/// Where the repository is and which commit is measured: the first lines every bench prints. Linked by the
/// other bench projects that start the server through <see cref="ServerProcess"/> (Iti67Bench, MatchBench).
/// </summary>
static class Repository
{
    /// <summary>The folder holding PhrFhir.sln, looked for above the working directory, then above the bench's binaries.</summary>
    public static string Root()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "PhrFhir.sln"))) return dir.FullName;
        throw new InvalidOperationException("run from inside the repository (PhrFhir.sln not found)");
    }

    /// <summary>"commit abc1234 (working tree has changes), date": what a figure was measured on.</summary>
    public static string CommitLine() =>
        $"commit {Git("rev-parse --short HEAD")}{(Git("status --porcelain --untracked-files=no").Length > 0 ? " (working tree has changes)" : "")}, {DateTimeOffset.Now:yyyy-MM-dd HH:mm:ss zzz}";

    static string Git(string arguments)
    {
        try
        {
            var psi = new ProcessStartInfo("git", arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            var output = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return output;
        }
        catch (System.ComponentModel.Win32Exception) { return "?"; }
    }
}
